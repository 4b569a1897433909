"""Head view and model view: ours against bertviz on the same captured attention, in one run.

For 64/128/256/512 tokens of the embedded model (all-MiniLM-L6-v2, 6 layers x 12 heads) it
measures the server-side build time and the bytes that would reach the browser:

- ours, head view: ``build_head_view`` for one layer (what the head view page sends) and for
  all layers (the standalone "HTML (all layers)" export);
- ours, model view: the mosaic figure serialised as Streamlit does (``to_json``), and the whole
  page (mosaic + the opened head's heatmap);
- bertviz ``head_view`` and ``model_view`` with ``html_action="return"``;
- optionally (``--browser``) the time Chromium takes to load and draw our head view HTML.

Run: ``.venv/bin/python benchmarks/views.py`` (needs ``pip install -r requirements-bench.txt``
for bertviz; ``--no-bertviz`` skips it). Prints a markdown table; ``--out`` also saves it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from viz.figures.attention import heatmap_figure  # noqa: E402
from viz.capture import capture  # noqa: E402
from viz.views.head_view import build_head_view  # noqa: E402
from viz.models import load_model  # noqa: E402
from viz.figures.model_view import model_view_figure  # noqa: E402

CORPUS = ROOT / "viz" / "data" / "sample_corpus.txt"


def text_with_tokens(loaded, words: list[str], n_tokens: int) -> str:
    """The longest prefix of ``words`` that the model reads as at most ``n_tokens`` tokens
    (at the model's limit: the whole text, which capture truncates to exactly the limit)."""
    if n_tokens >= loaded.info.max_length:
        return " ".join(words)
    def count(k: int) -> int:
        return len(loaded.tokenizer(" ".join(words[:k]))["input_ids"])
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def timed(fn, repeat: int = 3):
    """(median seconds, last result) over ``repeat`` calls."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def chromium_draw_seconds(pages: list[str]) -> list[float | None]:
    """Per head view HTML: seconds from navigation to its first painted lines, headless Chromium.

    One browser for all pages, warmed up on the first page once (a person's browser has its
    fonts and code caches warm too).
    """
    try:
        from playwright.sync_api import sync_playwright
        sys.path.insert(0, str(ROOT / "tests"))
        from browser import CHROMIUM_ARGS, chromium_path
    except ImportError:
        return [None] * len(pages)
    path = chromium_path()
    if path is None:
        return [None] * len(pages)
    out = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        for i, html in enumerate([pages[0], *pages]):
            file = Path(tmp) / f"view{i}.html"
            file.write_text(html, encoding="utf-8")
            page.goto("about:blank")
            t0 = time.perf_counter()
            page.goto(file.as_uri())
            page.wait_for_selector("#hv[data-ready='1']")
            # two animation frames: the canvas has been painted, not just scheduled
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            out.append(time.perf_counter() - t0)
        browser.close()
    return out[1:]


def mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.2f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:,.0f} kB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--layer", type=int, default=2, help="the layer the one-layer head view sends")
    ap.add_argument("--no-bertviz", action="store_true")
    ap.add_argument("--browser", action="store_true", help="also time Chromium drawing our head view")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args(argv)

    loaded = load_model(None)
    words = CORPUS.read_text(encoding="utf-8").split()
    bertviz = None
    if not args.no_bertviz:
        try:
            import bertviz  # noqa: F401 - benchmark-only dependency (requirements-bench.txt)
            import torch
        except ImportError:
            print("bertviz is not installed: pip install -r requirements-bench.txt", file=sys.stderr)
            return 2

    rows, views = [], []
    for n in args.sizes:
        result = capture(text_with_tokens(loaded, words, n), model=loaded)
        block = result.block()
        n_tok = len(block.queries)
        layer = min(args.layer, block.n_layers - 1)
        row = {"tokens": n_tok}

        t, view = timed(lambda: build_head_view(block, layers=layer))
        row["ours head view (1 layer)"] = (t, len(view.html.encode()))
        t, view_all = timed(lambda: build_head_view(block, layers=list(range(block.n_layers))), repeat=1)
        row["ours head view (all layers, export)"] = (t, len(view_all.html.encode()))
        t, mosaic_json = timed(lambda: model_view_figure(block, gamma=0.5, selected=(layer, 0)).to_json())
        row["ours model view (mosaic)"] = (t, len(mosaic_json.encode()))

        def page_figures():
            big = heatmap_figure(block.pattern[layer, 0], block.queries.labels, block.keys.labels)
            return mosaic_json, big.to_json()
        t_big, (_, big_json) = timed(page_figures, repeat=1)
        row["ours model view page (mosaic + opened head)"] = (row["ours model view (mosaic)"][0] + t_big,
                                                              len(mosaic_json.encode()) + len(big_json.encode()))
        if args.browser:
            views.append(view.html)

        if not args.no_bertviz:
            from bertviz import head_view, model_view
            attention = tuple(torch.from_numpy(block.pattern[i][None].copy()) for i in range(block.n_layers))
            tokens = list(block.queries.tokens)
            t, html = timed(lambda: head_view(attention, tokens, html_action="return").data, repeat=1)
            row["bertviz head_view"] = (t, len(html.encode()))
            del html
            t, html = timed(lambda: model_view(attention, tokens, html_action="return").data, repeat=1)
            row["bertviz model_view"] = (t, len(html.encode()))
            del html
        rows.append(row)
        print(f"{n_tok} tokens done", file=sys.stderr, flush=True)

    if args.browser:
        for row, seconds in zip(rows, chromium_draw_seconds(views)):
            row["chromium draw"] = seconds
    table = render(rows, browser=args.browser)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


def render(rows: list[dict], *, browser: bool) -> str:
    names = [k for k in rows[0] if k not in ("tokens", "chromium draw")]
    lines = ["Build time (server side) and bytes sent to the browser; embedded all-MiniLM-L6-v2 "
             "(6 layers x 12 heads), same captured attention for every tool.", "",
             "| view | " + " | ".join(f"{r['tokens']} tokens" for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for name in names:
        cells = [f"{r[name][0]:.2f} s, {mb(r[name][1])}" if name in r else "n/a" for r in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if browser:
        cells = [f"{r['chromium draw']:.2f} s" if r.get("chromium draw") is not None else "n/a" for r in rows]
        lines.append("| ours head view (1 layer): Chromium load + first draw | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

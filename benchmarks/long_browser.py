"""Long inputs through the app in Chromium (issue 16): every page at 512 / 1,024 / 2,048 tokens.

    .venv/bin/python benchmarks/long_browser.py [--tokens 2048] [--model embedded-llm] [--shots /tmp/long_shots]

Starts ``streamlit run app.py`` and, per length, opens each page in one Chromium tab with the text in
the URL (``?model=...&text=...``), the way a shared link opens.  The first page (home) captures; every
later page should find that result in the cache.  Per page:

- seconds from navigation until the script has finished, no spinner is left and every plotly chart and
  canvas view on the page has drawn (the server's work plus the drawing, as a person waits for it);
- bytes that reached the browser for that page: websocket frames received plus HTTP responses (the
  first plotly page also fetches plotly's ~4.7 MB script once; the websocket bytes are the page's own);
- the server's RSS after the page (and its peak, sampled every 0.25 s), against its RSS with the model
  loaded before the long text's capture (a short text is opened first);
- a screenshot per page (``--shots``), to look at;
- anything the page showed as an error (``stException`` / ``stAlert`` error boxes).

The bare forward pass of the same text (``viz.capture.run_bare_forward``, in this process, after the
server has stopped) gives the ratio to read on a shared machine.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import text_of  # noqa: E402
from load import READY, NO_SPINNER, RssSampler, Server, loadavg  # noqa: E402

PAGES = ["home", "heatmap", "head_view", "model_view", "compare_heads", "attention_flow",
         "efficient_attention", "attention_math", "predictions", "generate", "ablation"]

# Every plotly chart has its traces (and heatmap images), every canvas heatmap has drawn.
DRAWN = """() => {
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  const plotsDone = plots.every(el => el.querySelector('g.hm, g.trace, g.scatterlayer') &&
      Array.from(el.querySelectorAll('g.hm')).every(hm => hm.querySelector('image')));
  const canvases = Array.from(document.querySelectorAll('#hm'));
  return plotsDone && canvases.every(c => c.dataset.drawn === '1');
}"""
ERRORS = """() => Array.from(document.querySelectorAll("[data-testid='stException'], [data-testid='stAlertContentError']"))
  .map(e => e.innerText.slice(0, 300))"""


async def visit(page, url: str, timeout_s: float) -> dict:
    received = {"ws": 0, "http": 0}

    def on_ws(ws):
        ws.on("framereceived", lambda payload: received.__setitem__("ws", received["ws"] + len(payload)))

    async def on_response(response):
        try:
            received["http"] += len(await response.body())
        except Exception:  # noqa: BLE001 - redirects and aborted bodies have none
            pass

    page.on("websocket", on_ws)
    page.on("response", lambda r: asyncio.ensure_future(on_response(r)))
    start = time.perf_counter()
    await page.goto(url, timeout=timeout_s * 1000)
    await page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']",
                                 timeout=timeout_s * 1000)
    await page.wait_for_timeout(300)
    await page.wait_for_selector(READY, timeout=timeout_s * 1000)
    await page.wait_for_function(NO_SPINNER, timeout=timeout_s * 1000)
    await page.wait_for_function(DRAWN, timeout=timeout_s * 1000)
    seconds = time.perf_counter() - start
    await page.wait_for_timeout(200)
    errors = await page.evaluate(ERRORS)
    page.remove_listener("websocket", on_ws)
    return dict(seconds=seconds, mb=(received["ws"] + received["http"]) / 1e6, ws_mb=received["ws"] / 1e6,
                errors=errors)


async def run(server: Server, texts: dict[int, str], model: str, shots: Path | None, timeout_s: float,
              pages: list[str]) -> list[dict]:
    from playwright.async_api import async_playwright
    rows = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for n, text in texts.items():
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await context.new_page()
            # The model loaded and the page's code cached first, so the figures are the long text's.
            await visit(page, f"{server.url}/home?{urllib.parse.urlencode({'model': model, 'text': 'warm up'})}",
                        timeout_s)
            base_rss = server.rss_mb()
            for name in pages:
                query = urllib.parse.urlencode({"model": model, "text": text})
                with RssSampler(server) as rss:
                    try:
                        row = await visit(page, f"{server.url}/{name}?{query}", timeout_s)
                    except Exception as exc:  # noqa: BLE001 - a page that times out is a row, not the end
                        row = dict(seconds=float("nan"), mb=float("nan"), ws_mb=float("nan"), errors=[f"{type(exc).__name__}: {exc}"[:200]])
                row.update(tokens=n, page=name, rss_mb=server.rss_mb() - base_rss,
                           peak_mb=max(rss.samples, default=float("nan")) - base_rss)
                if shots:
                    shots.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(shots / f"{n}_{name}.png"), full_page=False)
                print(row, flush=True)
                rows.append(row)
            await context.close()
        await browser.close()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, nargs="+", default=[2048])
    ap.add_argument("--model", default="embedded-llm")
    ap.add_argument("--shots", type=Path, default=Path("/tmp/long_shots"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--pages", nargs="+", default=PAGES, choices=PAGES)
    ap.add_argument("--no-bare", action="store_true", help="skip the bare forward pass")
    args = ap.parse_args(argv)

    from viz.models import load_model
    loaded = load_model(args.model)
    texts = {n: text_of(n, loaded) for n in args.tokens}
    print(f"load average before: {loadavg()}", flush=True)
    server = Server("app.py").start()
    try:
        rows = asyncio.run(run(server, texts, args.model, args.shots, args.timeout, args.pages))
    finally:
        server.stop()
    bare = {}
    if not args.no_bare:
        from viz.capture import run_bare_forward
        run_bare_forward(loaded, "warm up")
        for n, text in texts.items():
            start = time.perf_counter()
            run_bare_forward(loaded, text)
            bare[n] = time.perf_counter() - start
    print(f"\nload average after: {loadavg()}\n")
    print("| tokens | page | seconds to drawn | MB to the browser (websocket) | server RSS after (MB over start) "
          "| peak | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokens']} | {r['page']} | {r['seconds']:.1f} | {r['mb']:.2f} ({r['ws_mb']:.2f}) | {r['rss_mb']:.0f} "
              f"| {r['peak_mb']:.0f} | {'; '.join(r['errors'])[:160]} |")
    for n, s in bare.items():
        print(f"\nbare forward pass at {n} tokens (this process, after the server stopped): {s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Page-side compute time of the efficient-attention lab at 512 tokens (embedded model).

Measures what pages/efficient_attention.py computes after the capture:
every pattern on one head (each pattern alone and all together), the all-heads
summary of one layer, the layers x heads summary, the figure builds (and how
many bytes of JSON they send), the cost model, and the bounded torch
micro-benchmark.  The capture with internals is timed too, for context.

Run: .venv/bin/python benchmarks/efficient.py [--repeat 5] [--tokens 512]
Prints a markdown table and writes it to benchmarks/efficient_results.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from viz import efficient as ef  # noqa: E402
from viz.figures import efficient as eff  # noqa: E402
from viz.capture import capture  # noqa: E402
from viz.models import load_model  # noqa: E402
from common import text_of  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, object]:
    out = fn()                                        # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--head", type=int, default=3)
    args = ap.parse_args()

    loaded = load_model(None)
    text = text_of(args.tokens, loaded)
    rows: list[tuple[str, float, str]] = []

    t_cap, result = timed(lambda: capture(text, model=loaded, internals=[("encoder", args.layer)]),
                          max(1, args.repeat // 2))
    n = len(result.tokens)
    rows.append((f"capture with internals of one layer ({n} tokens; context, not lab compute)", t_cap, ""))
    li = result.internals[("encoder", args.layer)]
    block = result.block()
    glob = ef.default_globals(block.queries)
    config = ef.PatternConfig(global_queries=glob, global_keys=glob)
    head = ef.HeadInput.from_internals(li, args.head)
    static = ef.static_masks(li.mask, config, causal=False)

    t, _ = timed(lambda: ef.static_masks(li.mask, config, causal=False), args.repeat)
    rows.append(("head-independent masks (window, dilated, Longformer, BigBird, block)", t, ""))
    for name in ef.PATTERNS:
        t, (a,) = timed(lambda: ef.approximate_head(head, config=config, patterns=(name,), static=static),
                        args.repeat)
        rows.append((f"one head: {ef.METHOD_INFO[name].title}", t,
                     f"output error {a.output_error:.3f}, TV {a.tv:.3f}"))
    t_head, approx = timed(lambda: ef.approximate_head(head, config=config), args.repeat)
    rows.append(("**one head, all patterns (page section 1)**", t_head, ""))
    t_layer, _ = timed(lambda: ef.layer_metrics(li, config=config), max(1, args.repeat // 2))
    rows.append((f"**all {li.scores.shape[0]} heads of one layer, all patterns (all-heads summary)**", t_layer, ""))
    t_sum, summary = timed(lambda: ef.head_summary(block.pattern, config=config, causal=False), args.repeat)
    rows.append(("**layers x heads summary (6 x 12)**", t_sum, ""))

    labels = block.queries.labels
    figs = {
        "pattern grid": lambda: eff.pattern_grid_figure(approx, labels, labels),
        "mask grid": lambda: eff.pattern_grid_figure(approx, labels, labels, show="mask"),
        "detail (pooled to 256)": lambda: eff.detail_figure(approx[0].pattern, approx[1], labels, labels,
                                                            max_cells=256),
        "layers x heads figure": lambda: eff.head_summary_figure(summary),
        "cost model + chart": lambda: eff.cost_figure(ef.cost_model(config=config), mark_length=n),
    }
    total_bytes = 0
    for name, build in figs.items():
        t, fig = timed(build, args.repeat)
        size = len(fig.to_json())
        total_bytes += size
        rows.append((f"figure: {name}", t, f"{size / 1024:.0f} KB JSON"))
    rows.append(("all figures: bytes sent to the browser", 0.0, f"{total_bytes / 1024:.0f} KB"))

    from viz import costbench
    t0 = time.perf_counter()
    bench = costbench.run()
    t_bench = time.perf_counter() - t0
    rows.append(("torch micro-benchmark (first call; cached afterwards)", t_bench,
                 f"budget {bench.budget_s:.1f} s, skipped {list(bench.skipped)}"))
    t0 = time.perf_counter()
    costbench.run()
    rows.append(("torch micro-benchmark (cached)", time.perf_counter() - t0, ""))

    lines = [
        "# Efficient-attention lab: page-side compute at 512 tokens",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; embedded model (6 layers x 12 heads), "
        f"{n} tokens, layer {args.layer}, head {args.head}; median of {args.repeat} runs after a warm-up. "
        "The machine was shared with other jobs while measuring: treat small differences as noise.",
        "",
        "| step | seconds | note |",
        "|---|---:|---|",
        *[f"| {name} | {secs:.4f} | {note} |" for name, secs, note in rows],
        "",
        "Micro-benchmark rows (torch, one head, d=64, 1 thread):",
        "",
        "| tokens | full ms | window ms |",
        "|---:|---:|---:|",
        *[f"| {r.length} | {'' if r.full_ms is None else f'{r.full_ms:.2f}'} | "
          f"{'' if r.window_ms is None else f'{r.window_ms:.2f}'} |" for r in bench.rows],
        "",
        "The page caches the one-head and all-heads results per (input, layer, head, settings) in "
        "st.cache_resource, so only the first view of a head pays these costs.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    (ROOT / "benchmarks" / "efficient_results.md").write_text(report)


if __name__ == "__main__":
    main()

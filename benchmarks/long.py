"""Long inputs on the embedded LLM (issue 16): capture vs bare forward, memory, and each page's server work.

    .venv/bin/python benchmarks/long.py [--tokens 512 1024 2048] [--repeat 1]

For each length: the bare forward pass (viz.capture.run_bare_forward) and the capture, interleaved
in the same run (read the ratio: the machine is shared); server RSS before and after (from /proc);
the result's bytes (viz.cache.nbytes) against the L x H x T^2 float32 it replaces; the server work and
the bytes each page's main view builds (heatmap canvas, head view, model view, head metrics, one
layer recomputed); and bertviz's head-view payload extrapolated from the measured 55 MB at 130 tokens
on a 6 x 12 model (it grows with L x H x T^2).  Chromium draw times are not measured here.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import rss_mb  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BERTVIZ_130 = 55e6          # bytes of bertviz head_view HTML at 130 tokens, 6 layers x 12 heads (DESIGN.md)



def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    import numpy as np

    from viz import stats
    from viz.cache import nbytes
    from viz.capture import capture, run_bare_forward
    from viz.figures.model_view import model_view_figure
    from viz.models import load_model
    from viz.views import head_view
    from viz.views.heatmap import build_heatmap

    loaded = load_model("embedded-llm")
    info = loaded.info
    source = (ROOT / "README.md").read_text() + (ROOT / "DESIGN.md").read_text() if (ROOT / "DESIGN.md").exists() \
        else (ROOT / "README.md").read_text()
    ids = loaded.tokenizer(source * 4)["input_ids"]
    run_bare_forward(loaded, "warm up")
    rows = []
    for n in args.tokens:
        text = loaded.tokenizer.decode(ids[:n])
        for _ in range(args.repeat):
            gc.collect()
            _, bare = timed(lambda: run_bare_forward(loaded, text))
            before = rss_mb()
            result, cap = timed(lambda: capture(text, model=loaded))
            after = rss_mb()
            block = result.block()
            t = len(block.queries)
            full = info.n_layers * info.n_heads * t * t * 4
            labels = list(block.queries.labels)
            layer, head = info.n_layers // 2, 3
            one, t_layer = timed(lambda: block.pattern[layer])
            one_head, t_head = timed(lambda: block.pattern[layer, head])
            view, t_heat = timed(lambda: build_heatmap(one_head, labels, labels, causal=True, title="bench"))
            hv, t_hv = timed(lambda: head_view.build_head_view(block, layers=layer, heads=None, top_mass=0.9,
                                                               title="bench"))
            fig, t_mv = timed(lambda: model_view_figure(block, normalize="head", gamma=0.5))
            mv_bytes = len(fig.to_json())
            _, t_stats = timed(lambda: stats.head_metrics(block))
            peak = rss_mb()
            bertviz = BERTVIZ_130 * (info.n_layers * info.n_heads / 72) * (t / 130) ** 2
            rows.append(dict(tokens=t, bare_s=bare, capture_s=cap, ratio=cap / bare, result_mb=nbytes(result) / 1e6,
                             full_mb=full / 1e6, rss_capture_mb=after - before, rss_viewing_mb=peak - before,
                             layer_s=t_layer, head_s=t_head, heatmap_s=t_heat,
                             heatmap_mb=len(view.fragment.encode()) / 1e6, head_view_s=t_hv,
                             head_view_mb=len(hv.html.encode()) / 1e6, head_view_edges=f"{hv.n_edges}/{hv.n_possible}",
                             model_view_s=t_mv, model_view_mb=mv_bytes / 1e6, stats_s=t_stats,
                             bertviz_mb=bertviz / 1e6,
                             max_error=getattr(block.pattern, "max_error", float("nan"))))
            print(rows[-1], flush=True)
            del result, block, one, one_head, view, hv, fig
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    _ = np


if __name__ == "__main__":
    main()

"""Picking a layer on the math, flow and efficient pages: what one layer's internals cost.

Before (the old `get_internals`): a second full capture with that layer recorded, kept in the result
cache next to the first (every layer's attention again). After (`viz.capture.capture_layer`, behind
`viz.ui.compute.layer_internals`): only that layer is recorded and the forward pass stops after it.
Measured per layer pick: wall time, attention layers run, bytes kept, and RSS growth.

    .venv/bin/python benchmarks/internals.py [--tokens 512] [--repeat 3]
"""
from __future__ import annotations

import argparse
import gc
import time

from common import rss_mb, text_of

from viz import attention_fn
from viz.cache import nbytes
from viz.capture import capture, capture_layer
from viz.models import load_model



def counting_attention_calls():
    calls = []
    real = attention_fn.viz_attention

    def counted(module, *args, **kwargs):
        calls.append(1)
        return real(module, *args, **kwargs)
    attention_fn.AttentionInterface._global_mapping[attention_fn.NAME] = counted
    return calls, lambda: attention_fn.AttentionInterface._global_mapping.__setitem__(attention_fn.NAME, real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    loaded = load_model()
    text = text_of(args.tokens, loaded)
    result = capture(text, model=loaded)
    n = result.model.n_layers
    print(f"{len(result.tokens)} tokens, {n} layers; the page's result: {nbytes(result) / 1e6:.1f} MB")
    print("| route | layer | time (best of %d) | attention layers run | bytes kept | RSS growth |" % args.repeat)
    print("|---|---|---|---|---|---|")
    for layer in (0, n // 2, n - 1):
        for name, run in (("full capture with internals (before)",
                           lambda: capture(text, model=loaded, internals=[("encoder", layer)])),
                          ("capture_layer (after)", lambda: capture_layer(text, model=loaded,
                                                                          site=("encoder", layer)))):
            times = []
            for _ in range(args.repeat):
                gc.collect()
                start = time.perf_counter()
                kept = run()
                times.append(time.perf_counter() - start)
                del kept
            gc.collect()
            before = rss_mb()
            calls, restore = counting_attention_calls()
            kept = run()
            restore()
            grew = rss_mb() - before
            print(f"| {name} | {layer} | {min(times):.3f} s | {len(calls)} of {n} | {nbytes(kept) / 1e6:.1f} MB | "
                  f"{grew:+.0f} MB |")
            del kept


if __name__ == "__main__":
    main()

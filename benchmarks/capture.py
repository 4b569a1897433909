"""Capture time vs bare forward time on the embedded model at 32/128/512 tokens.

capture = tokenize + forward with attention weights + numpy result object.
bare    = tokenize + forward without asking for attention (same model, same
          attention implementation), i.e. what any use of the model costs.
Usage: python benchmarks/capture.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viz.capture import capture, run_bare_forward  # noqa: E402
from viz.models import load_model  # noqa: E402
from common import text_of  # noqa: E402


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    loaded = load_model(None)
    print("| tokens | bare forward (s) | capture (s) | ratio |")
    print("|---|---|---|---|")
    for n in (32, 128, 512):
        text = text_of(n, loaded)
        bare = median_time(lambda: run_bare_forward(loaded, text), args.repeat)
        cap = median_time(lambda: capture(text, model=loaded), args.repeat)
        print(f"| {len(capture(text, model=loaded).tokens)} | {bare:.4f} | {cap:.4f} | {cap / bare:.2f}x |")


if __name__ == "__main__":
    main()

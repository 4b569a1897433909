"""Head ablation timings on the embedded LLM (SmolLM2-135M, 30 x 9 heads) and MiniLM (6 x 12 heads).

Per model and length (32 and 128 tokens):
  one ablation      decoder_effect / encoder_effect with 2 heads out (a clean and an ablated pass)
  gradient          gradient_importance (one forward + one backward; MiniLM: 32 probe rows)
  all heads batched ablation_importance, default: fan-out (rows join the batch at their layer),
                    passes of whole layers up to ~256 MB of activations (72 rows at 32 tokens)
  one layer a pass  ablation_importance(rows_per_pass=n_heads): fan-out, one layer's heads per pass
  no fan-out        ablation_importance(fanout=False, rows_per_pass=27): the input repeated, 27 rows,
                    every row through every layer
  one at a time     ablation_importance(rows_per_pass=1): one forward pass per head
plus the 1-minute load average, so a reader can tell how busy the shared machine was.

Usage: python benchmarks/ablation.py [--lengths 32 128] [--repeat 3] [--models embedded-llm embedded]
       [--skip-one-at-a-time-above 64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import text_of

from viz import ablation
from viz.ablation_result import spearman
from viz.models import EMBEDDED, EMBEDDED_LLM, load_model

CPU: list[float] = []   # process CPU seconds of the last timed() call, median over its runs


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall seconds over ``repeat`` runs (at least one) and the last result.

    The process CPU time of the same runs goes to CPU[-1]: on a busy shared machine the wall time
    mostly measures the neighbours, the CPU time what the work itself costs.
    """
    times, cpu, result = [], [], None
    for _ in range(max(1, repeat)):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    CPU.append(statistics.median(cpu))
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--models", nargs="+", default=[EMBEDDED_LLM, EMBEDDED])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own, 2 here)")
    ap.add_argument("--skip-one-at-a-time-above", type=int, default=10_000,
                    help="skip the one-at-a-time baseline above this many tokens (it is the slow one)")
    args = ap.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores; other engineers' jobs included)")
    print("Wall seconds, with process CPU seconds in brackets.\n")
    print("| model | tokens | one ablation | gradient | all heads batched | one layer a pass "
          "| no fan-out | one at a time | speed-up (wall / CPU) | Spearman(gradient, ablation) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        loaded = load_model(name)
        for n in args.lengths:
            _row(args, name, loaded, n)


def _row(args, name: str, loaded, n: int) -> None:
    """One table row: every timing for one model at one length."""
    n_heads = loaded.info.n_layers * loaded.info.n_heads
    text = text_of(n, loaded)
    ablation.effect(text, [(0, 0)], model=loaded)   # warm-up: first-call allocations, hook install

    def importance(**kw):
        return ablation.ablation_importance(text, model=loaded, **kw)

    def cell(seconds: float) -> str:
        return f"{seconds:.2f} ({CPU[-1]:.2f})"

    one = cell(timed(lambda: ablation.effect(text, [(1, 2), (3, 4)], model=loaded), args.repeat)[0])
    grad_s, grad = timed(lambda: ablation.gradient_importance(text, model=loaded), args.repeat)
    grad_cell = cell(grad_s)
    batched_s, batched = timed(importance, args.repeat)
    batched_cell, batched_cpu = cell(batched_s), CPU[-1]
    per_layer = cell(timed(lambda: importance(rows_per_pass=loaded.info.n_heads), 1)[0])
    repeated = cell(timed(lambda: importance(fanout=False, rows_per_pass=27), 1)[0])
    if n <= args.skip_one_at_a_time_above:
        single_s, single = timed(lambda: importance(rows_per_pass=1), 1)
        single_cell = cell(single_s)
        speedup = f"{single_s / batched_s:.1f}x / {CPU[-1] / batched_cpu:.1f}x"
        assert abs(single.importance - batched.importance).max() < 1e-5
    else:
        single_cell, speedup = "-", "-"
    print(f"| {name} ({n_heads} heads) | {len(grad.tokens)} | {one} | {grad_cell} | {batched_cell} | {per_layer} "
          f"| {repeated} | {single_cell} | {speedup} | {spearman(grad, batched):.2f} "
          f"| {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()

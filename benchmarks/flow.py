"""Benchmark rollout, norm-based attention and attention flow on the embedded model.

Run: .venv/bin/python benchmarks/flow.py
Prints a markdown table and writes it to benchmarks/flow_results.md.

Budgets (issue 6): rollout <= 0.3 s and norm-based (including the capture of
the internals it needs) <= 1 s at 512 tokens; attention flow bounded at
viz.flow.FLOW_MAX_TOKENS tokens.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viz.capture import capture  # noqa: E402
from viz.flow import (FLOW_MAX_TOKENS, FLOW_TIME_LIMIT_S, attention_flow,  # noqa: E402
                      norm_based_from_internals, rollout)
from viz.models import load_model  # noqa: E402
from common import text_of  # noqa: E402
from viz.result import ENCODER  # noqa: E402

PARAGRAPH = ("The animal didn't cross the street because it was too tired. Attention lets every token "
             "look at every other token, and rollout multiplies those looks through the layers. ")
REPEATS = 5


CPU_TIMES: list[float] = []   # CPU seconds (all threads) of the last timed() call, per run


def timed(fn, repeats: int = REPEATS) -> tuple[float, object]:
    """Median wall time over ``repeats`` runs (after one warm-up) and the last result.

    Also records the median process CPU time: on a shared, busy machine wall
    time grows with the load while CPU time stays close to the idle figure.
    """
    result = fn()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    CPU_TIMES[:] = [statistics.median(cpu)]
    return statistics.median(times), result


def main() -> int:
    load_before = os.getloadavg()[0]
    loaded = load_model(None)
    info = loaded.info
    n_layers = info.n_layers
    text512 = PARAGRAPH * 40                      # truncated by capture at the model's 512 limit
    rows = []

    t_plain, result = timed(lambda: capture(text512, model=loaded))
    n_tokens = len(result.tokens)
    rows.append(("capture, attention only (reference)", n_tokens, t_plain, CPU_TIMES[0], "-"))

    pattern = result.attentions
    t_roll, roll = timed(lambda: rollout(pattern))
    assert roll.shape == (n_layers, n_tokens, n_tokens)
    rows.append(("rollout, all layers", n_tokens, t_roll, CPU_TIMES[0], "<= 0.3 s"))

    last = (ENCODER, n_layers - 1)

    def norm_one_layer():
        res = capture(text512, model=loaded, internals=[last])
        return norm_based_from_internals(res.internals[last])

    t_norm1, norm = timed(norm_one_layer)
    assert norm.shape == (n_tokens, n_tokens)
    rows.append(("norm-based, one layer incl. capture of its internals", n_tokens, t_norm1, CPU_TIMES[0],
                 "<= 1 s"))

    def norm_all_layers():
        res = capture(text512, model=loaded, internals=True)
        return [norm_based_from_internals(res.internals[(ENCODER, layer)]) for layer in range(n_layers)]

    t_norm_all, _ = timed(norm_all_layers, repeats=3)
    rows.append(("norm-based, all 6 layers incl. capture of all internals", n_tokens, t_norm_all,
                 CPU_TIMES[0], "-"))

    res = capture(text512, model=loaded, internals=[last])
    t_norm_only, _ = timed(lambda: norm_based_from_internals(res.internals[last]))
    rows.append(("norm-based, one layer, arithmetic only", n_tokens, t_norm_only, CPU_TIMES[0], "-"))

    short = capture(text_of(FLOW_MAX_TOKENS, loaded), model=loaded)
    n_short = len(short.tokens)
    t_flow, flow = timed(lambda: attention_flow(short.attentions, layer=n_layers - 1), repeats=3)
    assert flow.complete
    rows.append((f"attention flow, last layer, full T x T (limit {FLOW_MAX_TOKENS} tokens, "
                 f"{FLOW_TIME_LIMIT_S:g} s)", n_short, t_flow, CPU_TIMES[0], "bounded"))
    t_flow_row, _ = timed(lambda: attention_flow(short.attentions, layer=n_layers - 1,
                                                 query_positions=(0,)), repeats=3)
    rows.append(("attention flow, last layer, one output position", n_short, t_flow_row, CPU_TIMES[0],
                 "-"))

    lines = [f"Embedded model ({info.model_type}, {n_layers} layers x {info.n_heads} heads, "
             f"d_model {info.d_model}); {os.cpu_count()} cores, Python {platform.python_version()}; "
             f"median of {REPEATS} runs after a warm-up (3 for the slow rows); load average "
             f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other jobs share the cores).",
             "",
             "| measure | tokens | wall time (s) | CPU time, all threads (s) | budget (wall) |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {tokens} | {seconds:.3f} | {cpu:.3f} | {budget} |"
              for name, tokens, seconds, cpu, budget in rows]
    table = "\n".join(lines)
    print(table)
    out = Path(__file__).with_name("flow_results.md")
    out.write_text("# Rollout, norm-based attention and flow timings\n\n"
                   "Produced by `benchmarks/flow.py`.\n\n" + table + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared batches (viz.batching) on the embedded LLM, in-process: how far a batched run is from a lone one.

N requests (own prompts; greedy and sampled with their own seeds, some with the chat template, some
with top-p) generate at once through viz.batching.generate; the same N then run alone through
viz.generation.generate.  Reported: tokens identical (count), the largest difference of the logits the
batch chose from against a lone replay of each request's decoding (the figure LOGIT_TOLERANCE must
stay well above), of the attention and of the top-k probabilities; how many choices were within
2 x LOGIT_TOLERANCE of a tie (those requests are replayed alone); and the time of both ways, with the
engine's own split (prefill, steps, final passes).  No Streamlit: for the app, see benchmarks/load.py.

Usage:
    .venv/bin/python benchmarks/batching.py                  # 30 requests x 20 new tokens
    .venv/bin/python benchmarks/batching.py --requests 30 --new 64
Results go to benchmarks/batching_results.md (--out to change).  On a shared machine, read the ratio
of the two times, measured in the same run, not the times.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ANIMALS = "cat dog horse rabbit fox owl lion tiger bear wolf mouse goat sheep duck eagle".split()


def settings(i: int) -> dict:
    return dict(chat=i % 3 == 2, sample=i % 2 == 1, seed=i, temperature=0.7 + 0.1 * (i % 5),
                top_p=0.9 if i % 4 == 1 else 1.0)


def prompt(i: int) -> str:
    return f"Student {i} asks: why did the {ANIMALS[i % len(ANIMALS)]} cross the road? Because" + " really" * (i % 4)


def lone_logits(loaded, result) -> list[torch.Tensor]:
    """The logits a lone run chose each token from (prefill, then one token at a time, as _decode does)."""
    from transformers import DynamicCache
    ids = [int(i) for i in result.tokens.token_ids[:result.n_prompt]]
    cache = DynamicCache(config=loaded.model.config)
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True,
                           position_ids=torch.arange(len(ids))[None], logits_to_keep=1)
        rows = [out.logits[0, -1].float()]
        for step, token in enumerate(result.step_ids.tolist()[:-1]):
            out = loaded.model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True,
                               position_ids=torch.tensor([[len(ids) + step]]), logits_to_keep=1)
            rows.append(out.logits[0, -1].float())
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--new", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the server's, in server mode)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "batching_results.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from viz import batching, generation
    from viz.models import EMBEDDED_LLM, load_model
    loaded = load_model(EMBEDDED_LLM)
    n = args.requests
    seen: dict[tuple[int, int], torch.Tensor] = {}          # (request, step) -> the logits the batch chose from
    choose = batching.Engine._choose

    def spy(self, row, logits):
        if not row.solo:
            seen[(row.job.seed, len(row.ids))] = logits.detach().clone().float()
        return choose(self, row, logits)
    batching.Engine._choose = spy
    engine = batching.Engine(loaded)
    loaded.__dict__["_batch_engine"] = engine
    shared: list = [None] * n
    finished = [0.0] * n
    start = threading.Barrier(n + 1)

    def run(i):
        start.wait()
        shared[i] = batching.generate(prompt(i), loaded, max_new_tokens=args.new, **settings(i))
        finished[i] = time.perf_counter() - began
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    batched_s = time.perf_counter() - began
    batching.Engine._choose = choose
    began = time.perf_counter()
    alone = [generation.generate(prompt(i), loaded, max_new_tokens=args.new, **settings(i)) for i in range(n)]
    serial_s = time.perf_counter() - began

    same = sum(a.step_ids.tolist() == b.step_ids.tolist() for a, b in zip(alone, shared))
    att = max(float(np.abs(a.attentions - b.attentions).max()) for a, b in zip(alone, shared))
    top = max(float(np.abs(a.top_probs - b.top_probs).max()) for a, b in zip(alone, shared))
    worst, gaps = 0.0, []
    for i, a in enumerate(alone):
        for step, row in enumerate(lone_logits(loaded, a)):
            if (i, step) in seen:                    # the seed is the request's index here
                worst = max(worst, float((seen[(i, step)] - row).abs().max()))
            if not settings(i)["sample"]:
                best = torch.topk(row, 2).values
                gaps.append(float(best[0] - best[1]))
    gaps = np.asarray(gaps)
    near = int((gaps <= 2 * batching.LOGIT_TOLERANCE).sum())
    stats = engine.stats
    lines = [f"# Shared batches on the embedded LLM ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work: load average "
             f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} at the end), torch threads {args.threads}. "
             f"{n} requests x {args.new} new tokens, submitted at once (viz.batching.generate), then the same "
             f"one after another alone (viz.generation.generate), in-process, no Streamlit.", "",
             "| figure | value |", "|---|---|",
             f"| same tokens as alone | {same} / {n} |",
             f"| largest \\|logits batched - alone\\| over every step the batch chose | {worst:.2e} |",
             f"| LOGIT_TOLERANCE (a choice within twice this of a tie is replayed alone) | {batching.LOGIT_TOLERANCE:g} |",
             f"| greedy choices within 2 x tolerance of a tie (lone logits) | {near} of {len(gaps)} |",
             f"| requests replayed alone (near ties) | {stats['replays']} |",
             f"| largest \\|attention batched - alone\\| | {att:.2e} |",
             f"| largest \\|top-k probability batched - alone\\| | {top:.2e} |",
             f"| batched: all {n} done (p95) | {batched_s:.1f} s ({sorted(finished)[max(0, int(0.95 * n) - 1)]:.1f} s) |",
             f"| alone, one after another | {serial_s:.1f} s |",
             f"| **ratio** | **{batched_s / serial_s:.2f}** |",
             f"| engine: prefill / decoding steps / final passes (model time) | {stats['prefill_s']:.1f} / "
             f"{stats['step_s']:.1f} / {stats['pass_s']:.1f} s |",
             f"| engine: most rows decoding together, most in one final pass | {stats['decode_rows']}, "
             f"{stats['pass_rows']} |", ""]
    report = "\n".join(lines) + "\n"
    print(report)
    out = Path(args.out)
    previous = out.read_text() if out.exists() else ""
    out.write_text(report + ("\n" + previous if previous else ""))
    return 0 if same == n else 1


if __name__ == "__main__":
    raise SystemExit(main())

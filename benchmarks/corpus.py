"""Corpus statistics throughput: one text at a time vs batched (local) vs Ray with 2 workers.

Texts/s over the same lines (the sample corpus cycled to --lines), on the embedded MiniLM and the
embedded LLM (fewer lines for it: --llm-lines), plus how far the engines' tables are apart and how
the process's memory moves while the corpus streams.

    one at a time  corpus.corpus_metrics + capture(): the path before batching (today's app loop)
    batched local  batch.corpus_file_stats(engine="local"): length-sorted padded batches, streamed
    ray            batch.corpus_file_stats(engine="ray", workers=2): a local Ray, 2 actors x 1 thread;
                   texts/s counted from the first chunk handed out (Ray and worker start-up reported apart)

Usage: python benchmarks/corpus.py [--lines 2000] [--llm-lines 200] [--batch-size 16] [--threads N]
                                   [--models embedded,embedded-llm]
The machine may be shared: compare the ratios, and read the load average printed with each figure.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import rss_mb  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from viz import batch, corpus, stats  # noqa: E402
from viz.capture import capture  # noqa: E402
from viz.models import load_model  # noqa: E402


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())



def lines(n: int) -> list[str]:
    return list(itertools.islice(itertools.cycle(corpus.sample_corpus().texts), n))


def one_at_a_time(loaded, texts: list[str]) -> tuple[float, object]:
    start = time.perf_counter()
    done = corpus.corpus_metrics(texts, lambda text: capture(text, model=loaded).block())
    return len(texts) / (time.perf_counter() - start), done.table


def batched(loaded, path: Path, batch_size: int, memory: list) -> tuple[float, object]:
    def progress(p):
        memory.append((p.done, rss_mb()))
    start = time.perf_counter()
    done = batch.corpus_file_stats(path, model=loaded, batch_size=batch_size, progress=progress)
    return done.n_done / (time.perf_counter() - start), done.table


def on_ray(name: str, path: Path, batch_size: int, workers: int) -> tuple[float, float, object]:
    seen = []
    start = time.perf_counter()
    done = batch.corpus_file_stats(path, model=name, batch_size=batch_size, engine="ray", workers=workers,
                                   progress=seen.append)
    wall = time.perf_counter() - start
    steady = seen[-1].texts_per_s     # from the first chunk handed out to the last result
    startup = wall - seen[-1].elapsed_s
    return steady, startup, done.table


def gap(a, b) -> float:
    return float(np.nanmax(np.abs(a[list(stats.METRICS)].to_numpy() - b[list(stats.METRICS)].to_numpy())))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--llm-lines", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--llm-batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default="embedded,embedded-llm")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of this process (one at a time, batched local); default torch's")
    args = ap.parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load average at start {load()}\n")
    print("| model | lines | one at a time | batched local | ray, 2 workers | batched / one | ray / local "
          "| max gap batched-one | max gap ray-local | ray start-up | RSS after 25% -> 100% |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        llm = name == "embedded-llm"
        n = args.llm_lines if llm else args.lines
        bs = args.llm_batch_size if llm else args.batch_size
        texts = lines(n)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "corpus.txt"
            path.write_text("\n".join(texts) + "\n", encoding="utf-8")
            loaded = load_model(name)
            batch.corpus_stats(texts[:2 * bs], model=loaded, batch_size=bs)   # warm-up (first-call costs)
            capture(texts[0], model=loaded)
            loads = [load()]
            one_rate, one_table = one_at_a_time(loaded, texts)
            loads.append(load())
            memory: list = []
            local_rate, local_table = batched(loaded, path, bs, memory)
            loads.append(load())
            del loaded
            ray_rate, startup, ray_table = on_ray(name, path, bs, args.workers)
            loads.append(load())
        quarter = next(mb for done, mb in memory if done >= n // 4)
        print(f"| {name} | {n} | {one_rate:.1f}/s | {local_rate:.1f}/s | {ray_rate:.1f}/s "
              f"| {local_rate / one_rate:.2f}x | {ray_rate / local_rate:.2f}x | {gap(local_table, one_table):.1e} "
              f"| {gap(ray_table, local_table):.1e} | {startup:.0f} s | {quarter:.0f} -> {memory[-1][1]:.0f} MB |",
              flush=True)
        print(f"<!-- {name}: load average before/after each step {' | '.join(loads)} -->", flush=True)


if __name__ == "__main__":
    main()

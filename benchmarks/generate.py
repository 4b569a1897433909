"""Generation with every step's attention and top-k vs transformers' plain generate(), on the embedded LLM.

* ours  = viz.generation.generate(prompt, max_new_tokens=20, top_k=10): the decoding loop (KV cache,
          logits only), every step's top-10, and one forward pass with attention over the finished
          sequence, turned into the numpy result (tokens, labels, (30, 9, T, T) float32).
* plain = model.generate(input_ids, max_new_tokens=20, do_sample=False): the same 20 greedy tokens
          (checked), no attention, no top-k: what any use of the model costs.
* with attentions = model.generate(..., output_attentions=True, output_logits=True,
          return_dict_in_generate=True): what one would write by hand to get the same information.

Plus the embedded LLM's first load (dequantizing the GGUF file into a fresh cache directory, in a
child process) and later loads (from the safetensors copy, in fresh child processes).
Runs alternate ours / plain so a busy shared machine slows both alike; medians are reported, of
wall-clock time and of the process's CPU time (time.process_time).  On a machine shared with other
sessions the wall clock mostly measures the wait for a core, so the CPU-time ratio is the one to
read there; with one torch thread (--threads 1) CPU time has no spinning threads in it either.

Usage: python benchmarks/generate.py [--repeat 5] [--threads N] [--skip-first-load] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = (
    ("plain", "The history of the printing press begins", False),
    ("chat", "Explain in one sentence why the sky is blue.", True),
)

_LOAD_CHILD = """
import json, os, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
from viz import embedded
from viz.models import EMBEDDED_LLM, load_model
t1 = time.perf_counter()
converted = not embedded.embedded_llm_ready()
loaded = load_model(EMBEDDED_LLM)
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "converted": converted, "cpu_s": time.process_time()}}))
"""


def child_load(cache: str | None, threads: int | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache:
        env["VIZ_CACHE_DIR"] = cache
    if threads:
        env["VIZ_TORCH_THREADS"] = str(threads)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _LOAD_CHILD.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["process_s"] = time.perf_counter() - start
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--skip-first-load", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "generate_results.md"))
    args = ap.parse_args()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from viz.generation import generate, prompt_ids
    from viz.models import EMBEDDED_LLM, load_model

    lines = ["# Generation benchmark (embedded LLM, SmolLM2-135M-Instruct)", "",
             (f"Shared machine ({os.cpu_count()} cores, other sessions running: figures vary run to run), "
              f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, median of {args.repeat} runs "
              f"(alternating), 20 new tokens, greedy, top-10 per step."), ""]

    loads = []
    if not args.skip_first_load:
        with tempfile.TemporaryDirectory() as fresh:
            first = child_load(fresh, args.threads)
            assert first["converted"], "the fresh cache directory already had the model"
            loads.append(("first load (GGUF -> float32 safetensors, once per cache)", first))
            print("first load", first, flush=True)
    later = [child_load(None, args.threads) for _ in range(3)]
    print("later loads", later, flush=True)
    lines += ["## Loading", "", "| load | load_model, wall (s) | whole process, wall (s) | whole process, CPU (s) |",
              "|---|---|---|---|"]
    for name, data in loads:
        lines.append(f"| {name} | {data['load_s']:.1f} | {data['process_s']:.1f} | {data['cpu_s']:.1f} |")
    lines.append(f"| later loads (safetensors copy), median of 3 | {statistics.median(d['load_s'] for d in later):.1f} "
                 f"| {statistics.median(d['process_s'] for d in later):.1f} "
                 f"| {statistics.median(d['cpu_s'] for d in later):.1f} |")

    loaded = load_model(EMBEDDED_LLM)
    model = loaded.model
    lines += ["", "## 20 tokens: ours (every step's attention + top-10) vs plain generate()", "",
              "CPU seconds (wall-clock seconds in brackets).", "",
              ("| prompt | tokens (prompt + new) | plain generate | generate with attentions + logits "
               "| ours | ours / plain, CPU | ours / plain, wall |"), "|---|---|---|---|---|---|---|"]
    ratios, wall_ratios = [], []
    for name, prompt, chat in PROMPTS:
        ids = torch.tensor([list(prompt_ids(loaded, prompt, chat=chat, room=20).ids)])

        def plain(ids=ids):
            with torch.inference_mode():
                return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=20,
                                      do_sample=False)

        def by_hand(ids=ids):
            with torch.inference_mode():
                return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=20,
                                      do_sample=False, output_attentions=True, output_logits=True,
                                      return_dict_in_generate=True)

        def ours(prompt=prompt, chat=chat):
            return generate(prompt, loaded, max_new_tokens=20, chat=chat, top_k=10)

        reference = plain()[0, ids.shape[1]:].tolist()
        result = ours()                                        # warm-up, and the tokens check
        assert result.step_ids.tolist() == reference, (name, result.step_ids.tolist(), reference)
        by_hand()
        wall = {"plain": [], "by_hand": [], "ours": []}
        cpu = {"plain": [], "by_hand": [], "ours": []}
        for _ in range(args.repeat):
            for key, fn in (("plain", plain), ("ours", ours), ("by_hand", by_hand)):
                t, c = time.perf_counter(), time.process_time()
                fn()
                wall[key].append(time.perf_counter() - t)
                cpu[key].append(time.process_time() - c)
        w = {k: statistics.median(v) for k, v in wall.items()}
        c = {k: statistics.median(v) for k, v in cpu.items()}
        # Ratios of medians of alternating runs: both sides see the same background load.
        ratio, wall_ratio = c["ours"] / c["plain"], w["ours"] / w["plain"]
        ratios.append(ratio)
        wall_ratios.append(wall_ratio)
        n_total = ids.shape[1] + len(reference)
        print(name, "cpu", c, "wall", w, f"ratio cpu {ratio:.2f} wall {wall_ratio:.2f}", flush=True)
        lines.append(f"| {name}{' (chat template)' if chat else ''} | {ids.shape[1]} + {len(reference)} = {n_total} "
                     f"| {c['plain']:.2f} ({w['plain']:.1f}) | {c['by_hand']:.2f} ({w['by_hand']:.1f}) "
                     f"| {c['ours']:.2f} ({w['ours']:.1f}) | {ratio:.2f}x | {wall_ratio:.2f}x |")
    lines += ["", (f"Goal: ours <= 1.5x plain generate(). Measured (CPU time): {', '.join(f'{r:.2f}x' for r in ratios)}; "
                   f"wall clock: {', '.join(f'{r:.2f}x' for r in wall_ratios)}."),
              "Same greedy tokens as generate() in every run (asserted).", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

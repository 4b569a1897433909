"""Long prompts on the language-model pages (issue 16, item 4): generation, predictions and the logit lens
on a ~2,000-token prompt of the embedded LLM, each in a fresh process so its peak RSS is its own.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/long_lm.py [--tokens 2000] [--new 20] [--what gen,pred,lens]

Per measurement: wall time, the tokens the model saw, the process's RSS before and at its peak during the
call (sampled every 10 ms, after a short warm-up pass has made the weights resident), and what the
result holds; ``bare`` is one forward pass without attention weights, the baseline.  A noisy shared machine: read ratios, not seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import rss_mb

ROOT = Path(__file__).resolve().parents[1]


class Peak:
    """The largest RSS seen while the ``with`` block runs."""

    def __enter__(self):
        self.base = rss_mb()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        return False


def prompt_text(loaded, n_tokens: int) -> str:
    """README.md's text repeated, cut to about ``n_tokens`` tokens."""
    base = (ROOT / "README.md").read_text()
    text = base
    while len(loaded.tokenizer(text)["input_ids"]) < n_tokens:
        text += "\n" + base
    ids = loaded.tokenizer(text)["input_ids"][:n_tokens]
    return loaded.tokenizer.decode(ids)


def one(what: str, n_tokens: int, new: int) -> dict:
    import numpy as np

    from viz.capture import run_bare_forward
    from viz.models import EMBEDDED_LLM, load_model
    loaded = load_model(EMBEDDED_LLM)
    text = prompt_text(loaded, n_tokens)
    # The weights are mapped from the cached safetensors and become resident on the first forward pass
    # (~540 MB): a short pass first, so the peak below is the long call's own.
    run_bare_forward(loaded, "Hello, world.")
    out: dict = {"what": what}
    with Peak() as peak:
        began = time.perf_counter()
        if what == "bare":     # the baseline: one forward pass without attention weights or logits
            run_bare_forward(loaded, text)
            out["tokens"] = n_tokens
        elif what == "gen":
            from viz.batching import generate
            result = generate(text, loaded, max_new_tokens=new)
            out["tokens"] = len(result.tokens)
            out["n_prompt"] = result.n_prompt
            out["truncated"] = result.truncated
            pattern = result.attentions
            out["lazy"] = not isinstance(pattern, np.ndarray)
            out["result_mb"] = round(pattern.nbytes / 1e6, 1)
        elif what == "pred":
            from viz.lm import predictions
            result = predictions(text, loaded)
            out["tokens"] = len(result.tokens)
        else:
            from viz.lm import logit_lens
            result = logit_lens(text, loaded, position=-1)
            out["tokens"] = len(result.tokens)
        out["seconds"] = round(time.perf_counter() - began, 2)
    if what == "gen":   # the page's own reads: one step's rows of every layer and head
        began = time.perf_counter()
        rows = result.attentions[:, :, result.query_pos(result.n_steps - 1), : result.query_pos(result.n_steps - 1) + 1]
        out["step_rows_s"] = round(time.perf_counter() - began, 3)
        out["step_rows_shape"] = list(rows.shape)
    out["rss_before_mb"] = round(peak.base)
    out["peak_growth_mb"] = round(peak.peak - peak.base)
    out["held_growth_mb"] = round(rss_mb() - peak.base)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--new", type=int, default=20)
    parser.add_argument("--what", default="bare,gen,pred,lens")
    parser.add_argument("--one", default="")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.tokens, args.new)))
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    print(f"load average before: {os.getloadavg()}")
    for what in args.what.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", what, "--tokens", str(args.tokens),
                               "--new", str(args.new)], env=env, capture_output=True, text=True, cwd=os.getcwd(), check=False)
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
        print(line, f"(load average {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()

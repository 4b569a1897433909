"""Helpers shared by the benchmark scripts (run them from the repository root)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARAGRAPH = ("The quick brown fox jumps over the lazy dog while students watch attention patterns emerge "
             "across the layers and heads of a small transformer model. ")


def text_of(n_tokens: int, loaded) -> str:
    """The longest prefix of a long text that tokenizes to at most ``n_tokens`` (special tokens included)."""
    words = (PARAGRAPH * (n_tokens // 10 + 2)).split()
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(loaded.tokenizer(" ".join(words[:mid]))["input_ids"]) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def rss_mb() -> float:
    """This process's resident memory in MB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

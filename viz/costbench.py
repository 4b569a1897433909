"""Measured cost of attention on this machine: full vs sliding-window attention in torch.

A bounded micro-benchmark, part of the torch tier (pages reach it only through
``viz.ui.compute``, which imports it when the measurement is shown): lengths grow by doubling and stop when the next one would not fit in the time
budget (default 3 s in total, shown with the result).  Results are cached per
process; a lock keeps two sessions from measuring at once (they would share
the cores and measure each other).

The windowed version is the chunked form Longformer uses: queries are cut into
chunks of ``window`` positions, each chunk scores its own and the neighbouring
chunks' keys, so work and memory grow as N * 3w, not N².
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384)
DEFAULT_BUDGET_S = 3.0

_LOCK = threading.Lock()
_CACHE: dict = {}


@dataclass(frozen=True)
class BenchRow:
    length: int
    full_ms: float | None     # None: skipped (would not fit the budget)
    window_ms: float | None


@dataclass(frozen=True)
class BenchResult:
    rows: tuple[BenchRow, ...]
    window: int
    d_head: int
    threads: int
    budget_s: float
    elapsed_s: float
    skipped: tuple[int, ...]   # lengths not measured at all


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with the N x N matrix materialised (what eager attention does)."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.softmax(scores, dim=-1) @ v


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Chunked sliding-window attention: each query sees the keys within about ``window`` positions.

    Queries in chunk c score keys of chunks c-1, c, c+1, masked to |i - j| <= window,
    so the score tensor is (N/w, w, 3w) instead of (N, N).
    """
    n, d = q.shape
    w = window
    pad = (-n) % w
    if pad:
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    m = q.shape[0] // w
    qc = q.view(m, w, d)
    kp = torch.nn.functional.pad(k, (0, 0, w, w)).view(m + 2, w, d)
    vp = torch.nn.functional.pad(v, (0, 0, w, w)).view(m + 2, w, d)
    kc = torch.cat([kp[:-2], kp[1:-1], kp[2:]], dim=1)          # (m, 3w, d)
    vc = torch.cat([vp[:-2], vp[1:-1], vp[2:]], dim=1)
    scores = (qc @ kc.transpose(-1, -2)) * d ** -0.5             # (m, w, 3w)
    qi = torch.arange(w)[:, None]
    kj = torch.arange(3 * w)[None, :] - w
    chunk = torch.arange(m)[:, None, None] * w
    key_pos = chunk + kj
    allowed = ((kj - qi).abs() <= w) & (key_pos >= 0) & (key_pos < n)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vc
    return out.reshape(m * w, d)[:n]


def _time(fn, repeats: int, deadline: float) -> float:
    """Best of up to 1 + repeats calls (the first doubles as warm-up); no new call starts
    once the previous one's duration would cross ``deadline``."""
    best = float("inf")
    for i in range(1 + repeats):
        t = time.perf_counter()
        fn()
        took = time.perf_counter() - t
        best = min(best, took)
        if time.perf_counter() + took > deadline:
            break
    return best * 1000.0


def run(*, budget_s: float = DEFAULT_BUDGET_S, lengths=DEFAULT_LENGTHS, window: int = 64, d_head: int = 64,
        repeats: int = 2, threads: int = 1) -> BenchResult:
    """Measure (cached per argument set).  Stops before a length whose predicted time exceeds the budget.

    Runs on ``threads`` torch threads (restored afterwards) while holding one of the
    capture module's forward-pass slots (:func:`viz.capture.run_slot`), so no forward
    pass of another session shares the cores with the measurement or sees the changed
    thread count.
    """
    from viz.capture import run_slot   # the torch tier's one semaphore around inference
    key = (budget_s, tuple(lengths), window, d_head, repeats, threads)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        with run_slot():
            before = torch.get_num_threads()
            torch.set_num_threads(max(1, threads))
            try:
                result = _measure(budget_s, tuple(lengths), window, d_head, repeats)
            finally:
                torch.set_num_threads(before)
        _CACHE[key] = result
        return result


def _measure(budget_s, lengths, window, d_head, repeats) -> BenchResult:
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    rows, skipped = [], []
    # (seconds per call, length) of the last measurement of each kind: the next length's
    # cost is predicted from it (full grows with N², window with N); a length starts only if
    # two calls are predicted to fit, and _time stops repeating at the deadline.
    last = {"full": None, "window": None}

    def fits(kind: str, n: int, power: int) -> bool:
        left = budget_s - (time.perf_counter() - start)
        if last[kind] is None:
            return left > 0
        secs, n0 = last[kind]
        return secs * (n / n0) ** power * 2 < left          # at least two calls (warm-up + one)

    with torch.inference_mode():
        for n in lengths:
            want_win, want_full = fits("window", n, 1), fits("full", n, 2)
            if not (want_win or want_full):
                skipped.append(n)
                continue
            q, k, v = (torch.randn(n, d_head, generator=gen) for _ in range(3))
            full_ms = win_ms = None
            if want_win:
                win_ms = _time(lambda: window_attention(q, k, v, window), repeats, start + budget_s)
                last["window"] = (win_ms / 1000.0, n)
            if fits("full", n, 2):
                full_ms = _time(lambda: full_attention(q, k, v), repeats, start + budget_s)
                last["full"] = (full_ms / 1000.0, n)
            rows.append(BenchRow(length=n, full_ms=full_ms, window_ms=win_ms))
    return BenchResult(rows=tuple(rows), window=window, d_head=d_head, threads=torch.get_num_threads(),
                       budget_s=budget_s, elapsed_s=time.perf_counter() - start, skipped=tuple(skipped))

"""Run-time settings read from the environment (one place, documented in the README).

VIZ_SERVER_MODE=1      classroom server: only the embedded model and VIZ_ALLOWED_MODELS,
                       no free model field, smaller caps.
VIZ_ALLOWED_MODELS     comma-separated hub ids / local folders students may pick (server mode).
VIZ_MAX_TOKENS         tokens per input the app accepts (default 512).
VIZ_CACHE_MB           memory for cached results shared by all sessions (default 1024).
VIZ_CONCURRENT_RUNS    forward passes allowed at once; the rest wait (default 1).
VIZ_TORCH_THREADS      torch threads per forward pass (default: torch's choice; 1 in server mode on a
                       machine of up to 4 cores, else half the cores, so Streamlit keeps a core).
VIZ_RUN_WAIT_S         longest a run waits for a free slot before a "server busy" message (default 300).
VIZ_UPLOAD_MAX_LINES   texts per corpus upload (default 500; 200 in server mode).
"""
from __future__ import annotations

import os
from dataclasses import dataclass


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    server_mode: bool
    allowed_models: tuple[str, ...]
    max_tokens: int
    cache_mb: int
    upload_max_lines: int
    concurrent_runs: int = 1
    torch_threads: int | None = None   # None: leave torch's default
    run_wait_s: float = 300.0


def load() -> Settings:
    server = _flag("VIZ_SERVER_MODE")
    allowed = tuple(m.strip() for m in os.environ.get("VIZ_ALLOWED_MODELS", "").split(",") if m.strip())
    return Settings(
        server_mode=server,
        allowed_models=allowed,
        max_tokens=int(os.environ.get("VIZ_MAX_TOKENS", "512")),
        cache_mb=int(os.environ.get("VIZ_CACHE_MB", "1024")),
        upload_max_lines=int(os.environ.get("VIZ_UPLOAD_MAX_LINES", "200" if server else "500")),
        concurrent_runs=max(1, int(os.environ.get("VIZ_CONCURRENT_RUNS", "1"))),
        torch_threads=_torch_threads(server),
        run_wait_s=float(os.environ.get("VIZ_RUN_WAIT_S", "300")),
    )


def _torch_threads(server: bool) -> int | None:
    # A classroom server runs Streamlit's own work (sessions, websockets, figures)
    # next to the forward passes: torch must not take every core.
    if os.environ.get("VIZ_TORCH_THREADS", "").strip():
        return max(1, int(os.environ["VIZ_TORCH_THREADS"]))
    if not server:
        return None
    cores = os.cpu_count() or 1
    return 1 if cores <= 4 else cores // 2


SETTINGS = load()

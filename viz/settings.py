"""Run-time settings read from the environment (one place, documented in the README).

VIZ_SERVER_MODE=1      classroom server: only the embedded model and VIZ_ALLOWED_MODELS,
                       no free model field, smaller caps.
VIZ_ALLOWED_MODELS     comma-separated hub ids / local folders students may pick (server mode).
VIZ_MAX_TOKENS         tokens per input the app accepts (default 512).
VIZ_CACHE_MB           memory for cached results shared by all sessions (default 1024).
VIZ_CONCURRENT_RUNS    forward passes allowed at once; the rest wait (default 1).
VIZ_TORCH_THREADS      torch threads per forward pass (default: torch's choice).
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


def load() -> Settings:
    server = _flag("VIZ_SERVER_MODE")
    allowed = tuple(m.strip() for m in os.environ.get("VIZ_ALLOWED_MODELS", "").split(",") if m.strip())
    return Settings(
        server_mode=server,
        allowed_models=allowed,
        max_tokens=int(os.environ.get("VIZ_MAX_TOKENS", "512")),
        cache_mb=int(os.environ.get("VIZ_CACHE_MB", "1024")),
        upload_max_lines=int(os.environ.get("VIZ_UPLOAD_MAX_LINES", "200" if server else "500")),
    )


SETTINGS = load()

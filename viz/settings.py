"""Run-time settings: every environment variable the app reads is read here (documented in the README).

VIZ_SERVER_MODE=1      classroom server: only the embedded model and VIZ_ALLOWED_MODELS,
                       no free model field, smaller caps.
VIZ_ALLOWED_MODELS     comma-separated hub ids / local folders students may pick (server mode).
VIZ_MAX_TOKENS         tokens per input the app accepts, every model (default: 2048 on decoders, 512 on
                       encoders and encoder-decoders; the model's own limit always applies too).
VIZ_FULL_PATTERN_MB    largest attention (L x H x T^2 float32) a result holds as one array; longer decoder
                       inputs keep queries and keys and recompute a layer when shown (default 128).
VIZ_FULL_FALLBACK_MB   for models whose q and k cannot be recorded, the largest full attention captured
                       anyway; longer inputs are cut to fit, with a notice (default 768).
VIZ_MAX_CHARS          characters per input kept before tokenizing; the rest is cut (default 200000).
VIZ_CACHE_MB           memory for cached results shared by all sessions (default 1024).
VIZ_CONCURRENT_RUNS    forward passes allowed at once; the rest wait (default 1).
VIZ_TORCH_THREADS      torch threads per forward pass (default: torch's choice; 1 in server mode on a
                       machine of up to 4 cores, else half the cores, so Streamlit keeps a core).
VIZ_RUN_WAIT_S         longest a run waits for a free slot before a "server busy" message (default 300).
VIZ_UPLOAD_MAX_LINES   texts per corpus upload (default 500; 200 in server mode).
VIZ_MAX_CORPUS_TEXTS   texts read from a corpus file (CLI `stats --corpus`, default 1000).
VIZ_MAX_CORPUS_BYTES   largest corpus file read (default 5 MiB).
VIZ_BATCH_ATTENTION_MB attention one batch of corpus texts may hold, float32 (default 512); also the
                       bound of one shared forward pass of viz.batching.
VIZ_BATCHING           1 (default): requests that arrive while the model is busy share its forward passes
                       (viz.batching: generations decode in one batch, waiting captures run as one pass);
                       0: one run at a time, the queue of VIZ_CONCURRENT_RUNS only.
VIZ_BATCH_MAX_SIZE     requests in one shared batch: generations decoding together, or texts in one
                       forward pass (default 32).
VIZ_BATCH_MAX_TOKENS   tokens in flight in one shared batch: the sum of prompt + new tokens of the
                       generations decoding together, of the tokens of the texts in one pass (default 4096).
VIZ_BATCH_FINAL_PASS   1: a generation decoded in a shared batch gets its attention from one more padded
                       pass over its whole sequence, as a lone run does; 0 (default): from the batch's own
                       prefill and steps (the same rows, to float error, without that pass).
VIZ_CACHE_DIR          where the embedded models are unpacked once
                       (default $XDG_CACHE_HOME/attention-explorer, else ~/.cache/attention-explorer).
HF_HUB_OFFLINE=1       never contact the Hugging Face hub (also read by huggingface_hub itself).
BROWSER_PATH           the Chrome/Chromium kaleido uses for SVG export (default: found on the PATH).

:data:`SETTINGS` is read once, at import.  The last three are read by the functions below each time
they are asked, because tests and launch scripts set them after import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
    max_chars: int = 200_000
    corpus_max_texts: int = 1000
    corpus_max_bytes: int = 5 * 1024 * 1024
    batch_attention_mb: int = 512
    batching: bool = True
    batch_max_size: int = 32
    batch_max_tokens: int = 4096
    batch_final_pass: bool = False
    # Per-family token caps when VIZ_MAX_TOKENS is not set (max_tokens is then the encoders' one).
    decoder_max_tokens: int = 2048
    full_pattern_mb: int = 128
    full_fallback_mb: int = 768


def load() -> Settings:
    server = _flag("VIZ_SERVER_MODE")
    allowed = tuple(m.strip() for m in os.environ.get("VIZ_ALLOWED_MODELS", "").split(",") if m.strip())
    return Settings(
        server_mode=server,
        allowed_models=allowed,
        max_tokens=int(os.environ.get("VIZ_MAX_TOKENS", "512")),
        decoder_max_tokens=int(os.environ.get("VIZ_MAX_TOKENS", "2048")),
        full_pattern_mb=int(os.environ.get("VIZ_FULL_PATTERN_MB", "128")),
        full_fallback_mb=int(os.environ.get("VIZ_FULL_FALLBACK_MB", "768")),
        cache_mb=int(os.environ.get("VIZ_CACHE_MB", "1024")),
        upload_max_lines=int(os.environ.get("VIZ_UPLOAD_MAX_LINES", "200" if server else "500")),
        concurrent_runs=max(1, int(os.environ.get("VIZ_CONCURRENT_RUNS", "1"))),
        torch_threads=_torch_threads(server),
        run_wait_s=float(os.environ.get("VIZ_RUN_WAIT_S", "300")),
        max_chars=int(os.environ.get("VIZ_MAX_CHARS", "200000")),
        corpus_max_texts=int(os.environ.get("VIZ_MAX_CORPUS_TEXTS", "1000")),
        corpus_max_bytes=int(os.environ.get("VIZ_MAX_CORPUS_BYTES", str(5 * 1024 * 1024))),
        batch_attention_mb=int(os.environ.get("VIZ_BATCH_ATTENTION_MB", "512")),
        batching=os.environ.get("VIZ_BATCHING", "1").strip().lower() not in ("0", "false", "no", "off"),
        batch_max_size=max(1, int(os.environ.get("VIZ_BATCH_MAX_SIZE", "32"))),
        batch_max_tokens=max(1, int(os.environ.get("VIZ_BATCH_MAX_TOKENS", "4096"))),
        batch_final_pass=_flag("VIZ_BATCH_FINAL_PASS"),
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


def cache_dir() -> Path:
    """Where the embedded models are unpacked once (VIZ_CACHE_DIR, else the XDG cache)."""
    base = os.environ.get("VIZ_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "attention-explorer")
    return Path(base)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE set: never try to reach the hub."""
    return _flag("HF_HUB_OFFLINE")


def environment(*, prefix: str = "VIZ_", names=()) -> dict[str, str]:
    """The variables to hand to worker processes: every ``prefix`` one, plus ``names``."""
    return {k: v for k, v in os.environ.items() if k.startswith(prefix) or k in names}


def browser_path() -> str | None:
    """BROWSER_PATH, the browser kaleido is told to use for static export, if set."""
    return os.environ.get("BROWSER_PATH") or None


SETTINGS = load()

"""The Ray engine of corpus statistics: chunks of texts spread over model-holding Ray actors.

Owns starting (or joining) Ray, one actor per worker that loads the model once (it builds a
:class:`viz.batch.ChunkRunner` from a picklable factory) and runs the chunks it is handed, and the
dispatch loop that keeps every
actor busy (two chunks in flight each) while :func:`viz.corpus.run_corpus` merges the results as
they come back.  The batches are planned exactly as in the local engine, so the numbers agree
with it to float error.

Ray is an optional extra (``pip install -r requirements-ray.txt``), imported only here and only
when this engine runs.  With no address a private local Ray is started for the run and stopped
after it; with ``address`` (``ray://head:10001`` or ``head:6379``) the run joins that cluster and
ships this package's code to it (``runtime_env`` ``py_modules``).  Every node needs the app's
requirements and the model: the embedded one comes with its pip package; a local folder must
exist at the same path on every node; a hub id must be in each node's cache.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from viz import corpus, settings
from viz.models import ModelError

IN_FLIGHT_PER_WORKER = 2     # one chunk running, one waiting: no actor idles between chunks
# The environment a worker needs to load the same model with the same limits as this process.
_PASSED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME")


class _CorpusWorker:
    """One Ray actor: a chunk runner built once (the model loaded once), then chunk after chunk."""

    def __init__(self, make_runner: Callable[[], Callable[[corpus.Chunk], corpus.ChunkResult]], threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.runner = make_runner()

    def ready(self) -> int:
        return os.getpid()

    def run(self, chunk: corpus.Chunk) -> corpus.ChunkResult:
        return self.runner(chunk)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ModelError("--engine ray needs Ray: pip install -r requirements-ray.txt (or pip install ray)") from None
    return ray


def _env_vars() -> dict[str, str]:
    env = settings.environment(prefix="VIZ_", names=_PASSED_ENV)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _one_line(exc: BaseException) -> str:
    """The root cause of a Ray error, one line (Ray wraps a worker's exception with its traceback)."""
    cause = getattr(exc, "cause", None) or exc.__cause__ or exc
    text = str(cause).strip().splitlines()
    line = next((t for t in reversed(text) if t.strip() and not t.startswith(" ")), type(cause).__name__)
    return line[:300]


@contextlib.contextmanager
def ray_session(*, address: str | None = None, workers: int = 2):
    """Ray for the length of one run: a private local instance, or the cluster at ``address``.

    A Ray this process had already started (a notebook's) is used as it is and left running.
    """
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        package = str(Path(__file__).resolve().parent)
        runtime_env = {"env_vars": _env_vars(),
                       "py_modules": [package],
                       "excludes": ["__pycache__", "*.pyc"]}
        options = {"runtime_env": runtime_env, "include_dashboard": False, "log_to_driver": False,
                   "logging_level": "ERROR", "configure_logging": True}
        try:
            if address:
                ray.init(address=address, **options)
            else:
                # A private instance sized for the workers; its object store only carries chunks
                # of text and per-head sums, so a small one leaves memory to the models.
                ray.init(address="local", num_cpus=max(1, workers), object_store_memory=256 * 2**20, **options)
        except Exception as exc:  # noqa: BLE001 - connection errors become one line
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise ModelError(f"cannot start {where}: {_one_line(exc)}") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def start_workers(ray, make_runner, *, workers: int, threads: int = 1) -> list:
    """``workers`` actors, each holding ``make_runner()``; one line if a worker cannot build it."""
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    actor = ray.remote(num_cpus=1)(_CorpusWorker)
    actors = [actor.remote(make_runner, threads) for _ in range(workers)]
    try:
        ray.get([a.ready.remote() for a in actors])
    except Exception as exc:  # noqa: BLE001 - RayActorError / RayTaskError around the real cause
        for a in actors:
            ray.kill(a)
        raise ModelError(f"a Ray worker could not load the model: {_one_line(exc)}") from None
    return actors


def dispatch(ray, actors: list, chunks: Iterator[corpus.Chunk]) -> Iterator[corpus.ChunkResult]:
    """Hand chunks to the actors as they free up; yield each chunk's result as it finishes."""
    pending: dict = {}
    chunks = iter(chunks)

    def submit(actor) -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            pending[actor.run.remote(chunk)] = actor

    for _ in range(IN_FLIGHT_PER_WORKER):
        for actor in actors:
            submit(actor)
    while pending:
        (done,), _ = ray.wait(list(pending), num_returns=1)
        actor = pending.pop(done)
        try:
            result = ray.get(done)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"a Ray worker failed: {_one_line(exc)}") from None
        submit(actor)
        yield result


@contextlib.contextmanager
def ray_engine(make_runner: Callable[[], Callable[[corpus.Chunk], corpus.ChunkResult]], *, workers: int = 2,
               address: str | None = None, threads: int = 1):
    """An engine for :func:`viz.corpus.run_corpus` on Ray: ``with ray_engine(...) as engine: ...``.

    Each of ``workers`` actors (one CPU, ``threads`` torch threads) calls ``make_runner()``
    once, e.g. ``functools.partial(viz.batch.ChunkRunner, model_name, kind=...)``, which
    loads the model there, then runs every chunk it is handed through it.  Leaving the block
    stops the actors (and the local Ray it started); chunks still running are dropped,
    never counted, so a resumed run does them again.
    """
    with ray_session(address=address, workers=workers) as ray:
        actors = start_workers(ray, make_runner, workers=workers, threads=threads)
        try:
            yield lambda chunks: dispatch(ray, actors, chunks)
        finally:
            for actor in actors:
                ray.kill(actor)

"""The Ray engine of corpus statistics: chunks of texts spread over model-holding Ray actors.

Owns starting (or joining) Ray, one actor per worker that loads the model once and runs
:func:`viz.batch.process_chunk` on the chunks it is handed, and the dispatch loop that keeps every
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
from collections.abc import Iterator
from pathlib import Path

from viz import corpus
from viz.models import ModelError

IN_FLIGHT_PER_WORKER = 2     # one chunk running, one waiting: no actor idles between chunks
# The environment a worker needs to load the same model with the same limits as this process.
_PASSED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME")


class _CorpusWorker:
    """One Ray actor: the model loaded once, then chunk after chunk."""

    def __init__(self, model: str | None, kind: str | None, batch_size: int, padding_side: str, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        from viz import batch
        from viz.models import load_model

        self.loaded = load_model(model)
        self.kind = batch.resolve_kind(self.loaded, kind)
        batch.check_padding(self.loaded, padding_side)
        self.batch_size, self.padding_side = batch_size, padding_side

    def ready(self) -> int:
        return os.getpid()

    def run(self, chunk: corpus.Chunk) -> corpus.ChunkResult:
        from viz import batch

        return batch.merge_results(batch.process_chunk(self.loaded, chunk, kind=self.kind,
                                                       batch_size=self.batch_size,
                                                       padding_side=self.padding_side))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ModelError("--engine ray needs Ray: pip install -r requirements-ray.txt (or pip install ray)") from None
    return ray


def _env_vars() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("VIZ_") or k in _PASSED_ENV}
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
        options = dict(runtime_env=runtime_env, include_dashboard=False, log_to_driver=False,
                       logging_level="ERROR", configure_logging=True)
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


def start_workers(ray, *, model: str | None, kind: str | None, batch_size: int, padding_side: str,
                  workers: int, threads: int = 1) -> list:
    """``workers`` actors, each with the model loaded; fails with one line if a worker cannot load it."""
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    actor = ray.remote(num_cpus=1)(_CorpusWorker)
    actors = [actor.remote(model, kind, batch_size, padding_side, threads) for _ in range(workers)]
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
def ray_engine(*, model: str | None, kind: str | None, batch_size: int, padding_side: str = "right",
               workers: int = 2, address: str | None = None, threads: int = 1):
    """An engine for :func:`viz.corpus.run_corpus` on Ray: ``with ray_engine(...) as engine: ...``.

    ``workers`` actors of one CPU each, ``threads`` torch threads each.  Leaving the block
    stops the actors (and the local Ray it started); chunks still running are dropped,
    never counted, so a resumed run does them again.
    """
    with ray_session(address=address, workers=workers) as ray:
        actors = start_workers(ray, model=model, kind=kind, batch_size=batch_size, padding_side=padding_side,
                               workers=workers, threads=threads)
        try:
            yield lambda chunks: dispatch(ray, actors, chunks)
        finally:
            for actor in actors:
                ray.kill(actor)

"""Corpus mode: read a corpus of texts and average head metrics over it.

Owns reading corpora (``.txt`` one text a line, ``.csv``, ``.jsonl`` and
``.parquet`` with a text column) as uploads with size caps or as files
streamed text by text, the built-in sample corpus, and the statistics of a
corpus run: the running per-head sums of :func:`viz.stats.head_metrics`
(:class:`MetricAccumulator`, memory independent of the corpus size), which
texts are done (:class:`CorpusJob`, saved to a JSON state file and resumed),
progress with texts/s and ETA, and the driver :func:`run_corpus` that feeds
chunks of texts to an engine and merges what comes back.  Running the model is
passed in (a function text -> Block, or an engine mapping chunks to
:class:`ChunkResult`), so this module stays free of torch and streamlit.  It
also reads a finished stats CSV back (:func:`read_stats_csv`).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from viz import stats
from viz.result import Block
from viz.settings import SETTINGS

MAX_TEXTS = SETTINGS.corpus_max_texts
MAX_BYTES = SETTINGS.corpus_max_bytes
SAMPLE_CORPUS = Path(__file__).resolve().parent / "data" / "sample_corpus.txt"  # package data
SUFFIXES = (".txt", ".csv", ".jsonl", ".parquet")
MAX_FAILED_KEPT = 100      # failure messages kept (all are counted): memory must not grow with the corpus
STATE_VERSION = 1


class CorpusError(ValueError):
    """The corpus cannot be used; the message is one line a person understands."""


@dataclass(frozen=True)
class Corpus:
    """The texts to average over, after the cap."""

    texts: tuple[str, ...]
    source: str               # file name, or "sample corpus"
    total: int                # non-empty texts found before the cap
    max_texts: int

    @property
    def capped(self) -> bool:
        return self.total > len(self.texts)

    @property
    def message(self) -> str | None:
        """Why texts were left out, or None when all are used."""
        if not self.capped:
            return None
        return (f"{self.source} has {self.total} texts; only the first {len(self.texts)} are used "
                f"(the corpus limit is {self.max_texts} texts).")


def _load(data: bytes | str | Path, name: str | None, max_bytes: int) -> tuple[bytes, str]:
    """(raw bytes, display name) of a path or an upload's bytes, size-checked."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise CorpusError(f"No corpus file at {path}")
        size = path.stat().st_size
        name = name or path.name
        if size > max_bytes:
            raise CorpusError(_too_big(name, size, max_bytes))
        return path.read_bytes(), name
    if not isinstance(data, (bytes, bytearray)):
        raise CorpusError("A corpus is a file path or the bytes of an uploaded file")
    name = name or "upload.txt"
    if len(data) > max_bytes:
        raise CorpusError(_too_big(name, len(data), max_bytes))
    return bytes(data), name


def _too_big(name: str, size: int, max_bytes: int) -> str:
    return (f"{name} is {size / 1e6:.1f} MB; corpus files are limited to "
            f"{max_bytes / 1e6:.1f} MB (use fewer or shorter texts)")


def _suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise CorpusError(f"{name}: a corpus must be a .txt file (one text a line), "
                          f"or a .csv, .jsonl or .parquet file with a text column (pick the column)")
    return suffix


def _not_utf8(name: str) -> CorpusError:
    return CorpusError(f"{name} is not UTF-8 text; save it as UTF-8 and try again")


def _lines(fobj, name: str, *, newline: str | None = None) -> Iterator[str]:
    """Decoded lines of a binary file object (universal newlines unless ``newline``)."""
    reader = io.TextIOWrapper(fobj, encoding="utf-8-sig", newline=newline)
    try:
        # Not `yield from reader`: closing this generator early would then close the reader,
        # and with it the caller's file.
        for line in reader:  # noqa: UP028
            yield line
    except UnicodeDecodeError:
        raise _not_utf8(name) from None
    finally:
        # The caller owns (and closes) the file object: a wrapper left to the garbage collector
        # would close it under the next reader.  Already closed when the generator ends late.
        with contextlib.suppress(ValueError):
            reader.detach()


def _csv_error(name: str, exc: Exception) -> CorpusError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no data"
    return CorpusError(f"{name} is not a readable CSV file ({detail})")


def _csv_header(fobj, name: str) -> list[str]:
    try:
        columns = [str(c) for c in pd.read_csv(fobj, nrows=0, dtype=str, encoding="utf-8-sig").columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise _csv_error(name, exc) from None
    except UnicodeDecodeError:
        raise _not_utf8(name) from None
    fobj.seek(0)
    return columns


def _jsonl_records(fobj, name: str) -> Iterator[tuple[int, object]]:
    # JSON strings may hold U+2028 and friends: only "\n" ends a JSON Lines record.
    for number, line in enumerate(_lines(fobj, name, newline="\n"), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{name} line {number} is not JSON ({exc.msg})") from None


def _parquet(fobj, name: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with the app's requirements
        raise CorpusError("reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        return pq.ParquetFile(fobj)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorpusError(f"{name} is not a readable Parquet file ({detail[:200]})") from None


def _columns(fobj, suffix: str, name: str) -> list[str]:
    """The columns of a table corpus ([] for .txt); leaves ``fobj`` at its start."""
    if suffix == ".csv":
        return _csv_header(fobj, name)
    if suffix == ".parquet":
        columns = list(_parquet(fobj, name).schema_arrow.names)
    elif suffix == ".jsonl":
        columns = []
        for _, record in _jsonl_records(fobj, name):
            columns = [str(k) for k in record] if isinstance(record, dict) else []
            break
    else:
        columns = []
    fobj.seek(0)
    return columns


def _pick_column(columns: list[str], column: str | None, name: str) -> str:
    if column is None:
        if len(columns) != 1:
            raise CorpusError(f"{name} has several columns; pick the one holding the texts: "
                              f"{', '.join(columns)}")
        return columns[0]
    if column not in columns:
        raise CorpusError(f"{name} has no column {column!r} (columns: {', '.join(columns)})")
    return column


def _resolve_column(fobj, suffix: str, name: str, column: str | None) -> str | None:
    """The text column (None for .txt and for JSON Lines of bare strings)."""
    if suffix == ".txt":
        return None
    columns = _columns(fobj, suffix, name)
    if suffix == ".jsonl" and not columns:
        return None
    if suffix == ".csv" and not columns:
        raise CorpusError(f"{name} is not a readable CSV file (no data)")
    return _pick_column(columns, column, name)


def _raw_texts(fobj, suffix: str, name: str, column: str | None) -> Iterator[object]:
    """Every cell / line / record of the text column, in file order (not yet cleaned)."""
    if suffix == ".txt":
        for line in _lines(fobj, name):
            yield from line.splitlines()   # the same line breaks as str.splitlines on the whole file
    elif suffix == ".csv":
        try:
            for frame in pd.read_csv(fobj, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                                     usecols=[column], chunksize=10_000):
                yield from frame[column].tolist()
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise _csv_error(name, exc) from None
        except UnicodeDecodeError:
            raise _not_utf8(name) from None
    elif suffix == ".jsonl":
        for number, record in _jsonl_records(fobj, name):
            if isinstance(record, dict):
                yield record.get(column) if column is not None else None
            elif isinstance(record, str) and column is None:
                yield record
            else:
                raise CorpusError(f"{name} line {number}: expected a JSON object with a {column!r} field"
                                  if column else f"{name} line {number}: expected a JSON string")
    else:
        for batch in _parquet(fobj, name).iter_batches(columns=[column], batch_size=8192):
            yield from batch.column(0).to_pylist()


def _texts(fobj, suffix: str, name: str, column: str | None) -> Iterator[str]:
    """The non-empty, stripped texts of a corpus file object, in file order."""
    for value in _raw_texts(fobj, suffix, name, column):
        if value is None:
            continue
        text = str(value).strip()
        if text:
            yield text


def csv_columns(data: bytes | str | Path, *, name: str | None = None,
                max_bytes: int = MAX_BYTES) -> list[str]:
    """The column names of a table corpus (.csv, .jsonl, .parquet), for the column picker."""
    raw, name = _load(data, name, max_bytes)
    return _columns(io.BytesIO(raw), _suffix(name), name)


def read_corpus(data: bytes | str | Path, *, name: str | None = None, column: str | None = None,
                max_texts: int = MAX_TEXTS, max_bytes: int = MAX_BYTES) -> Corpus:
    """Read a ``.txt`` (one text a line), ``.csv``, ``.jsonl`` or ``.parquet`` (``column``) corpus.

    ``data`` is a path, or an upload's bytes with its file ``name``.  Blank
    lines and empty cells are skipped; beyond ``max_texts`` texts only the
    first ones are kept and :attr:`Corpus.message` says so; a file larger than
    ``max_bytes`` is refused with :class:`CorpusError`.  A table with one
    column needs no ``column``.  For files too big to hold, see :func:`open_corpus`.
    """
    raw, name = _load(data, name, max_bytes)
    suffix = _suffix(name)
    fobj = io.BytesIO(raw)
    texts = list(_texts(fobj, suffix, name, _resolve_column(fobj, suffix, name, column)))
    if not texts:
        raise CorpusError(f"{name} holds no texts")
    if max_texts < 1:
        raise CorpusError("The corpus limit must be at least 1 text")
    return Corpus(tuple(texts[:max_texts]), name, len(texts), max_texts)


@dataclass(frozen=True)
class CorpusSource:
    """A corpus file read text by text, never held whole (no size cap: the CLI's offline runs).

    Iterating yields the non-empty stripped texts in file order, the same texts
    :func:`read_corpus` gives; each iteration reads the file again.
    """

    path: Path
    column: str | None        # the text column (None for .txt)
    name: str                 # file name, for messages

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb") as fobj:
            yield from _texts(fobj, self.path.suffix.lower(), self.name, self.column)

    def count(self) -> int:
        """How many texts there are (one pass over the file, for progress and ETA)."""
        return sum(1 for _ in self)

    def fingerprint(self) -> dict:
        """What a resumed run must agree on: the file (path and size) and the column."""
        return {"corpus": str(self.path.resolve()), "column": self.column, "bytes": self.path.stat().st_size}


def open_corpus(path: str | Path, *, column: str | None = None) -> CorpusSource:
    """Check a corpus file (exists, format, text column, at least one text) and return its source."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"No corpus file at {path}")
    suffix = _suffix(path.name)
    with open(path, "rb") as fobj:
        resolved = _resolve_column(fobj, suffix, path.name, column)
    source = CorpusSource(path, resolved, path.name)
    if next(iter(source), None) is None:
        raise CorpusError(f"{path.name} holds no texts")
    return source


def sample_corpus(*, max_texts: int = MAX_TEXTS) -> Corpus:
    """The built-in sample corpus shipped in ``viz/data/sample_corpus.txt``."""
    corpus = read_corpus(SAMPLE_CORPUS, max_texts=max_texts)
    return Corpus(corpus.texts, "sample corpus", corpus.total, max_texts)


def word_pool() -> list[str]:
    """Lower-case words of the sample corpus: a clean word list for random test sequences."""
    words = re.findall(r"[a-z]+", SAMPLE_CORPUS.read_text(encoding="utf-8").lower())
    return sorted(set(words))


@dataclass
class MetricAccumulator:
    """Running per-head sums of :func:`viz.stats.head_metrics` over texts, and their means.

    Mutable on purpose: a UI keeps it between reruns so a stopped or
    interrupted run keeps what it had computed.  Each text weighs the same.
    Memory is one (heads x metrics) array of sums and one of counts, whatever
    the number of texts; partial accumulators (one per batch or worker) add up
    with :meth:`merge`.
    """

    sums: np.ndarray | None = None       # (n_layers * n_heads, n_metrics) float64
    counts: np.ndarray | None = None     # same shape: texts where the metric is defined
    index: pd.DataFrame | None = None    # layer, head
    n_texts: int = 0
    failed: list[str] = field(default_factory=list)   # the first MAX_FAILED_KEPT messages
    n_failed: int = 0                    # every text that could not be analysed
    metrics: tuple[str, ...] = field(default_factory=lambda: tuple(stats.METRICS))

    def add(self, frame: pd.DataFrame) -> None:
        """Add one text's per-head metrics (a :func:`viz.stats.head_metrics` frame)."""
        # Column by column: frame[list].to_numpy() costs a few times more, once per text.
        values = np.column_stack([frame[name].to_numpy(dtype=float) for name in self.metrics])
        defined = ~np.isnan(values)
        self._add(np.where(defined, values, 0.0), defined.astype(float), 1,
                  lambda: frame[["layer", "head"]].reset_index(drop=True))

    def add_values(self, values: dict[str, np.ndarray]) -> None:
        """Add one text's metrics as :func:`viz.stats.metric_values` gives them (no pandas per text)."""
        n_layers, n_heads = np.shape(values[self.metrics[0]])
        grid = np.column_stack([np.asarray(values[name], dtype=float).reshape(-1) for name in self.metrics])
        defined = ~np.isnan(grid)
        self._add(np.where(defined, grid, 0.0), defined.astype(float), 1,
                  lambda: pd.DataFrame(dict(zip(("layer", "head"),
                                                np.divmod(np.arange(n_layers * n_heads), n_heads)))))

    def _add(self, sums: np.ndarray, counts: np.ndarray, n_texts: int, index) -> None:
        if self.sums is None:
            self.sums = np.zeros_like(sums, dtype=float)
            self.counts = np.zeros_like(counts, dtype=float)
            self.index = index()
        elif sums.shape != self.sums.shape:
            raise CorpusError(f"texts disagree on the number of heads "
                              f"({sums.shape[0]} vs {self.sums.shape[0]})")
        self.sums += sums
        self.counts += counts
        self.n_texts += n_texts

    def fail(self, message: str) -> None:
        """Count a text that could not be analysed (its message kept while there are few)."""
        self.n_failed += 1
        if len(self.failed) < MAX_FAILED_KEPT:
            self.failed.append(message)

    def merge(self, other: MetricAccumulator) -> None:
        """Add another accumulator's texts (a batch's, a worker's) to this one."""
        if tuple(other.metrics) != tuple(self.metrics):
            raise CorpusError(f"partial results disagree on the metrics ({', '.join(other.metrics)})")
        if other.sums is not None:
            self._add(other.sums, other.counts, other.n_texts, lambda: other.index.copy())
        self.n_failed += other.n_failed
        self.failed.extend(other.failed[:max(0, MAX_FAILED_KEPT - len(self.failed))])

    def table(self) -> pd.DataFrame:
        """``layer``, ``head``, the mean metrics and ``n_texts``."""
        if self.sums is None:
            raise CorpusError("No text of the corpus could be analysed")
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)
        table = self.index.copy()
        for k, name in enumerate(self.metrics):
            table[name] = means[:, k]
        table["n_texts"] = self.n_texts
        return table

    def to_dict(self) -> dict:
        """Plain JSON-able data (Python's float repr round-trips exactly)."""
        have = self.sums is not None
        return {"metrics": list(self.metrics), "n_texts": self.n_texts, "n_failed": self.n_failed,
                "failed": list(self.failed),
                "layer": self.index["layer"].astype(int).tolist() if have else None,
                "head": self.index["head"].astype(int).tolist() if have else None,
                "sums": self.sums.tolist() if have else None,
                "counts": self.counts.tolist() if have else None}

    @classmethod
    def from_dict(cls, data: dict) -> MetricAccumulator:
        acc = cls(n_texts=int(data["n_texts"]), failed=list(data["failed"]), n_failed=int(data["n_failed"]),
                  metrics=tuple(data["metrics"]))
        if data["sums"] is not None:
            acc.sums = np.asarray(data["sums"], dtype=float)
            acc.counts = np.asarray(data["counts"], dtype=float)
            acc.index = pd.DataFrame({"layer": np.asarray(data["layer"], dtype=np.int64),
                                      "head": np.asarray(data["head"], dtype=np.int64)})
        return acc


@dataclass(frozen=True)
class CorpusStats:
    """Mean head metrics over (part of) a corpus."""

    table: pd.DataFrame       # layer, head, METRICS (means over texts), n_texts
    n_done: int               # texts analysed
    n_total: int              # texts asked for
    stopped: bool             # the stop flag ended the run early
    failed: tuple[str, ...]   # one message per text that could not be analysed (the first ones)
    n_truncated: int = 0      # texts cut at the model's token limit
    max_dropped: int = 0      # most tokens cut from one text
    n_failed: int = 0         # texts that could not be analysed (all of them, not only the first)


def corpus_metrics(texts: Iterable[str], run: Callable[[str], Block], *,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   into: MetricAccumulator | None = None) -> CorpusStats:
    """Mean :func:`viz.stats.head_metrics` over ``texts``, one text at a time.

    ``run(text)`` returns the Block to measure (the caller captures).
    ``progress(done, total)`` is called after each text; ``should_stop()`` is
    checked before each text.  Pass ``into`` to continue an earlier run.  A text
    whose run raises ``ValueError`` (bad input) is skipped and reported in
    ``failed``; other errors (the model itself) propagate.  For large corpora
    :func:`run_corpus` with a batched engine (:mod:`viz.batch`) is the fast path.
    """
    texts = list(texts)
    acc = into if into is not None else MetricAccumulator()
    stopped = False
    done = 0
    for k, text in enumerate(texts):
        if should_stop is not None and should_stop():
            stopped = True
            break
        try:
            acc.add(stats.head_metrics(run(text)))
        except CorpusError:
            raise
        except ValueError as exc:
            acc.fail(f"text {k + 1}: {exc}")
        done = k + 1
        if progress is not None:
            progress(done, len(texts))
    return CorpusStats(acc.table(), done, len(texts), stopped, tuple(acc.failed), n_failed=acc.n_failed)


# --------------------------------------------------------------------------- long runs

Chunk = list[tuple[int, str]]    # (position in the corpus, text), in corpus order


@dataclass
class ChunkResult:
    """What an engine returns for (part of) a chunk: the texts it covered and their sums."""

    indices: tuple[int, ...]             # corpus positions analysed or failed
    acc: MetricAccumulator
    n_truncated: int = 0
    max_dropped: int = 0


@dataclass
class CorpusJob:
    """A corpus run that can stop and go on: the running sums and which texts are done.

    ``key`` says what the run is about (corpus, column, model, block, metrics);
    a state file is only resumed for the same key.  Done texts are kept as
    "everything before ``next_index``" plus the few done beyond it (engines
    finish chunks out of order), so the state stays small.
    """

    key: dict = field(default_factory=dict)
    acc: MetricAccumulator = field(default_factory=MetricAccumulator)
    next_index: int = 0                                   # every text before it is done
    done_after: set[int] = field(default_factory=set)     # done texts at or after next_index
    n_truncated: int = 0
    max_dropped: int = 0

    @property
    def n_done(self) -> int:
        return self.next_index + len(self.done_after)

    def is_done(self, index: int) -> bool:
        return index < self.next_index or index in self.done_after

    def record(self, result: ChunkResult) -> None:
        self.acc.merge(result.acc)
        self.n_truncated += result.n_truncated
        self.max_dropped = max(self.max_dropped, result.max_dropped)
        self.done_after.update(i for i in result.indices if i >= self.next_index)
        while self.next_index in self.done_after:
            self.done_after.remove(self.next_index)
            self.next_index += 1

    def to_dict(self) -> dict:
        return {"version": STATE_VERSION, "key": self.key, "next_index": self.next_index,
                "done_after": sorted(self.done_after), "n_truncated": self.n_truncated,
                "max_dropped": self.max_dropped, "acc": self.acc.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> CorpusJob:
        if data.get("version") != STATE_VERSION:
            raise CorpusError("the state file was written by another version; start again without --resume")
        return cls(key=data["key"], acc=MetricAccumulator.from_dict(data["acc"]),
                   next_index=int(data["next_index"]), done_after={int(i) for i in data["done_after"]},
                   n_truncated=int(data["n_truncated"]), max_dropped=int(data["max_dropped"]))

    def save(self, path: str | Path) -> None:
        """Write the state atomically: an interruption mid-write leaves the previous state."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, key: dict) -> CorpusJob:
        """The job saved at ``path``; refused when it was made for another corpus, model or block."""
        path = Path(path)
        try:
            job = cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorpusError(f"cannot resume from {path.name}: {exc}") from None
        differs = [k for k in sorted(set(key) | set(job.key)) if key.get(k) != job.key.get(k)]
        if differs:
            raise CorpusError(f"{path.name} belongs to another run ({', '.join(differs)} differ); "
                              f"delete it or run without --resume")
        return job


@dataclass(frozen=True)
class Progress:
    """Where a corpus run is: texts done (resumed ones included), speed of this run, ETA."""

    done: int
    total: int | None
    new: int                  # texts analysed since this run started
    elapsed_s: float          # since this run started

    @property
    def texts_per_s(self) -> float:
        return self.new / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.total is None or self.texts_per_s <= 0:
            return None
        return max(0, self.total - self.done) / self.texts_per_s

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def line(self) -> str:
        """``1,200 / 2,000 texts, 85.3 texts/s, ETA 9 s``"""
        total = f" / {self.total:,}" if self.total is not None else ""
        eta = self.eta_s
        eta = "" if eta is None else f", ETA {_duration(eta)}"
        return f"{self.done:,}{total} texts, {self.texts_per_s:.1f} texts/s{eta}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def chunks_of(texts: Iterable[str], job: CorpusJob, size: int, *, max_texts: int | None = None,
              should_stop: Callable[[], bool] | None = None) -> Iterator[Chunk]:
    """The texts not yet done, in corpus order, ``size`` at a time (stops when asked)."""
    if size < 1:
        raise CorpusError("the chunk size must be at least 1")
    chunk: Chunk = []
    for index, text in enumerate(itertools.islice(texts, max_texts)):
        if job.is_done(index):
            continue
        chunk.append((index, text))
        if len(chunk) == size:
            if should_stop is not None and should_stop():
                return
            yield chunk
            chunk = []
    if chunk and not (should_stop is not None and should_stop()):
        yield chunk


Engine = Callable[[Iterator[Chunk]], Iterator[ChunkResult]]


def run_corpus(texts: Iterable[str], engine: Engine, *, job: CorpusJob | None = None, chunk_size: int = 64,
               total: int | None = None, max_texts: int | None = None,
               progress: Callable[[Progress], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               state_path: str | Path | None = None, save_every_s: float = 30.0,
               clock: Callable[[], float] = time.monotonic) -> CorpusStats:
    """Mean head metrics over a corpus, streamed through ``engine`` in chunks.

    ``engine(chunks)`` maps an iterator of chunks to an iterator of
    :class:`ChunkResult` (in any order, each covering any part of a chunk);
    its sums are merged into ``job`` as they come, so memory does not grow
    with the corpus.  ``progress(Progress)`` is called after each result.
    ``should_stop()`` is checked before each chunk is handed out and after each
    result.  With ``state_path`` the job is saved every ``save_every_s`` and
    when the run ends for any reason (stop, error, Ctrl-C); pass the loaded
    job back (:meth:`CorpusJob.load`) to go on where it was.
    """
    job = job if job is not None else CorpusJob()
    done_before, started = job.n_done, clock()
    last_save = started
    results = engine(chunks_of(texts, job, chunk_size, max_texts=max_texts, should_stop=should_stop))
    try:
        for result in results:
            job.record(result)
            now = clock()
            if progress is not None:
                progress(Progress(job.n_done, total, job.n_done - done_before, now - started))
            if state_path is not None and now - last_save >= save_every_s:
                job.save(state_path)
                last_save = now
            if should_stop is not None and should_stop():
                break
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
        if state_path is not None and job.n_done:    # nothing done: nothing worth resuming
            job.save(state_path)
    n_total = total if total is not None else job.n_done
    stopped = should_stop is not None and should_stop() and job.n_done < n_total
    return CorpusStats(job.acc.table(), job.n_done, n_total, bool(stopped), tuple(job.acc.failed),
                       job.n_truncated, job.max_dropped, job.acc.n_failed)


# --------------------------------------------------------------------------- finished CSV files

def read_stats_csv(data: bytes | str | Path, *, name: str | None = None,
                   max_bytes: int = MAX_BYTES) -> pd.DataFrame:
    """A finished ``python -m viz stats --corpus`` CSV, as the corpus tab's per-head table.

    Returns ``layer``, ``head``, the :data:`viz.stats.METRICS` (NaN for a
    metric the file lacks, e.g. one added after it was written), ``n_texts``,
    then any other numeric columns (detector scores), sorted by layer and head.
    Refuses, with one line a person understands, a file that is not one row per
    head of a full (n_layers x n_heads) grid.
    """
    raw, name = _load(data, name or "stats.csv", max_bytes)
    try:
        frame = pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise _csv_error(name, exc) from None
    except UnicodeDecodeError:
        raise _not_utf8(name) from None
    missing = [c for c in ("layer", "head", "n_texts") if c not in frame.columns]
    if missing:
        raise CorpusError(f"{name} is not a corpus statistics file from `python -m viz stats --corpus` "
                          f"(no {', '.join(missing)} column)")
    known = [m for m in stats.METRICS if m in frame.columns]
    if not known:
        raise CorpusError(f"{name} has none of the head metrics ({', '.join(stats.METRICS)})")
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise CorpusError(f"{name}: column {column!r} holds non-numbers")
    layer, head = frame["layer"].to_numpy(), frame["head"].to_numpy()
    if not (np.all(np.isfinite(layer)) and np.all(np.isfinite(head))
            and np.all(layer == np.round(layer)) and np.all(head == np.round(head))
            and layer.min() >= 0 and head.min() >= 0):
        raise CorpusError(f"{name}: layer and head must be whole numbers from 0")
    frame["layer"], frame["head"] = layer.astype(np.int64), head.astype(np.int64)
    n_layers, n_heads = int(frame["layer"].max()) + 1, int(frame["head"].max()) + 1
    if frame.duplicated(["layer", "head"]).any() or len(frame) != n_layers * n_heads:
        raise CorpusError(f"{name} must have one row per head ({n_layers} layers x {n_heads} heads = "
                          f"{n_layers * n_heads} rows), it has {len(frame)}")
    for metric in stats.METRICS:
        if metric not in frame.columns:
            frame[metric] = np.nan
    extra = [c for c in frame.columns if c not in ("layer", "head", "n_texts", *stats.METRICS)]
    frame = frame[["layer", "head", *stats.METRICS, "n_texts", *extra]]
    return frame.sort_values(["layer", "head"], kind="stable").reset_index(drop=True)

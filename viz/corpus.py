"""Corpus mode: read a corpus of texts and average head metrics over it.

Owns reading ``.txt`` (one text a line) and ``.csv`` (a chosen column) files
or uploads, the size caps and their messages, the built-in sample corpus, and
the running mean of :func:`viz.stats.head_metrics` over many texts with a
progress callback and a stop flag.  Running the model is passed in as a
function (text -> Block), so this module stays free of torch and streamlit.
"""
from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from viz import stats
from viz.result import Block

MAX_TEXTS = int(os.environ.get("VIZ_MAX_CORPUS_TEXTS", "1000"))
MAX_BYTES = int(os.environ.get("VIZ_MAX_CORPUS_BYTES", str(5 * 1024 * 1024)))
SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "data" / "sample_corpus.txt"
SUFFIXES = (".txt", ".csv")


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


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CorpusError(f"{name} is not UTF-8 text; save it as UTF-8 and try again") from None


def _suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise CorpusError(f"{name}: a corpus must be a .txt file (one text a line) "
                          f"or a .csv file (pick the column)")
    return suffix


def _read_csv(text: str, name: str) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no data"
        raise CorpusError(f"{name} is not a readable CSV file ({detail})") from None


def csv_columns(data: bytes | str | Path, *, name: str | None = None,
                max_bytes: int = MAX_BYTES) -> list[str]:
    """The column names of a CSV corpus, for the column picker."""
    raw, name = _load(data, name, max_bytes)
    return [str(c) for c in _read_csv(_decode(raw, name), name).columns]


def read_corpus(data: bytes | str | Path, *, name: str | None = None, column: str | None = None,
                max_texts: int = MAX_TEXTS, max_bytes: int = MAX_BYTES) -> Corpus:
    """Read a ``.txt`` (one text a line) or ``.csv`` (``column``) corpus.

    ``data`` is a path, or an upload's bytes with its file ``name``.  Blank
    lines and empty cells are skipped; beyond ``max_texts`` texts only the
    first ones are kept and :attr:`Corpus.message` says so; a file larger than
    ``max_bytes`` is refused with :class:`CorpusError`.
    """
    raw, name = _load(data, name, max_bytes)
    suffix = _suffix(name)
    content = _decode(raw, name)
    if suffix == ".txt":
        texts = [line.strip() for line in content.splitlines()]
    else:
        frame = _read_csv(content, name)
        columns = [str(c) for c in frame.columns]
        if column is None:
            if len(columns) != 1:
                raise CorpusError(f"{name} has several columns; pick the one holding the texts: "
                                  f"{', '.join(columns)}")
            column = columns[0]
        if column not in columns:
            raise CorpusError(f"{name} has no column {column!r} (columns: {', '.join(columns)})")
        texts = [str(v).strip() for v in frame[column].tolist()]
    texts = [t for t in texts if t]
    if not texts:
        raise CorpusError(f"{name} holds no texts")
    if max_texts < 1:
        raise CorpusError("The corpus limit must be at least 1 text")
    return Corpus(tuple(texts[:max_texts]), name, len(texts), max_texts)


def sample_corpus(*, max_texts: int = MAX_TEXTS) -> Corpus:
    """The built-in sample corpus shipped in ``data/sample_corpus.txt``."""
    corpus = read_corpus(SAMPLE_CORPUS, max_texts=max_texts)
    return Corpus(corpus.texts, "sample corpus", corpus.total, max_texts)


def word_pool() -> list[str]:
    """Lower-case words of the sample corpus: a clean word list for random test sequences."""
    words = re.findall(r"[a-z]+", SAMPLE_CORPUS.read_text(encoding="utf-8").lower())
    return sorted(set(words))


@dataclass
class MetricAccumulator:
    """Running per-head mean of :func:`viz.stats.head_metrics` over texts.

    Mutable on purpose: a UI keeps it between reruns so a stopped or
    interrupted run keeps what it had computed.  Each text weighs the same.
    """

    sums: np.ndarray | None = None       # (n_layers * n_heads, n_metrics)
    counts: np.ndarray | None = None     # same shape: texts where the metric is defined
    index: pd.DataFrame | None = None    # layer, head
    n_texts: int = 0
    failed: list[str] = field(default_factory=list)

    def add(self, frame: pd.DataFrame) -> None:
        values = frame[list(stats.METRICS)].to_numpy(dtype=float)
        if self.sums is None:
            self.sums = np.zeros_like(values)
            self.counts = np.zeros_like(values)
            self.index = frame[["layer", "head"]].reset_index(drop=True)
        elif values.shape != self.sums.shape:
            raise CorpusError(f"texts disagree on the number of heads "
                              f"({values.shape[0]} vs {self.sums.shape[0]})")
        defined = ~np.isnan(values)
        self.sums += np.where(defined, values, 0.0)
        self.counts += defined
        self.n_texts += 1

    def table(self) -> pd.DataFrame:
        """``layer``, ``head``, the mean metrics and ``n_texts``."""
        if self.sums is None:
            raise CorpusError("No text of the corpus could be analysed")
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)
        table = self.index.copy()
        for k, name in enumerate(stats.METRICS):
            table[name] = means[:, k]
        table["n_texts"] = self.n_texts
        return table


@dataclass(frozen=True)
class CorpusStats:
    """Mean head metrics over (part of) a corpus."""

    table: pd.DataFrame       # layer, head, METRICS (means over texts), n_texts
    n_done: int               # texts analysed
    n_total: int              # texts asked for
    stopped: bool             # the stop flag ended the run early
    failed: tuple[str, ...]   # one message per text that could not be analysed


def corpus_metrics(texts: Iterable[str], run: Callable[[str], Block], *,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   into: MetricAccumulator | None = None) -> CorpusStats:
    """Mean :func:`viz.stats.head_metrics` over ``texts``.

    ``run(text)`` returns the Block to measure (the caller captures).
    ``progress(done, total)`` is called after each text; ``should_stop()`` is
    checked before each text.  Pass ``into`` to continue an earlier run.  A text
    whose run raises ``ValueError`` (bad input) is skipped and reported in
    ``failed``; other errors (the model itself) propagate.
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
            acc.failed.append(f"text {k + 1}: {exc}")
        done = k + 1
        if progress is not None:
            progress(done, len(texts))
    return CorpusStats(acc.table(), done, len(texts), stopped, tuple(acc.failed))

"""A thread-safe LRU cache bounded by bytes, for results shared by every session.

st.cache_data pickles and copies a value on every hit (75 MB for one 512-token
result of a 6x12 model); results are frozen with read-only arrays, so sessions
can share one object instead, and the bound is on memory, not on entries.
"""
from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import fields, is_dataclass

import numpy as np


def nbytes(value) -> int:
    """Approximate memory held by a result: the sum of its numpy arrays (and tables)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    held = getattr(value, "nbytes", None)
    if isinstance(held, int) and not is_dataclass(value):   # viz.result.LazyPattern: what it holds
        return held
    if hasattr(value, "memory_usage") and hasattr(value, "columns"):   # a pandas DataFrame
        return int(value.memory_usage(index=True, deep=True).sum())
    if is_dataclass(value):
        return sum(nbytes(getattr(value, f.name)) for f in fields(value))
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


def freeze_arrays(value) -> None:
    """Make every numpy array inside ``value`` read-only, so a shared result cannot be changed by one session."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif is_dataclass(value):
        for f in fields(value):
            freeze_arrays(getattr(value, f.name))
    elif isinstance(value, dict):
        for v in value.values():
            freeze_arrays(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            freeze_arrays(v)


class ByteLRU:
    """Least-recently-used cache whose total size stays under ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value) -> None:
        # Every entry counts at least a little, so entries holding no arrays stay bounded too.
        size = max(nbytes(value), 1024)
        if size > self.max_bytes:
            return  # larger than the whole cache: serve it, do not keep it
        freeze_arrays(value)
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes and self._items:
                _, (_, old) = self._items.popitem(last=False)
                self.bytes -= old

    def get_or_compute(self, key: Hashable, compute: Callable[[], object]):
        """One computation per key even when many sessions ask at once (a class pressing Run together)."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            value = self.get(key)
            if value is None:
                self.misses += 1
                value = compute()
                self.put(key, value)
        with self._lock:
            self._key_locks.pop(key, None)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


_TRIM = {"last": 0.0}
_TRIM_LOCK = threading.Lock()


def release_free_memory(*, every_s: float = 1.0) -> None:
    """Give freed heap memory back to the OS (glibc's ``malloc_trim``), at most once per ``every_s``.

    A long input's page frees buffers of tens of MB (one head's rows, a layer's scores); glibc keeps
    such memory in the heap and in each thread's arena, so a server's RSS would stay at its highest
    point though nothing holds it.  Not glibc (macOS, musl): nothing to do.
    """
    now = time.monotonic()
    with _TRIM_LOCK:
        if now - _TRIM["last"] < every_s:
            return
        _TRIM["last"] = now
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


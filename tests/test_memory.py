"""viz.cache: the byte-bounded LRU shared by sessions, and handing freed memory back to the OS."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from viz.cache import ByteLRU, release_free_memory


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_lru_stays_under_its_bytes_and_drops_the_oldest():
    cache = ByteLRU(3 * 8_000)
    for i in range(5):
        cache.put(i, np.zeros(1_000))            # 8,000 bytes each
    assert cache.bytes <= cache.max_bytes and len(cache) == 3
    assert cache.get(0) is None and cache.get(4) is not None
    cache.put("huge", np.zeros(10_000))           # larger than the whole cache: served, not kept
    assert cache.get("huge") is None and len(cache) == 3


def test_freed_arena_memory_goes_back_to_the_os():
    """What a page thread frees in pieces of 128 kB (one head's rows, say) stays in RSS until trimmed."""
    kept = []

    def page_run():
        big = []
        for _ in range(2000):
            big.append(np.ones(16_000))           # 128 kB each, 256 MB in all, from this thread's arena
            kept.append(np.ones(10))              # small survivors between them: the heap cannot shrink
        del big

    before = rss_mb()
    thread = threading.Thread(target=page_run)
    thread.start()
    thread.join()
    held = rss_mb() - before
    release_free_memory(every_s=0)
    after = rss_mb() - before
    assert held > 100, f"glibc returned the memory by itself ({held:.0f} MB held): the test shows nothing"
    assert after < held - 100, (held, after)

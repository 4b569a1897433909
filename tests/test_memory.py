"""viz.cache: the byte-bounded LRU shared by sessions, and handing freed memory back to the OS."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from viz.cache import ByteLRU, release_free_memory


def test_lru_stays_under_its_bytes_and_drops_the_oldest():
    cache = ByteLRU(3 * 8_000)
    for i in range(5):
        cache.put(i, np.zeros(1_000))            # 8,000 bytes each
    assert cache.bytes <= cache.max_bytes and len(cache) == 3
    assert cache.get(0) is None and cache.get(4) is not None
    cache.put("huge", np.zeros(10_000))           # larger than the whole cache: served, not kept
    assert cache.get("huge") is None and len(cache) == 3


# Run in a fresh interpreter: how much freed memory glibc keeps depends on everything the process
# allocated before, so inside a long test session the effect can be hidden.
_PAGE_RUN = """
import threading
from pathlib import Path
import numpy as np
from viz.cache import release_free_memory

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

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
print(held, rss_mb() - before)
"""


def test_freed_arena_memory_goes_back_to_the_os():
    """What a page thread frees in pieces of 128 kB (one head's rows, say) stays in RSS until trimmed."""
    out = subprocess.run([sys.executable, "-c", _PAGE_RUN], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    held, after = map(float, out.stdout.split())
    assert held > 100, f"glibc returned the memory by itself ({held:.0f} MB held): the test shows nothing"
    assert after < held - 100, (held, after)


def test_trimming_is_throttled(monkeypatch):
    """At most one malloc_trim(0) per ``every_s``, however many script runs end at once."""
    from viz import cache
    calls = []
    monkeypatch.setattr(cache, "_malloc_trim", lambda: calls.append)
    monkeypatch.setitem(cache._TRIM, "last", 0.0)
    for _ in range(5):
        release_free_memory(every_s=60)
    assert calls == [0]

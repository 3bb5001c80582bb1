"""Peak resident memory of a stretch of work, for the benches (not a test).

`PeakRSS`: the kernel's high-water mark (VmHWM after resetting it through /proc/self/clear_refs)
above the RSS at `start()`, after garbage collection and glibc `malloc_trim(0)`; a 1 ms psutil
sampling thread where clear_refs is not writable. `allocations_back_to_the_os`: glibc thresholds
that make that peak the peak of live memory. Used by bench/forking_mask.py and
bench/forking_head_memory.py.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time

__all__ = ["PeakRSS", "allocations_back_to_the_os", "status_kib"]


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Peak RSS (bytes) above the RSS at `start()`; kernel high-water mark, or a sampling thread."""

    def __init__(self):
        self._libc = ctypes.CDLL("libc.so.6")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM"
        except OSError:
            import psutil

            self.method, self._proc = "psutil-1ms", psutil.Process()
        self._thread = None

    def start(self):
        gc.collect()
        self._libc.malloc_trim(0)
        self.base = status_kib("VmRSS") * 1024
        if self.method == "VmHWM":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        else:
            self._peak, self._stop = self.base, False
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self):
        while not self._stop:
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(0.001)

    def stop(self) -> int:
        if self.method == "VmHWM":
            peak = status_kib("VmHWM") * 1024
        else:
            self._stop = True
            self._thread.join()
            peak = self._peak
        return peak - self.base


def allocations_back_to_the_os(threshold: int = 64 * 1024) -> None:
    """From now on glibc serves every allocation >= `threshold` bytes with its own mmap and unmaps it
    on free (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD), so resident memory follows the live tensors instead
    of what the heap kept from earlier frees. Call it first thing in the memory child: chunks the heap
    already holds would be reused without it, and the timing child keeps glibc's defaults (a page
    fault on each large allocation would tax the side with more temporaries)."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_mmap_threshold, threshold) and libc.mallopt(m_trim_threshold, threshold)):
        raise RuntimeError("mallopt refused the mmap/trim thresholds (not glibc?)")

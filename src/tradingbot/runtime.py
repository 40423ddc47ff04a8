"""Process-wide settings for training: torch threads and how glibc's malloc keeps freed memory.

Every minibatch, PyTorch on CPU allocates and frees the LSTMs' workspaces and the activations
(hundreds of KiB to a few MiB each, tens of MiB together). With glibc's defaults, blocks above
a dynamic mmap threshold are fresh ``mmap`` calls, and once more than the trim threshold (twice
the mmap threshold) lies free at the top of the heap it goes back to the OS. Either way the
next update page-faults the same memory in again: on these machines up to 3,000 faults per
update, a quarter of its time, depending on the allocation history. Fixed, high thresholds keep
freed memory in the process for reuse; the cost is that the process does not shrink after its
peak.
"""

from __future__ import annotations

import ctypes
import sys

import torch

from tradingbot.config import RunConfig

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at 32 MiB on 64-bit: larger blocks are always mmapped.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30


def retain_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Set glibc's mmap and trim thresholds for the whole process (``mallopt``), so that blocks
    up to ``mmap_threshold`` bytes come from the heap and up to ``trim_threshold`` bytes of free
    heap stay mapped. Returns False, changing nothing, where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # glibc's soname; find_library would run ldconfig in a subprocess on every call.
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold) and mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    )


def configure_process(run: RunConfig) -> None:
    """Apply a run's process settings: ``torch_threads`` and ``retain_freed_memory``."""
    torch.set_num_threads(run.torch_threads)
    if run.retain_freed_memory:
        retain_freed_memory()

"""The worker process's allocator: large transient buffers go back to the system.

Why: an inline 20 MB body passes through the worker as a few short-lived buffers of its
size (Redis's reply, its decoded text, the parsed payload, a database parameter). glibc
maps such a buffer on its own, but when it is freed glibc raises its mmap threshold to
that size (the "dynamic threshold"), so the next ones come from the heap, which it keeps:
a worker that once handled a large item stayed tens of MB larger, and its peak grew with
the heap's fragmentation. A fixed threshold (``MALLOC_MMAP_THRESHOLD_BYTES``, default
1 MiB) turns that off; buffers this large are rare, so the extra ``mmap`` calls cost
nothing measurable. Measured on the hostile-content acceptance run (one worker, a 20 MB
``body_html`` among PDFs and MIME bombs): peak RSS 240 -> 218-225 MB.

Elsewhere than glibc (musl, macOS) there is no ``mallopt`` to call and nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

log = structlog.get_logger("worker.core.allocator")

#: ``M_MMAP_THRESHOLD`` in glibc's ``<malloc.h>``.
_M_MMAP_THRESHOLD = -3


def set_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (0: leave it alone). True if it was set."""
    if nbytes <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, nbytes))
    if not done:
        log.warning("allocator.mmap_threshold_not_set", bytes=nbytes)
    return done

"""Per-thread reusable work arrays for the compiled kernels of pseudo-labelling.

A kernel's scratch space (z-buffers, filtered PNG rows, ...) is megabytes per image. Fresh
arrays of that size come from fresh pages, and page faults cost ~1 ms per few megabytes on
our machines, a large share of a few-millisecond kernel. :func:`work_array` hands out one
array per (thread, name) and keeps it for the next image, grown when a larger one is asked
for. The contents are undefined: kernels initialise what they read. Never return a work
array (or a view of one) to a caller: copy out the result.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ['work_array']

_local = threading.local()


def work_array(name: str, shape: int | tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A C-contiguous ``shape`` array of ``dtype`` owned by this thread under ``name``."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    pool = _local.__dict__.setdefault('pool', {})
    buf = pool.get(name)
    if buf is None or len(buf) < size:
        buf = np.empty(max(size, 1), dtype=np.uint8)
        pool[name] = buf
    return buf[:size].view(dtype).reshape(shape)

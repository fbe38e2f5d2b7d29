"""Per-thread work arrays: reused within a thread, separate between threads."""

from __future__ import annotations

import threading

import numpy as np

from dsseg_core.pseudolabel.work_buffers import work_array


def test_reused_grown_and_typed() -> None:
    a = work_array('test_a', (3, 4), np.int64)
    assert a.shape == (3, 4) and a.dtype == np.int64 and a.flags.c_contiguous
    a[:] = 7
    b = work_array('test_a', 12, np.int64)
    assert np.shares_memory(a, b) and (b == 7).all()  # same memory, contents kept
    c = work_array('test_a', (100, 100), np.float32)  # larger: a new array
    assert c.shape == (100, 100) and not np.shares_memory(a, c)
    d = work_array('test_b', 5, np.uint8)
    assert not np.shares_memory(c, d)


def test_threads_get_their_own_arrays() -> None:
    mine = work_array('test_thread', 1000, np.float64)
    seen = []
    t = threading.Thread(target=lambda: seen.append(work_array('test_thread', 1000,
                                                               np.float64)))
    t.start()
    t.join()
    assert len(seen) == 1 and not np.shares_memory(mine, seen[0])

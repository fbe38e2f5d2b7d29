"""A drop-oldest queue and one worker thread, so subscription callbacks never block.

A callback calls :meth:`DropOldestWorker.submit` (O(1), never waits on processing); the worker
thread processes the newest items. When items arrive faster than they are processed, the
oldest waiting item is dropped and counted, so the queue, the memory and the latency of the
frames that *are* processed stay bounded (at most ``maxlen`` items wait).
ROS-free on purpose (plain threads), so it is tested without rclpy.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

__all__ = ['DropOldestWorker', 'LatencyWindow', 'WorkerStats']

T = TypeVar('T')
log = logging.getLogger(__name__)


class LatencyWindow:
    """The last ``size`` durations (seconds), with percentiles in milliseconds."""

    def __init__(self, size: int = 256) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def values_ms(self) -> np.ndarray:
        with self._lock:
            return np.asarray(self._values, np.float64) * 1e3

    def summary_ms(self) -> dict[str, float]:
        """``{'p50', 'p99', 'max', 'mean'}`` in ms (NaN when empty)."""
        v = self.values_ms()
        if v.size == 0:
            return {'p50': float('nan'), 'p99': float('nan'), 'max': float('nan'),
                    'mean': float('nan')}
        return {'p50': float(np.percentile(v, 50)), 'p99': float(np.percentile(v, 99)),
                'max': float(v.max()), 'mean': float(v.mean())}


@dataclass
class WorkerStats:
    """A snapshot of a worker's counters (all counts since start)."""

    received: int
    processed: int
    dropped: int
    errors: int
    queue_len: int
    max_queue_len: int
    latency_ms: dict[str, float]       # submit -> end of processing
    processing_ms: dict[str, float]    # process() alone

    def as_key_values(self) -> dict[str, str]:
        out = {'received': str(self.received), 'processed': str(self.processed),
               'dropped': str(self.dropped), 'errors': str(self.errors),
               'queue_len': str(self.queue_len), 'max_queue_len': str(self.max_queue_len)}
        for name, stats in (('latency', self.latency_ms), ('processing', self.processing_ms)):
            for key, value in stats.items():
                out[f'{name}_{key}_ms'] = f'{value:.3f}'
        return out


class DropOldestWorker(Generic[T]):
    """Run ``process(item)`` on a worker thread for the newest submitted items.

    ``on_error(item, exc)`` is called (on the worker thread) when ``process`` raises; the
    worker keeps running. Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, process: Callable[[T], None], maxlen: int = 1, name: str = 'worker',
                 on_error: Callable[[T, BaseException], None] | None = None,
                 stats_window: int = 256) -> None:
        if maxlen < 1:
            raise ValueError(f'maxlen must be >= 1, got {maxlen}')
        self._process = process
        self._on_error = on_error
        self.name = name
        self.maxlen = maxlen
        self._queue: collections.deque[tuple[T, float]] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._busy = False
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self.max_queue_len = 0
        self.latency = LatencyWindow(stats_window)
        self.processing = LatencyWindow(stats_window)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> DropOldestWorker[T]:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the item in progress (waiting items are discarded); join the thread.

        Returns False when the thread did not finish within ``timeout``.
        """
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning('%s: worker thread still busy after %.1f s at shutdown', self.name,
                        timeout)
            return False
        return True

    def __enter__(self) -> DropOldestWorker[T]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- producer side ---------------------------------------------------------------------
    def submit(self, item: T) -> int:
        """Queue ``item`` (never blocks). Returns how many old items were dropped for it."""
        now = time.monotonic()
        dropped = 0
        with self._cond:
            if self._stop:
                return 0
            self.received += 1
            while len(self._queue) >= self.maxlen:
                self._queue.popleft()
                dropped += 1
            self._queue.append((item, now))
            self.dropped += dropped
            self.max_queue_len = max(self.max_queue_len, len(self._queue))
            self._cond.notify()
        return dropped

    def queue_len(self) -> int:
        with self._cond:
            return len(self._queue)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty and nothing is being processed (for tests/tools)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stats(self) -> WorkerStats:
        with self._cond:
            counts = (self.received, self.processed, self.dropped, self.errors,
                      len(self._queue), self.max_queue_len)
        return WorkerStats(*counts, latency_ms=self.latency.summary_ms(),
                           processing_ms=self.processing.summary_ms())

    # -- worker side -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item, t_submit = self._queue.popleft()
                self._busy = True
            t0 = time.monotonic()
            try:
                self._process(item)
            except Exception as exc:  # noqa: BLE001 - a bad item must not kill the worker
                with self._cond:
                    self.errors += 1
                if self._on_error is not None:
                    try:
                        self._on_error(item, exc)
                    except Exception:  # noqa: BLE001
                        log.exception('%s: error handler failed', self.name)
                else:
                    log.exception('%s: processing failed', self.name)
            else:
                t1 = time.monotonic()
                self.processing.add(t1 - t0)
                self.latency.add(t1 - t_submit)
                with self._cond:
                    self.processed += 1
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

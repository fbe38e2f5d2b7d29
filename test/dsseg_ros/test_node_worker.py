"""DropOldestWorker: bounded queue, drop counting, worker errors, clean stop (no rclpy)."""

from __future__ import annotations

import threading
import time

import pytest

from dsseg_ros.worker import DropOldestWorker, LatencyWindow


def test_processes_items_in_order_when_not_overloaded() -> None:
    seen: list[int] = []
    with DropOldestWorker(seen.append, maxlen=4) as worker:
        for i in range(3):
            worker.submit(i)
            assert worker.wait_idle(2.0)
    assert seen == [0, 1, 2]
    stats = worker.stats()
    assert (stats.received, stats.processed, stats.dropped, stats.errors) == (3, 3, 0, 0)
    assert stats.latency_ms['p50'] >= stats.processing_ms['p50'] >= 0


def test_overload_drops_the_oldest_and_keeps_the_queue_bounded() -> None:
    gate = threading.Event()
    seen: list[int] = []

    def slow(item: int) -> None:
        gate.wait(2.0)
        seen.append(item)

    worker = DropOldestWorker(slow, maxlen=2).start()
    try:
        worker.submit(0)
        deadline = time.monotonic() + 2.0
        while worker.queue_len() and time.monotonic() < deadline:  # 0 is taken
            time.sleep(0.001)
        dropped = [worker.submit(i) for i in range(1, 11)]
        assert worker.queue_len() == 2
        assert sum(dropped) == 8
        gate.set()
        assert worker.wait_idle(2.0)
    finally:
        worker.stop()
    assert seen == [0, 9, 10]  # the newest survive
    stats = worker.stats()
    assert stats.dropped == 8 and stats.max_queue_len == 2 and stats.processed == 3


def test_an_error_is_counted_reported_and_the_worker_goes_on() -> None:
    errors: list[tuple[int, str]] = []
    seen: list[int] = []

    def process(item: int) -> None:
        if item == 1:
            raise ValueError('bad item')
        seen.append(item)

    with DropOldestWorker(process, maxlen=8,
                          on_error=lambda i, e: errors.append((i, str(e)))) as worker:
        for i in range(3):
            worker.submit(i)
            worker.wait_idle(2.0)
    assert seen == [0, 2]
    assert errors == [(1, 'bad item')]
    assert worker.stats().errors == 1


def test_stop_joins_the_thread_and_ignores_later_submits() -> None:
    worker = DropOldestWorker(lambda item: time.sleep(0.05), maxlen=1).start()
    worker.submit(1)
    assert worker.stop(timeout=2.0)
    assert not worker.running
    assert worker.submit(2) == 0
    assert worker.stats().received == 1


def test_maxlen_must_be_positive() -> None:
    with pytest.raises(ValueError, match='maxlen'):
        DropOldestWorker(print, maxlen=0)


def test_latency_window_percentiles() -> None:
    window = LatencyWindow(size=4)
    assert window.summary_ms()['p50'] != window.summary_ms()['p50']  # NaN when empty
    for s in (0.001, 0.002, 0.003, 0.004, 0.100):  # the first falls out of the window
        window.add(s)
    summary = window.summary_ms()
    assert summary['max'] == pytest.approx(100.0)
    assert summary['p50'] == pytest.approx(3.5)

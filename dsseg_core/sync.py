"""Time synchronisation of camera images and LiDAR scans.

* :func:`pair_nearest` (offline, vectorised): each image gets the scan nearest in time within
  ``slop_s`` after removing the camera's ``offset_s``; a scan is used by at most one image of a
  camera; everything that did not pair is counted, never silently paired.
* :class:`ApproximateTimeSynchronizer` (online, for the ROS nodes, pure Python, thread-safe):
  N inputs, bounded queues (the oldest message is dropped when a queue is full, so a late or
  dead input never stalls the others), a callback per matched set and per-input drop counts.

Offset convention (the same as ``CameraCalibration.time_offset_s``): ``offset_s`` = camera
stamp − LiDAR stamp of a matching pair; it is *subtracted* from the camera stamps before pairing
(a camera whose stamps run 20 ms late has ``offset_s = 0.02``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsseg_core.errors import SyncError

__all__ = ['ApproximateTimeSynchronizer', 'PairResult', 'pair_nearest']

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairResult:
    """Pairs sorted by camera time: ``cam_index[k]`` goes with ``lidar_index[k]``."""

    cam_index: np.ndarray      # (P,) int64 indices into cam_stamps
    lidar_index: np.ndarray    # (P,) int64 indices into lidar_stamps
    dt_ns: np.ndarray          # (P,) int64 (camera stamp - offset) - lidar stamp
    unmatched_cam: int         # images without a scan within slop (or whose scan was taken)
    unmatched_lidar: int       # scans no image of this camera was paired with

    def __len__(self) -> int:
        return int(self.cam_index.size)


def _as_stamps(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise SyncError(f'{name}: expected a 1-D array of stamps, got shape {arr.shape}')
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SyncError(f'{name}: stamps must be integer nanoseconds, got {arr.dtype}')
    return arr.astype(np.int64, copy=False)


def _nearest(cam: np.ndarray, lidar_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position (in ``lidar_sorted``, non-empty) of the nearest scan to each stamp, and |dt|."""
    n = lidar_sorted.size
    right = np.searchsorted(lidar_sorted, cam, side='left')
    left = right - 1
    big = np.iinfo(np.int64).max
    d_left = np.where(left >= 0, cam - lidar_sorted[np.clip(left, 0, n - 1)], big)
    d_right = np.where(right < n, lidar_sorted[np.clip(right, 0, n - 1)] - cam, big)
    take_left = d_left <= d_right
    return np.where(take_left, left, right), np.where(take_left, d_left, d_right)


def _keep_closest(pos: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Boolean mask keeping, among entries sharing a ``pos``, only the closest one."""
    order = np.lexsort((dist, pos))  # by scan, then by distance (stable: earlier image wins)
    first = np.ones(order.size, dtype=bool)
    first[1:] = pos[order][1:] != pos[order][:-1]
    keep = np.zeros(pos.size, dtype=bool)
    keep[order[first]] = True
    return keep


def pair_nearest(cam_stamps: Sequence[int] | np.ndarray, lidar_stamps: Sequence[int] | np.ndarray,
                 slop_s: float = 0.05, offset_s: float = 0.0) -> PairResult:
    """Pair each image with the nearest scan within ``slop_s`` (see module docstring).

    Rounds of vectorised nearest-neighbour search on the scans still free: when several
    images want the same scan the closest one keeps it and the others look again among the
    remaining scans. An image stays unmatched only if no free scan is within ``slop_s``.
    """
    if slop_s < 0:
        raise SyncError(f'slop_s must be >= 0, got {slop_s}')
    cam = _as_stamps(cam_stamps, 'cam_stamps')
    lidar = _as_stamps(lidar_stamps, 'lidar_stamps')
    empty = np.zeros(0, dtype=np.int64)
    if cam.size == 0 or lidar.size == 0:
        return PairResult(empty, empty, empty, int(cam.size), int(lidar.size))
    slop_ns = int(round(slop_s * 1e9))
    cam_c = cam - int(round(offset_s * 1e9))
    lidar_order = np.argsort(lidar, kind='stable')
    lidar_sorted = lidar[lidar_order]

    match = np.full(cam.size, -1, dtype=np.int64)      # position in lidar_sorted
    free = np.ones(lidar.size, dtype=bool)
    pending = np.arange(cam.size)
    while pending.size and free.any():
        free_pos = np.flatnonzero(free)
        pos, dist = _nearest(cam_c[pending], lidar_sorted[free_pos])
        ok = dist <= slop_ns
        pending, pos, dist = pending[ok], free_pos[pos[ok]], dist[ok]
        if pending.size == 0:
            break
        keep = _keep_closest(pos, dist)
        match[pending[keep]] = pos[keep]
        free[pos[keep]] = False
        pending = pending[~keep]

    cam_idx = np.flatnonzero(match >= 0)
    cam_idx = cam_idx[np.argsort(cam[cam_idx], kind='stable')]
    lidar_idx = lidar_order[match[cam_idx]]
    dt = cam_c[cam_idx] - lidar[lidar_idx]
    return PairResult(
        cam_index=cam_idx.astype(np.int64),
        lidar_index=lidar_idx.astype(np.int64),
        dt_ns=dt.astype(np.int64),
        unmatched_cam=int(cam.size - cam_idx.size),
        unmatched_lidar=int(lidar.size - cam_idx.size),
    )


DropCallback = Callable[[int, Any, int, str], None]


class ApproximateTimeSynchronizer:
    """Match messages of N inputs whose stamps lie within ``slop_s`` of each other.

    ``add(i, msg, stamp_ns)`` may be called from any thread. When every input has a message
    within ``slop_s`` of the new message's stamp (and the set spans at most ``slop_s``), the
    set is removed from the queues and ``callback(list_of_msgs)`` runs (outside the lock).
    Messages older than a matched set can never match any more and are dropped. A queue longer
    than ``queue_size`` drops its oldest message. Every drop is counted in ``drops[i]`` and
    reported to ``on_drop(input, msg, stamp_ns, reason)``. ``offsets_s[i]`` is subtracted from
    the stamps of input ``i`` (per-camera time offset, module convention).
    """

    def __init__(self, num_inputs: int, callback: Callable[[list[Any]], None],
                 queue_size: int = 10, slop_s: float = 0.05,
                 offsets_s: Sequence[float] | None = None,
                 on_drop: DropCallback | None = None) -> None:
        if num_inputs < 1:
            raise SyncError(f'num_inputs must be >= 1, got {num_inputs}')
        if queue_size < 1:
            raise SyncError(f'queue_size must be >= 1, got {queue_size}')
        if slop_s < 0:
            raise SyncError(f'slop_s must be >= 0, got {slop_s}')
        offsets = list(offsets_s) if offsets_s is not None else [0.0] * num_inputs
        if len(offsets) != num_inputs:
            raise SyncError(f'offsets_s has {len(offsets)} values for {num_inputs} inputs')
        self.num_inputs = num_inputs
        self.callback = callback
        self.queue_size = queue_size
        self.slop_ns = int(round(slop_s * 1e9))
        self.offsets_ns = [int(round(o * 1e9)) for o in offsets]
        self.on_drop = on_drop
        self._queues: list[list[tuple[int, Any]]] = [[] for _ in range(num_inputs)]
        self._last_matched = -(2**62)
        self._lock = threading.Lock()
        self.drops = [0] * num_inputs
        self.matched = 0

    def add(self, index: int, msg: Any, stamp_ns: int) -> bool:
        """Offer a message to input ``index``; returns True if it completed a matched set."""
        if not 0 <= index < self.num_inputs:
            raise SyncError(f'input index {index} out of range 0..{self.num_inputs - 1}')
        stamp = int(stamp_ns) - self.offsets_ns[index]
        dropped: list[tuple[int, Any, int, str]] = []
        matched: list[Any] | None = None
        with self._lock:
            if stamp <= self._last_matched:
                dropped.append((index, msg, stamp, 'older than the last matched set'))
            else:
                queue = self._queues[index]
                pos = len(queue)
                while pos > 0 and queue[pos - 1][0] > stamp:
                    pos -= 1
                queue.insert(pos, (stamp, msg))
                while len(queue) > self.queue_size:
                    old_stamp, old_msg = queue.pop(0)
                    dropped.append((index, old_msg, old_stamp, 'queue full'))
                matched = self._try_match(stamp, dropped)
            for i, _m, _s, _r in dropped:
                self.drops[i] += 1
        for item in dropped:
            log.debug('sync: input %d dropped a message at %d ns (%s)', item[0], item[2],
                      item[3])
            if self.on_drop is not None:
                self.on_drop(*item)
        if matched is not None:
            self.callback(matched)
            return True
        return False

    def _try_match(self, pivot: int, dropped: list[tuple[int, Any, int, str]]) -> list[Any] | None:
        chosen: list[int] = []
        for queue in self._queues:
            if not queue:
                return None
            best = min(range(len(queue)), key=lambda k: abs(queue[k][0] - pivot))
            if abs(queue[best][0] - pivot) > self.slop_ns:
                return None
            chosen.append(best)
        stamps = [self._queues[i][k][0] for i, k in enumerate(chosen)]
        if max(stamps) - min(stamps) > self.slop_ns:
            return None
        msgs = []
        for i, k in enumerate(chosen):
            queue = self._queues[i]
            for old_stamp, old_msg in queue[:k]:
                dropped.append((i, old_msg, old_stamp, 'superseded by a newer matched set'))
            msgs.append(queue[k][1])
            del queue[:k + 1]
        self._last_matched = max(stamps)
        self.matched += 1
        return msgs

    def pending(self) -> list[int]:
        """Queue length per input (for diagnostics)."""
        with self._lock:
            return [len(q) for q in self._queues]

    def reset(self) -> None:
        """Forget queued messages and the last matched stamp (e.g. after a bag loops)."""
        with self._lock:
            self._queues = [[] for _ in range(self.num_inputs)]
            self._last_matched = -(2**62)

"""pair_nearest (offline) and ApproximateTimeSynchronizer (online)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dsseg_core.errors import SyncError
from dsseg_core.sync import ApproximateTimeSynchronizer, pair_nearest

MS = 1_000_000


def test_pairs_each_image_with_nearest_scan() -> None:
    lidar = np.array([0, 100, 200, 300]) * MS
    cam = np.array([3, 98, 207, 296]) * MS
    res = pair_nearest(cam, lidar, slop_s=0.05)
    assert res.cam_index.tolist() == [0, 1, 2, 3]
    assert res.lidar_index.tolist() == [0, 1, 2, 3]
    assert (res.dt_ns // MS).tolist() == [3, -2, 7, -4]
    assert res.unmatched_cam == 0 and res.unmatched_lidar == 0


def test_unsorted_lidar_stamps_map_back_to_original_indices() -> None:
    lidar = np.array([300, 0, 200, 100]) * MS
    cam = np.array([101, 299]) * MS
    res = pair_nearest(cam, lidar, slop_s=0.01)
    assert res.lidar_index.tolist() == [3, 0]
    assert res.unmatched_lidar == 2


def test_outside_slop_is_unmatched_never_paired() -> None:
    lidar = np.array([0, 100, 200]) * MS
    cam = np.array([10, 160, 205]) * MS   # 160 is 40 ms from 200 and 60 ms from 100
    res = pair_nearest(cam, lidar, slop_s=0.02)
    assert res.cam_index.tolist() == [0, 2]
    assert res.lidar_index.tolist() == [0, 2]
    assert res.unmatched_cam == 1 and res.unmatched_lidar == 1
    # 160 ms loses scan 200 to the 205 ms image; scan 100 is 60 ms away.
    wide = pair_nearest(cam, lidar, slop_s=0.05)
    assert wide.cam_index.tolist() == [0, 2] and wide.unmatched_cam == 1
    wider = pair_nearest(cam, lidar, slop_s=0.06)
    assert wider.cam_index.tolist() == [0, 1, 2]
    assert wider.lidar_index.tolist() == [0, 1, 2]


def test_each_scan_used_at_most_once_per_camera() -> None:
    lidar = np.array([0, 100, 200]) * MS
    cam = np.array([0, 33, 66, 100, 133, 166, 200]) * MS  # 30 Hz camera, 10 Hz LiDAR
    res = pair_nearest(cam, lidar, slop_s=0.05)
    assert sorted(res.lidar_index.tolist()) == [0, 1, 2]
    assert res.cam_index.tolist() == [0, 3, 6]   # the exact-time images win
    assert res.unmatched_cam == 4 and res.unmatched_lidar == 0


def test_loser_takes_free_neighbour_scan() -> None:
    lidar = np.array([0, 100]) * MS
    cam = np.array([48, 52]) * MS  # 48 -> scan 0, 52 -> scan 1: no conflict
    res = pair_nearest(cam, lidar, slop_s=0.06)
    assert res.lidar_index.tolist() == [0, 1]
    cam2 = np.array([10, 40]) * MS  # both nearest to scan 0; 40 ms image can take scan 1 (60 ms)
    res2 = pair_nearest(cam2, lidar, slop_s=0.06)
    assert res2.cam_index.tolist() == [0, 1]
    assert res2.lidar_index.tolist() == [0, 1]
    res3 = pair_nearest(cam2, lidar, slop_s=0.05)  # 60 ms > slop: stays unmatched
    assert res3.cam_index.tolist() == [0] and res3.unmatched_cam == 1


def test_offset_shifts_camera_onto_lidar_clock() -> None:
    lidar = np.arange(10) * 100 * MS
    cam = lidar + 70 * MS          # camera stamps 70 ms late
    none = pair_nearest(cam, lidar, slop_s=0.02)
    assert len(none) == 0 and none.unmatched_cam == 10 and none.unmatched_lidar == 10
    fixed = pair_nearest(cam, lidar, slop_s=0.02, offset_s=0.07)
    assert fixed.lidar_index.tolist() == list(range(10))
    assert np.all(fixed.dt_ns == 0)
    wrong_sign = pair_nearest(cam, lidar, slop_s=0.02, offset_s=-0.07)
    assert len(wrong_sign) == 0


def test_empty_inputs_and_bad_arguments() -> None:
    res = pair_nearest([], [1, 2, 3])
    assert len(res) == 0 and res.unmatched_lidar == 3
    res = pair_nearest([1, 2], [])
    assert res.unmatched_cam == 2
    with pytest.raises(SyncError, match='slop_s'):
        pair_nearest([1], [1], slop_s=-1)
    with pytest.raises(SyncError, match='integer'):
        pair_nearest(np.array([0.5]), [1])


def test_large_random_streams_match_bruteforce() -> None:
    rng = np.random.default_rng(0)
    lidar = np.sort(rng.integers(0, 10**11, 2000))
    cam = rng.integers(0, 10**11, 3000)
    res = pair_nearest(cam, lidar, slop_s=0.01)
    # Every pair is within slop and uses distinct scans; every unmatched image has no free
    # scan within slop.
    assert np.all(np.abs(cam[res.cam_index] - lidar[res.lidar_index]) <= 10 * MS)
    assert np.unique(res.lidar_index).size == len(res)
    used = np.zeros(lidar.size, bool)
    used[res.lidar_index] = True
    unmatched = np.setdiff1d(np.arange(cam.size), res.cam_index)
    for i in unmatched[:200]:
        near = np.abs(lidar - cam[i]) <= 10 * MS
        assert not np.any(near & ~used)
    assert res.unmatched_cam == cam.size - len(res)


# ----------------------------------------------------------------- ApproximateTimeSynchronizer
def test_sync_matches_sets_within_slop() -> None:
    got: list[list] = []
    sync = ApproximateTimeSynchronizer(2, got.append, queue_size=5, slop_s=0.02)
    assert not sync.add(0, 'a0', 0)
    assert sync.add(1, 'b0', 5 * MS)
    assert not sync.add(0, 'a1', 100 * MS)
    assert not sync.add(1, 'b1', 150 * MS)   # 50 ms apart: no match
    assert sync.add(0, 'a2', 160 * MS)       # b1 + a2 within 10 ms; a1 superseded
    assert got == [['a0', 'b0'], ['a2', 'b1']]
    assert sync.matched == 2
    assert sync.drops == [1, 0]


def test_sync_never_stalls_when_an_input_is_dead() -> None:
    got: list[list] = []
    dropped: list[tuple[int, str]] = []
    sync = ApproximateTimeSynchronizer(
        2, got.append, queue_size=3, slop_s=0.01,
        on_drop=lambda i, msg, stamp, reason: dropped.append((i, reason)))
    for k in range(10):                      # input 1 is silent: queue 0 stays bounded
        sync.add(0, f'a{k}', k * 100 * MS)
    assert sync.pending() == [3, 0]
    assert sync.drops == [7, 0] and all(r == 'queue full' for _i, r in dropped)
    assert sync.add(1, 'b9', 900 * MS + 2 * MS)  # input 1 comes back: matches at once
    assert got == [['a9', 'b9']]
    assert sync.add(1, 'late', 500 * MS) is False  # older than the last set: dropped
    assert sync.drops[1] == 1


def test_sync_offsets_and_three_inputs() -> None:
    got: list[list] = []
    sync = ApproximateTimeSynchronizer(3, got.append, queue_size=4, slop_s=0.01,
                                       offsets_s=[0.0, 0.03, -0.02])
    sync.add(0, 'lidar', 1000 * MS)
    sync.add(1, 'cam_late', 1030 * MS)       # corrected to 1000
    assert sync.add(2, 'cam_early', 980 * MS)  # corrected to 1000
    assert got == [['lidar', 'cam_late', 'cam_early']]
    with pytest.raises(SyncError, match='offsets_s'):
        ApproximateTimeSynchronizer(2, got.append, offsets_s=[0.0])
    with pytest.raises(SyncError, match='out of range'):
        sync.add(3, 'x', 0)


def test_sync_thread_safety() -> None:
    got: list[list] = []
    lock = threading.Lock()

    def collect(msgs: list) -> None:
        with lock:
            got.append(msgs)

    sync = ApproximateTimeSynchronizer(2, collect, queue_size=1000, slop_s=0.001)
    n = 2000

    def feed(index: int) -> None:
        for k in range(n):
            sync.add(index, (index, k), k * 10 * MS)

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every emitted set pairs the same k on both inputs, in increasing order, each k once.
    ks = [m[0][1] for m in got]
    assert all(m[0][1] == m[1][1] and m[0][0] == 0 and m[1][0] == 1 for m in got)
    assert ks == sorted(set(ks))
    pending = sync.pending()
    for i in range(2):
        assert len(got) + sync.drops[i] + pending[i] == n
    assert len(got) > 0

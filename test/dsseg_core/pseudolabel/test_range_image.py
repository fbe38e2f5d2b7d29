from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from lidar_scene import STREET, simulate_scan

from dsseg_core.config import load_config
from dsseg_core.errors import ConfigError
from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.pseudolabel.range_image import (
    RangeImage,
    RangeImageConfig,
    _mod,
    _pairwise_sum,
    _turn_of,
    build_range_image,
    estimate_beam_elevations,
    rasterise,
    scan_order_rows,
)


def _row_elevation_is_descending(ri, xyz):
    ok = ri.row_of_point >= 0
    el = np.degrees(np.arctan2(xyz[ok, 2], np.hypot(xyz[ok, 0], xyz[ok, 1])))
    rows = ri.row_of_point[ok]
    present = np.unique(rows)
    med = np.array([np.median(el[rows == r]) for r in present])
    return bool(np.all(np.diff(med) < 0))


def test_ring_rows_top_first_and_nearest_point_per_pixel():
    xyz, ring, _ = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    ri = build_range_image(xyz, ring, RangeImageConfig(width=1024))
    assert ri.row_source == 'ring'
    assert ri.index.shape == (ri.rows, 1024) and ri.index.dtype == np.int32
    ok = ri.row_of_point >= 0
    # ring 0 is the lowest beam; rows go top-first
    present = np.unique(ring[ok])
    assert np.array_equal(np.sort(ri.row_of_point[ok] + ring[ok]).clip(0), np.sort(
        np.full(ok.sum(), present.size - 1 + present.min())))
    assert _row_elevation_is_descending(ri, xyz)
    # every occupied pixel holds a point that maps to it, at its own range
    r, c = np.nonzero(ri.index >= 0)
    idx = ri.index[r, c]
    assert np.array_equal(ri.row_of_point[idx], r) and np.array_equal(ri.col_of_point[idx], c)
    np.testing.assert_allclose(ri.range[r, c], np.linalg.norm(xyz[idx], axis=1), rtol=1e-5)


def test_pixel_keeps_nearest_point():
    base, ring, _ = simulate_scan([], num_beams=16, num_azimuth=256)
    extra = np.array([[5.0, 0.0, -0.5], [10.0, 0.0, -1.0], [7.5, 0.0, -0.75]], np.float32)
    xyz = np.concatenate([base, extra])
    ring2 = np.concatenate([ring, [3, 3, 3]])
    ri = build_range_image(xyz, ring2, RangeImageConfig(width=256))
    n = base.shape[0]
    rows, cols = ri.row_of_point[n:], ri.col_of_point[n:]
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 1
    assert ri.index[rows[0], cols[0]] == n  # the 5 m point
    assert cols[0] == 128  # +x looks at the middle column


def test_columns_from_azimuth():
    xyz = np.array([[10, 0, 0], [0, 10, 0], [-10, 0.01, 0], [0, -10, 0]], np.float32)
    ri = build_range_image(xyz, np.zeros(4, int), RangeImageConfig(width=8))
    assert ri.col_of_point.tolist() == [4, 2, 0, 6]


@pytest.mark.parametrize('num_beams,width', [(32, 1024), (64, 2048)])
def test_scan_order_without_ring_matches_ring(num_beams, width):
    xyz, ring, _ = simulate_scan(STREET, num_beams=num_beams, num_azimuth=width)
    cfg = RangeImageConfig(width=width)
    a = build_range_image(xyz, ring, cfg)
    b = build_range_image(xyz, None, cfg)
    assert b.row_source == 'scan_order'
    assert np.array_equal(a.row_of_point, b.row_of_point)
    assert np.array_equal(a.index, b.index)


@pytest.mark.parametrize('num_beams,top,bottom', [(32, 10.7, -30.7), (64, 2.0, -24.9),
                                                  (128, 22.5, -22.5)])
def test_elevation_binning_recovers_beams_of_shuffled_scans(num_beams, top, bottom):
    el = np.linspace(top, bottom, num_beams)
    boxes = STREET + [(-40, 40, 30, 31, -2, 25), (-40, 40, -31, -30, -2, 25)]  # tall walls
    xyz, ring, _ = simulate_scan(boxes, num_beams=num_beams, num_azimuth=1024,
                                 order='shuffle', elevations_deg=el)
    cfg = RangeImageConfig(width=1024)
    a = build_range_image(xyz, ring, cfg)
    b = build_range_image(xyz, None, cfg)
    assert b.row_source == 'elevation'
    assert b.rows == num_beams
    assert np.array_equal(a.row_of_point, b.row_of_point)
    np.testing.assert_allclose(b.beam_elevation_deg, el, atol=0.05)


def test_estimate_beam_elevations_with_known_count():
    rng = np.random.default_rng(1)
    beams = np.array([3.0, 1.0, -1.0, -4.0])
    el = np.repeat(beams, [50, 500, 300, 900]) + rng.normal(0, 0.03, 1750)
    np.testing.assert_allclose(estimate_beam_elevations(el, 4), beams, atol=0.02)
    np.testing.assert_allclose(estimate_beam_elevations(el), beams, atol=0.02)
    assert estimate_beam_elevations(np.array([])).size == 0


def test_column_ordered_cloud_falls_back_to_elevation():
    xyz, ring, _ = simulate_scan(STREET, num_beams=32, num_azimuth=512, order='column')
    ri = build_range_image(xyz, None, RangeImageConfig(width=512))
    assert ri.row_source == 'elevation'
    assert ri.rows == np.unique(ring).size
    assert _row_elevation_is_descending(ri, xyz)


def test_scan_order_rows_counts_turns_with_gaps():
    # a beam with half of its turn missing, clockwise scanner
    az = np.concatenate([np.linspace(0, 2 * np.pi, 100, endpoint=False),
                         np.linspace(0, np.pi / 2, 25), np.linspace(1.5 * np.pi, 2 * np.pi, 25,
                                                                    endpoint=False)])
    az = -az
    z = np.repeat([0.5, -0.5], [100, 50])  # the second beam looks lower
    xyz = np.stack([np.cos(az), np.sin(az), z], 1) * 10
    turns = scan_order_rows(xyz)
    assert turns[:100].tolist() == [0] * 100
    assert turns[100:].tolist() == [1] * 50


@pytest.mark.parametrize('n', [0, 1, 2, 5])
def test_empty_and_tiny_scans(n):
    xyz = np.random.default_rng(0).uniform(-10, 10, (n, 3)).astype(np.float32)
    ri = build_range_image(xyz)
    assert ri.row_of_point.shape == (n,) and ri.col_of_point.shape == (n,)
    assert ri.index.shape[1] == 2048
    assert (ri.index >= 0).sum() == (ri.row_of_point >= 0).sum() or n > 1


def test_invalid_points_are_dropped():
    xyz = np.array([[np.nan, 0, 0], [0.1, 0, 0], [500, 0, 0], [10, 0, -1]], np.float32)
    ri = build_range_image(xyz, np.zeros(4, int))
    assert ri.row_of_point.tolist()[:3] == [-1, -1, -1]
    assert ri.row_of_point[3] == 0
    nan_only = build_range_image(np.full((3, 3), np.nan, np.float32))
    assert (nan_only.row_of_point == -1).all() and nan_only.rows == 0


def test_bad_arguments():
    xyz = np.zeros((4, 3), np.float32)
    with pytest.raises(ConfigError, match='ring has 3 entries'):
        build_range_image(xyz, np.zeros(3, int))
    with pytest.raises(ConfigError, match='no ring field'):
        build_range_image(xyz, None, RangeImageConfig(row_method='ring'))
    with pytest.raises(ConfigError, match=r'xyz must be \(N, 3\)'):
        build_range_image(np.zeros((4, 2)))
    with pytest.raises(ConfigError, match='width'):
        load_config(RangeImageConfig, overrides={'width': 2})


def test_real_kitti_scan_uses_scan_order(semantickitti_dir):
    from dsseg_core.semantickitti import load_scan

    xyz, _ = load_scan(semantickitti_dir / 'velodyne' / '000000.bin')
    ri = build_range_image(xyz)
    assert ri.row_source == 'scan_order' and ri.rows == 64
    assert _row_elevation_is_descending(ri, xyz)
    assert (ri.index >= 0).mean() > 0.8
    # without scan order, elevation binning still finds about 64 beams
    el = build_range_image(xyz, None, RangeImageConfig(row_method='elevation'))
    assert 60 <= el.rows <= 72


def test_real_nuscenes_ring_and_elevation(nuscenes_dir):
    path = next(nuscenes_dir.glob('*LIDAR_TOP*.pcd.bin'))
    pts = np.fromfile(path, np.float32).reshape(-1, 5)
    cfg = RangeImageConfig(width=1024)
    a = build_range_image(pts[:, :3], pts[:, 4].astype(int), cfg)
    b = build_range_image(pts[:, :3], None, cfg)
    assert a.row_source == 'ring' and a.rows == 32
    # without the ring field: elevation binning finds about 32 beams; parallax of near points
    # makes exact beam recovery impossible for some points
    assert b.row_source == 'elevation' and 30 <= b.rows <= 34
    c = build_range_image(pts[:, :3], None, RangeImageConfig(width=1024, num_rows=32))
    assert c.rows == 32
    ok = (a.row_of_point >= 0) & (c.row_of_point >= 0)
    # purity: share of points whose estimated row's majority beam is their own beam
    key = c.row_of_point[ok].astype(np.int64) * 64 + a.row_of_point[ok]
    pairs, counts = np.unique(key, return_counts=True)
    best = np.zeros(64)
    np.maximum.at(best, pairs // 64, counts)
    assert best.sum() / ok.sum() > 0.75


def test_scan_starting_mid_beam_with_known_beam_count():
    # the file starts with the tail of the lowest beam (a rotation cut mid-beam)
    xyz, ring, _ = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    xyz, ring = np.roll(xyz, 300, axis=0), np.roll(ring, 300)
    free = build_range_image(xyz, None, RangeImageConfig(width=1024))
    assert free.row_source == 'scan_order' and free.rows == 33
    fixed = build_range_image(xyz, None, RangeImageConfig(width=1024, num_rows=32))
    assert fixed.row_source == 'scan_order' and fixed.rows == 32
    truth = build_range_image(xyz, ring, RangeImageConfig(width=1024))
    assert np.array_equal(fixed.row_of_point, truth.row_of_point)


# ------------------------------------------------------------------------------------------
# numba kernels vs the numpy reference path: bit-identical range images

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed: only the '
                                 'numpy path exists, there is nothing to compare')


def _assert_same_image(a, b):
    assert (a.rows, a.cols, a.row_source) == (b.rows, b.cols, b.row_source)
    for f in fields(RangeImage):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            assert np.array_equal(x, y), f'{f.name}: {(x != y).sum()} values differ'


def _scenes():
    xyz, ring, _ = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    cfg = RangeImageConfig(width=1024)
    yield 'ring', xyz, ring, cfg
    yield 'scan_order', xyz, None, cfg
    yield 'scan_order_float64', xyz.astype(np.float64), None, cfg
    mirrored = xyz * np.array([1, -1, 1], np.float32)  # a clockwise scanner
    yield 'clockwise', mirrored, None, cfg
    yield 'mid_beam_start', np.roll(xyz, 300, axis=0), None, cfg
    yield 'mid_beam_start_num_rows', np.roll(xyz, 300, axis=0), None, RangeImageConfig(
        width=1024, num_rows=32)
    bad = xyz.copy()
    bad[::37] = np.nan
    bad[5::41] = np.inf
    bad[7::43] = 0.0
    yield 'non_finite', bad, None, cfg
    yield 'non_finite_ring', bad, ring, cfg
    yield 'elevation', xyz, None, RangeImageConfig(width=1024, row_method='elevation')
    shuffled, ring_s, _ = simulate_scan(STREET, num_beams=64, num_azimuth=512, order='shuffle')
    yield 'shuffled', shuffled, None, RangeImageConfig(width=512)
    yield 'huge_ring_ids', xyz, ring.astype(np.int64) * (1 << 21), cfg
    yield 'negative_ring_ids', xyz, np.where(ring == 3, -1, ring), cfg
    yield 'no_ring_points', xyz, np.full(ring.shape, -1), cfg
    yield 'scan_order_forced', shuffled, None, RangeImageConfig(width=512,
                                                                row_method='scan_order')


@needs_numba
@pytest.mark.parametrize('name', [s[0] for s in _scenes()])
def test_kernels_match_numpy_on_simulated_scans(both_paths, name):
    _, xyz, ring, cfg = next(s for s in _scenes() if s[0] == name)
    a, b = both_paths(lambda: build_range_image(xyz, ring, cfg))
    _assert_same_image(a, b)


@needs_numba
def test_kernels_match_numpy_on_the_sample_bag(both_paths, sample_scans):
    assert len(sample_scans) == 20
    for xyz in sample_scans:
        for cfg in (RangeImageConfig(), RangeImageConfig(num_rows=64)):
            a, b = both_paths(lambda xyz=xyz, cfg=cfg: build_range_image(
                                                                         xyz, None, cfg))
            assert a.row_source == 'scan_order'
            _assert_same_image(a, b)
            t1, t2 = both_paths(lambda xyz=xyz: scan_order_rows(xyz))
            assert np.array_equal(t1, t2)


@needs_numba
def test_kernels_match_numpy_on_real_scans(both_paths, semantickitti_dir, kitti_raw_dir,
                                           nuscenes_dir):
    from dsseg_core.semantickitti import load_scan

    scans = [(load_scan(semantickitti_dir / 'velodyne' / '000000.bin')[0], None)]
    for k in range(0, 50, 7):
        path = kitti_raw_dir / 'velodyne_points' / 'data' / f'{k:010d}.bin'
        scans.append((load_scan(path)[0], None))
    pts = np.fromfile(next(nuscenes_dir.glob('*LIDAR_TOP*.pcd.bin')), np.float32).reshape(-1, 5)
    scans += [(np.ascontiguousarray(pts[:, :3]), pts[:, 4].astype(int)),
              (np.ascontiguousarray(pts[:, :3]), None)]
    for xyz, ring in scans:
        for cfg in (RangeImageConfig(), RangeImageConfig(row_method='elevation')):
            a, b = both_paths(lambda xyz=xyz, ring=ring, cfg=cfg:
                              build_range_image(xyz, ring, cfg))
            _assert_same_image(a, b)


@needs_numba
def test_scan_order_rows_kernel_matches_numpy(both_paths):
    xyz, _, _ = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    az = np.concatenate([np.linspace(0, 2 * np.pi, 100, endpoint=False),
                         np.linspace(0, np.pi / 2, 25), np.linspace(1.5 * np.pi, 2 * np.pi, 25,
                                                                    endpoint=False)])
    gaps = np.stack([np.cos(-az), np.sin(-az), np.repeat([0.5, -0.5], [100, 50])], 1) * 10
    with_nan = xyz.copy()
    with_nan[10] = np.nan
    for pts in (xyz, xyz[::-1], xyz * np.array([1, -1, 1], np.float32), gaps, xyz[:2],
                xyz[:3], xyz[:1000], with_nan, np.roll(xyz, 5000, axis=0)):
        with np.errstate(invalid='ignore'):  # NaN points: turns of NaN (the numpy path)
            a, b = both_paths(lambda pts=pts: scan_order_rows(pts))
        assert a.dtype == b.dtype == np.int64
        assert np.array_equal(a, b)


def test_pairwise_sum_is_numpys_sum():
    rng = np.random.default_rng(0)
    for n in list(range(0, 140)) + [255, 256, 257, 1000, 4099]:
        for _ in range(5):
            x = rng.normal(size=n) * 10.0 ** rng.uniform(-3, 6, size=n)
            assert _pairwise_sum(x) == np.sum(x), n


def test_mod_is_numpys_remainder():
    two_pi = 2 * np.pi
    rng = np.random.default_rng(1)
    special = [0.0, -0.0, two_pi, -two_pi, 2 * two_pi, np.nextafter(two_pi, 0),
               np.nextafter(-two_pi, 0), np.nextafter(2 * two_pi, 0), 1e-300, -1e-300,
               np.pi, -np.pi, 3 * np.pi, -7 * np.pi, 1e-17, -1e-17]
    x = np.concatenate([special, rng.uniform(-5 * two_pi, 5 * two_pi, 20000),
                        rng.normal(0, 1e-12, 1000)])
    got = np.array([_mod(float(v), two_pi) for v in x])
    ref = x % two_pi
    assert np.array_equal(got, ref)
    assert np.array_equal(np.signbit(got), np.signbit(ref))


def test_turn_of_is_numpys_floor_division():
    rng = np.random.default_rng(2)
    two_pi = 2 * np.pi
    start, slack = 1.234, np.radians(1.0)
    u = np.concatenate([rng.uniform(-10, 500, 20000),
                        # exactly at and next to the turn boundaries
                        np.arange(-3, 80) * two_pi + start - slack,
                        np.nextafter(np.arange(-3, 80) * two_pi + start - slack, -np.inf),
                        np.nextafter(np.arange(-3, 80) * two_pi + start - slack, np.inf),
                        [1e9, -1e9]])
    ref = np.floor((u - start + slack) / two_pi).astype(np.int64)
    got = np.array([_turn_of(float(v), start, slack) for v in u])
    assert np.array_equal(got, ref)


def test_rasterise_kernel_matches_numpy(both_paths):
    rng = np.random.default_rng(3)
    n, rows, cols = 5000, 6, 40
    row = rng.integers(-1, rows, n).astype(np.int32)
    col = np.where(row >= 0, rng.integers(0, cols, n), -1).astype(np.int32)
    rng_f = rng.choice(np.float32([1.0, 2.5, 2.5, 7.25, 30.0]), n)  # many ties
    mask = rng.random(n) < 0.7
    for m in (None, mask):
        a, b = both_paths(lambda m=m: rasterise(row, col, rng_f, rows, cols, m))
        assert a.dtype == b.dtype == np.int32
        assert np.array_equal(a, b)
    # the nearest point keeps the pixel, the first of equal ranges
    idx = rasterise(np.zeros(3, np.int32), np.zeros(3, np.int32),
                    np.float32([5.0, 2.0, 2.0]), 1, 1)
    assert idx[0, 0] == 1

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from lidar_scene import STREET, simulate_scan

from dsseg_core.config import load_config
from dsseg_core.errors import ConfigError
from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.pseudolabel.ground import (
    GroundConfig,
    _correlate_at,
    _correlate_weights,
    _savgol_coeffs,
    ground_from_range_image,
    segment_ground,
)
from dsseg_core.pseudolabel.range_image import RangeImageConfig, build_range_image

RI = RangeImageConfig(width=1024)


def _precision_recall(pred, truth):
    tp = (pred & truth).sum()
    return tp / max(pred.sum(), 1), tp / max(truth.sum(), 1)


@pytest.mark.parametrize('use_ring', [True, False])
def test_range_angle_separates_ground_from_boxes(use_ring):
    xyz, ring, truth = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    ground = segment_ground(xyz, ring if use_ring else None, GroundConfig(), range_image_cfg=RI)
    assert ground.dtype == bool and ground.shape == (xyz.shape[0],)
    p, r = _precision_recall(ground, truth == 0)
    assert p > 0.99 and r > 0.97
    # the flat roofs of the car-like boxes are not ground
    roof = (truth == 1) & (xyz[:, 2] > -0.25)
    assert roof.sum() > 10 and not ground[roof].any()


def test_range_angle_follows_a_slope():
    xyz, ring, truth = simulate_scan(STREET[:3], num_beams=32, num_azimuth=1024,
                                     ground_slope_deg=4.0)
    ground = segment_ground(xyz, ring, range_image_cfg=RI)
    p, r = _precision_recall(ground, truth == 0)
    assert p > 0.99 and r > 0.95


def test_angle_diff_propagation_keeps_noisy_ground():
    # 2 cm range noise makes the beam-to-beam angle of near ground exceed 7 deg here and there
    xyz, ring, truth = simulate_scan(STREET, num_beams=64, num_azimuth=1024, noise=0.02)
    strict = segment_ground(xyz, ring, GroundConfig(propagation='threshold'),
                            range_image_cfg=RI)
    spread = segment_ground(xyz, ring, GroundConfig(), range_image_cfg=RI)
    p_strict, r_strict = _precision_recall(strict, truth == 0)
    p_spread, r_spread = _precision_recall(spread, truth == 0)
    assert r_spread > 0.95 and r_spread > r_strict + 0.03
    assert p_spread > 0.99 and p_strict > 0.99


def test_max_ground_angle_stops_ground_climbing_a_wall():
    xyz, ring, truth = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    wall = truth == 4
    uncapped = segment_ground(xyz, ring, GroundConfig(max_ground_angle_deg=89.0),
                              range_image_cfg=RI)
    capped = segment_ground(xyz, ring, GroundConfig(), range_image_cfg=RI)
    assert uncapped[wall].mean() > 0.03  # through the smoothed foot of the wall
    assert not capped[wall].any()


def test_reuses_prebuilt_range_image():
    xyz, ring, _ = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    ri = build_range_image(xyz, ring, RI)
    a = segment_ground(xyz, ring, range_image=ri)
    b = segment_ground(xyz, ring, range_image_cfg=RI)
    assert np.array_equal(a, b)
    with pytest.raises(ConfigError, match='same scan'):
        segment_ground(xyz[:-5], None, range_image=ri)


@pytest.mark.parametrize('backend', ['numpy', 'open3d'])
def test_ransac_finds_the_road_plane(backend):
    if backend == 'open3d':
        pytest.importorskip('open3d')
    xyz, _, truth = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    cfg = GroundConfig(method='ransac', ransac_backend=backend)
    ground = segment_ground(xyz, None, cfg)
    p, r = _precision_recall(ground, truth == 0)
    assert p > 0.97 and r > 0.99


def test_ransac_rejects_walls():
    # a scene that is mostly a big wall plus a small patch of ground
    xyz, _, truth = simulate_scan([(4.0, 4.5, -40, 40, -1.73, 30)], num_beams=32,
                                  num_azimuth=1024)
    near = np.hypot(xyz[:, 0], xyz[:, 1]) < 40
    for backend in ('numpy', 'open3d'):
        if backend == 'open3d':
            pytest.importorskip('open3d')
        ground = segment_ground(xyz[near], None, GroundConfig(method='ransac',
                                                              ransac_backend=backend))
        # only the wall's foot, within ransac_distance of the road, may count as ground
        wall = truth[near] == 1
        assert ground[wall].mean() < 0.15
        assert (xyz[near][wall & ground, 2] < -1.4).all()
        assert ground[truth[near] == 0].mean() > 0.95


@pytest.mark.parametrize('method', ['range_angle', 'ransac'])
def test_all_ground_scan(method):
    xyz, ring, truth = simulate_scan([], num_beams=32, num_azimuth=512)
    assert (truth == 0).all()
    ground = segment_ground(xyz, ring, GroundConfig(method=method, ransac_backend='numpy'),
                            range_image_cfg=RangeImageConfig(width=512))
    assert ground.mean() > 0.97


@pytest.mark.parametrize('method', ['range_angle', 'ransac'])
@pytest.mark.parametrize('n', [0, 1, 2, 7])
def test_empty_and_tiny_scans(method, n):
    xyz = np.random.default_rng(n).uniform(-5, 5, (n, 3)).astype(np.float32)
    ground = segment_ground(xyz, None, GroundConfig(method=method, ransac_backend='numpy'))
    assert ground.shape == (n,) and ground.dtype == bool


def test_no_ground_in_a_scan_without_ground():
    xyz, ring, truth = simulate_scan([(-20, 20, 6, 7, -5, 8), (-20, 20, -7, -6, -5, 8)],
                                     num_beams=32, num_azimuth=512, ground=False)
    ground = segment_ground(xyz, ring, range_image_cfg=RangeImageConfig(width=512))
    assert ground.mean() < 0.01


def test_config_validation():
    with pytest.raises(ConfigError, match='smooth_window'):
        load_config(GroundConfig, overrides={'smooth_window': 4})
    with pytest.raises(ConfigError, match='method'):
        load_config(GroundConfig, overrides={'method': 'magic'})
    with pytest.raises(ConfigError, match=r'xyz must be \(N, 3\)'):
        segment_ground(np.zeros((3, 2)))


def test_real_semantickitti_ground(semantickitti_dir):
    from dsseg_core.semantickitti import GROUND_RAW_IDS, load_labels, load_scan

    xyz, _ = load_scan(semantickitti_dir / 'velodyne' / '000000.bin')
    gt = load_labels(semantickitti_dir / 'labels' / '000000.label', xyz.shape[0])
    known = gt.semantic_raw > 1
    truth = np.isin(gt.semantic_raw, GROUND_RAW_IDS)
    for cfg in (GroundConfig(), GroundConfig(method='ransac', ransac_backend='numpy')):
        ground = segment_ground(xyz, None, cfg)
        p, r = _precision_recall(ground[known], truth[known])
        assert p > 0.9 and r > 0.75, (cfg.method, p, r)


# ------------------------------------------------------------------------------------------
# numba kernel vs the numpy reference path: identical ground masks

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed: only the '
                                 'numpy path exists, there is nothing to compare')

CONFIGS = [
    GroundConfig(),
    GroundConfig(propagation='threshold'),
    GroundConfig(smooth_window=1),
    GroundConfig(smooth_window=9, max_row_gap=0),
    GroundConfig(max_ground_angle_deg=89.0, max_row_gap=4),
    GroundConfig(ground_angle_deg=30.0, max_ground_angle_deg=10.0),  # seeds not candidates
    GroundConfig(max_step_z=0.05, pixel_height_tolerance=0.05, angle_tolerance_deg=1.0),
]


def _assert_same_ground(both_paths, xyz, ri, cfg):
    a, b = both_paths(lambda: ground_from_range_image(xyz, ri, cfg))
    assert a.dtype == b.dtype == bool and a.shape == b.shape
    assert np.array_equal(a, b), f'{(a != b).sum()} points differ ({cfg})'
    return a


def _simulated():
    yield 'street', *simulate_scan(STREET, num_beams=32, num_azimuth=1024)[:2]
    yield 'noisy', *simulate_scan(STREET, num_beams=64, num_azimuth=1024, noise=0.02)[:2]
    yield 'slope', *simulate_scan(STREET[:3], num_beams=32, num_azimuth=1024,
                                  ground_slope_deg=4.0)[:2]
    yield 'no_ground', *simulate_scan([(-20, 20, 6, 7, -5, 8), (-20, 20, -7, -6, -5, 8)],
                                      num_beams=32, num_azimuth=512, ground=False)[:2]
    xyz, ring, _ = simulate_scan(STREET, num_beams=32, num_azimuth=1024, seed=3)
    bad = xyz.copy()
    bad[::23] = np.nan
    yield 'holes', bad, ring
    yield 'float64', xyz.astype(np.float64), ring
    yield 'one_beam', xyz[ring == 20], ring[ring == 20]


@needs_numba
@pytest.mark.parametrize('name', [s[0] for s in _simulated()])
def test_kernel_matches_numpy_on_simulated_scans(both_paths, name):
    _, xyz, ring = next(s for s in _simulated() if s[0] == name)
    ri = build_range_image(xyz, ring, RI)
    for cfg in CONFIGS:
        _assert_same_ground(both_paths, xyz, ri, cfg)


@needs_numba
def test_kernel_matches_numpy_on_the_sample_bag(both_paths, sample_scans):
    assert len(sample_scans) == 20
    for k, xyz in enumerate(sample_scans):
        ri = build_range_image(xyz)
        ground = _assert_same_ground(both_paths, xyz, ri, GroundConfig())
        assert 0.2 < ground.mean() < 0.8
        if k % 5 == 0:
            for cfg in CONFIGS[1:]:
                _assert_same_ground(both_paths, xyz, ri, cfg)


@needs_numba
def test_kernel_matches_numpy_on_real_scans(both_paths, semantickitti_dir, nuscenes_dir):
    from dsseg_core.semantickitti import load_scan

    xyz, _ = load_scan(semantickitti_dir / 'velodyne' / '000000.bin')
    for ri_cfg in (RangeImageConfig(), RangeImageConfig(row_method='elevation')):
        ri = build_range_image(xyz, None, ri_cfg)
        for cfg in CONFIGS:
            _assert_same_ground(both_paths, xyz, ri, cfg)
    pts = np.fromfile(next(nuscenes_dir.glob('*LIDAR_TOP*.pcd.bin')), np.float32).reshape(-1, 5)
    ri = build_range_image(pts[:, :3], pts[:, 4].astype(int), RangeImageConfig(width=1024))
    for cfg in CONFIGS:
        _assert_same_ground(both_paths, pts[:, :3], ri, cfg)


@needs_numba
def test_kernel_computes_horizontal_distances_the_range_image_lacks(monkeypatch):
    xyz, ring, _ = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    ri = build_range_image(xyz, ring, RI)
    ri_bare = dataclasses.replace(ri, point_dxy=np.zeros(0))
    monkeypatch.setenv('DSSEG_JIT', '1')
    assert np.array_equal(ground_from_range_image(xyz, ri_bare, GroundConfig()),
                          ground_from_range_image(xyz, ri, GroundConfig()))


@pytest.mark.parametrize('window', [3, 5, 7, 9, 11, 25])
def test_correlation_is_scipys_convolution(window):
    from scipy.ndimage import convolve1d

    rng = np.random.default_rng(window)
    # the Savitzky-Golay kernel is symmetric up to rounding: scipy's symmetric or general loop
    weights, sym = _correlate_weights(window)
    assert sym in (0, 1)
    for h in (window, window + 1, 64, 130):
        x = rng.normal(10, 5, h)
        x[rng.random(h) < 0.2] = 90.0
        out = np.array([_correlate_at(x, h, weights, sym, i) for i in range(h)])
        ref = convolve1d(x, _savgol_coeffs(window), mode='nearest')
        assert np.array_equal(out, ref), (window, h)


@pytest.mark.parametrize('kind', ['general', 'antisymmetric'])
def test_correlation_branches_match_scipy(kind):
    from scipy.ndimage import correlate1d

    rng = np.random.default_rng(7)
    w = rng.normal(size=5) if kind == 'general' else np.array([-0.3, 0.7, 0.0, -0.7, 0.3])
    sym = 0 if kind == 'general' else -1
    x = rng.normal(size=40)
    out = np.array([_correlate_at(x, 40, np.ascontiguousarray(w), sym, i) for i in range(40)])
    assert np.array_equal(out, correlate1d(x, w, mode='nearest'))


@needs_numba
@pytest.mark.parametrize('err_deg', [0.5, 5.0, 1e9])
def test_exact_redecisions_give_the_same_mask(monkeypatch, err_deg):
    # a huge error bound for the fast angles makes many (1e9: all) columns and horizontal
    # edges too close to call: the kernel then decides them again with libm's angles; the
    # mask must still be the numpy path's
    from dsseg_core.pseudolabel.ground import _ground_jit

    xyz, ring, _ = simulate_scan(STREET, num_beams=64, num_azimuth=1024, noise=0.02)
    ri = build_range_image(xyz, ring, RI)
    for cfg in CONFIGS:
        monkeypatch.setenv('DSSEG_JIT', '0')
        ref = ground_from_range_image(xyz, ri, cfg)
        assert np.array_equal(_ground_jit(xyz, ri, cfg, err_deg), ref), cfg


def test_fast_arctangent_is_within_its_bound():
    import math

    from dsseg_core.pseudolabel.ground import _FAST_ATAN_ERR_DEG, _atan2_deg_fast

    tab = np.array([math.atan(k * 0.125) for k in range(9)])
    rng = np.random.default_rng(0)
    y = np.abs(rng.normal(size=20000)) * 10.0 ** rng.uniform(-8, 3, 20000)
    x = np.abs(rng.normal(size=20000)) * 10.0 ** rng.uniform(-8, 3, 20000)
    special = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (np.inf, 1.0), (1.0, np.inf),
               (1e-300, 1.0), (1.0, 1e-300), (0.0625, 1.0), (0.1875, 1.0)]
    y = np.concatenate([y, x, [a for a, _ in special]])
    x = np.concatenate([x, y[:20000] * (1 + 1e-9), [b for _, b in special]])
    err = max(abs(_atan2_deg_fast(a, b, tab) - np.degrees(math.atan2(a, b)))
              for a, b in zip(y.tolist(), x.tolist(), strict=True))
    assert err < _FAST_ATAN_ERR_DEG / 100


def test_column_decisions_flag_comparisons_within_the_margin():
    from dsseg_core.pseudolabel.ground import _column_decisions

    h = 4

    def decide(alpha, a_prev, margin, zc=None):
        alpha = np.asarray(alpha, float)
        raw = alpha.copy()
        prev = np.array([-1, 0, 1, 2])
        vc = np.ones(2 * h, bool)
        zc = np.zeros(2 * h) if zc is None else zc
        cand = np.zeros(2 * h, bool)
        cand[:h] = True  # the previous column: all candidates
        down, up = np.zeros(2 * h, np.int8), np.zeros(2 * h, np.int8)
        right = np.zeros(2 * h, bool)
        seed = np.full(2, -1)
        a_cur = np.zeros(h)
        flags = _column_decisions(1, h, h, alpha, raw, prev, vc, zc, cand, down, up, right,
                                  seed, a_cur, np.asarray(a_prev, float), False, 7.0, 20.0, 5.0,
                                  12.0, 0.3, margin, margin, 2 * margin)
        return flags, cand[h:], down[h:], right[:h], seed[1]

    (amb_col, amb_h, seedable), cand, down, right, seed = decide(
        [3.0, 4.0, 5.0, 30.0], [3.0, 4.0, 5.0, 30.0], 1e-6)
    assert not amb_col and not amb_h and seedable
    assert cand.tolist() == [True, True, True, False] and seed == h
    assert down.tolist() == [0, 1, 1, 0] and right.tolist() == [True, True, True, False]
    # a smoothed angle at the seed threshold, a vertical difference at the tolerance
    assert decide([7.0 - 1e-9, 4.0, 5.0, 30.0], [3, 4, 5, 30], 1e-6)[0][:2] == (True, False)
    assert decide([3.0, 8.0 - 1e-9, 5.0, 30.0], [3, 8, 5, 30], 1e-6)[0][:2] == (True, False)
    # a horizontal difference at the tolerance: the edge to the previous column is in doubt
    assert decide([3.0, 4.0, 5.0, 30.0], [3.0, 9.0 + 1e-9, 5.0, 30.0], 1e-6)[0][:2] == (
        False, True)
    # margins 0: nothing is in doubt
    assert decide([7.0 - 1e-9, 4.0, 5.0, 30.0], [3.0, 9.5, 5.0, 30.0], 0.0)[0][:2] == (
        False, False)

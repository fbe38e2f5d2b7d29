from __future__ import annotations

import numpy as np
import pytest
from lidar_scene import STREET, simulate_scan

from dsseg_core.config import load_config
from dsseg_core.errors import ConfigError
from dsseg_core.pseudolabel.ground import GroundConfig, segment_ground
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

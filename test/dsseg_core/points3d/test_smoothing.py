"""Geometry-aware label smoothing: noise removal, no leaks across surfaces, ground rule."""

from __future__ import annotations

import numpy as np
import pytest

from dsseg_core.errors import ConfigError
from dsseg_core.points3d.smoothing import (
    SmoothingConfig,
    boundary_leak,
    fit_ground_ransac,
    knn_vote,
    smooth_labels,
    voxel_downsample,
)

GROUND, WALL, POLE = 0, 1, 2


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ground plane z=-1.7, a wall x=8 (facing the sensor), a thin pole 0.3 m in front of it."""
    gx, gy = np.meshgrid(np.arange(2.0, 12.0, 0.1), np.arange(-5.0, 5.0, 0.1))
    ground = np.c_[gx.ravel(), gy.ravel(), np.full(gx.size, -1.7)]
    wy, wz = np.meshgrid(np.arange(-5.0, 5.0, 0.08), np.arange(-1.6, 2.0, 0.08))
    wall = np.c_[np.full(wy.size, 8.0), wy.ravel(), wz.ravel()]
    pz = np.arange(-1.6, 2.0, 0.05)
    pole = np.c_[np.full(pz.size, 7.7), np.full(pz.size, 0.0), pz]
    xyz = np.concatenate([ground, wall, pole])
    xyz = (xyz + rng.normal(0, 0.004, xyz.shape)).astype(np.float32)
    gt = np.concatenate([np.full(len(ground), GROUND), np.full(len(wall), WALL),
                         np.full(len(pole), POLE)]).astype(np.int32)
    return xyz, gt


def _noisy(gt: np.ndarray, rng: np.random.Generator, flip: float = 0.15,
           drop: float = 0.2) -> np.ndarray:
    out = gt.copy()
    f = rng.random(len(gt)) < flip
    out[f] = rng.integers(0, 3, f.sum())
    out[rng.random(len(gt)) < drop] = -1
    return out


def test_geometric_smoothing_removes_noise_and_fills_unknown(kernel_path: str) -> None:
    rng = np.random.default_rng(0)
    xyz, gt = _scene(rng)
    noisy = _noisy(gt, rng)
    cfg = SmoothingConfig(voxel_size=0.1, ground='none')
    res = smooth_labels(xyz, noisy, cfg=cfg, num_classes=3)
    known = noisy >= 0
    before = (noisy[known] == gt[known]).mean()
    after = (res.labels == gt).mean()
    assert before < 0.92
    assert after > 0.97
    assert (res.labels[~known] >= 0).mean() > 0.99  # unknown points got a label
    assert res.labels.dtype == np.int32 and res.confidence.dtype == np.float32
    assert res.num_changed > 0


def test_thin_pole_keeps_its_label_next_to_a_wall_unlike_knn_vote(kernel_path: str) -> None:
    rng = np.random.default_rng(1)
    xyz, gt = _scene(rng)
    pole = gt == POLE
    cfg = SmoothingConfig(voxel_size=0.1, ground='none', k=12)
    res = smooth_labels(xyz, gt, cfg=cfg, num_classes=3)
    base, _ = knn_vote(xyz, gt, k=12, max_distance=1.0, num_classes=3)
    geo_keep = (res.labels[pole] == POLE).mean()
    knn_keep = (base[pole] == POLE).mean()
    assert geo_keep > 0.9
    assert knn_keep < geo_keep  # the plain vote lets the wall swallow the pole
    # and the wall is not contaminated by the pole
    assert (res.labels[gt == WALL] == WALL).mean() > 0.99


def test_ground_points_only_take_ground_classes(kernel_path: str) -> None:
    rng = np.random.default_rng(2)
    xyz, gt = _scene(rng)
    labels = gt.copy()
    labels[gt == GROUND] = WALL  # the image model called the whole road 'wall'
    labels[(gt == GROUND) & (rng.random(len(gt)) < 0.3)] = GROUND
    cfg = SmoothingConfig(voxel_size=0.1, ground='ransac', ground_classes=[GROUND],
                          ground_default=GROUND)
    res = smooth_labels(xyz, labels, cfg=cfg, num_classes=3)
    assert res.ground_mask is not None
    assert res.ground_mask[gt == GROUND].mean() > 0.95
    assert not res.ground_mask[gt == POLE][10:].any()  # upper pole is not ground
    assert set(np.unique(res.labels[res.ground_mask])) <= {GROUND}
    # a given mask is honoured and must have the scan's length
    given = gt == GROUND
    res2 = smooth_labels(xyz, labels, cfg=cfg.model_copy(update={'ground': 'given'}),
                         ground_mask=given, num_classes=3)
    assert (res2.labels[given] == GROUND).all()
    with pytest.raises(ConfigError, match='ground_mask'):
        smooth_labels(xyz, labels, cfg=cfg, ground_mask=given[:-1], num_classes=3)
    with pytest.raises(ConfigError, match='ground_mask'):
        smooth_labels(xyz, labels, cfg=cfg.model_copy(update={'ground': 'given'}), num_classes=3)


def test_knn_method_and_none_method() -> None:
    rng = np.random.default_rng(3)
    xyz, gt = _scene(rng)
    noisy = _noisy(gt, rng, flip=0.1, drop=0.0)
    res = smooth_labels(xyz, noisy, cfg=SmoothingConfig(method='knn', k=8), num_classes=3)
    assert (res.labels == gt).mean() > (noisy == gt).mean()
    same = smooth_labels(xyz, noisy, cfg=SmoothingConfig(method='none'))
    assert np.array_equal(same.labels, noisy) and same.num_changed == 0


def test_bad_inputs_raise_config_errors() -> None:
    xyz = np.zeros((10, 3), np.float32)
    with pytest.raises(ConfigError, match='labels must be'):
        smooth_labels(xyz, np.zeros(9, np.int32))
    with pytest.raises(ConfigError, match='xyz must be'):
        smooth_labels(np.zeros((10, 2)), np.zeros(10, np.int32))
    with pytest.raises(ConfigError, match='confidence'):
        smooth_labels(xyz, np.zeros(10, np.int32), np.ones(3))
    with pytest.raises(ConfigError, match='num_classes'):
        smooth_labels(xyz, np.full(10, 5, np.int32), num_classes=3)
    empty = smooth_labels(np.zeros((0, 3)), np.zeros(0, np.int32))
    assert empty.labels.shape == (0,)
    unknown = smooth_labels(np.random.default_rng(0).random((50, 3)), np.full(50, -1, np.int32),
                            cfg=SmoothingConfig(ground='none'), num_classes=2)
    assert (unknown.labels == -1).all()


def test_voxel_downsample_and_ransac(kernel_path: str) -> None:
    xyz = np.array([[0.01, 0.01, 0.01], [0.02, 0.03, 0.04], [1.0, 1.0, 1.0]], np.float32)
    inv, cent = voxel_downsample(xyz, 0.5)
    assert inv[0] == inv[1] != inv[2]
    assert np.allclose(cent[inv[0]], [0.015, 0.02, 0.025])
    rng = np.random.default_rng(4)
    plane = np.c_[rng.uniform(-20, 20, (3000, 2)), np.zeros(3000)]
    plane[:, 2] = -1.8 + 0.05 * plane[:, 0]  # ~3 deg slope
    box = rng.uniform([5, -1, -1.5], [7, 1, 0], (800, 3))
    mask = fit_ground_ransac(np.concatenate([plane, box]).astype(np.float32), 0.15)
    assert mask[:3000].mean() > 0.98
    assert mask[3000:].mean() < 0.15  # only the bottom slice of the box touches the plane
    assert not fit_ground_ransac(np.zeros((2, 3))).any()


def test_boundary_leak_metric_on_known_cases() -> None:
    x = np.arange(0, 2.0, 0.1)
    xyz = np.c_[x, np.zeros_like(x), np.zeros_like(x)].astype(np.float32)
    gt = (x >= 1.0).astype(np.int32)
    perfect = boundary_leak(xyz, gt, gt, k=2, max_distance=0.15)
    assert perfect.boundary_edges == 1 and perfect.leak_rate == 0.0
    assert perfect.interior_disagreement == 0.0 and perfect.accuracy == 1.0
    merged = boundary_leak(xyz, gt, np.zeros_like(gt), k=2, max_distance=0.15)
    assert merged.leak_rate == 1.0
    assert merged.accuracy == pytest.approx(0.5)
    half = np.where(np.arange(len(x)) < 15, gt, -1)
    partial = boundary_leak(xyz, gt, half, k=2, max_distance=0.15)
    assert partial.coverage == pytest.approx(0.75)


def test_smoothing_on_semantickitti_leaks_less_than_knn(semantickitti_dir,
                                                         kernel_path: str) -> None:
    """Real scan, noisy GT-derived labels: geometric smoothing beats the kNN vote on leaks."""
    from dsseg_core.semantickitti import load_labels, load_scan

    xyz, _ = load_scan(semantickitti_dir / 'velodyne' / '000000.bin')
    gt = load_labels(semantickitti_dir / 'labels' / '000000.label', len(xyz)).train_ids
    rng = np.random.default_rng(0)
    noisy = gt.copy()
    flip = rng.random(len(gt)) < 0.05
    noisy[flip] = rng.integers(0, 19, flip.sum())
    noisy[rng.random(len(gt)) < 0.1] = -1
    geo = smooth_labels(xyz, noisy, cfg=SmoothingConfig(ground='none', keep_margin=0.3),
                        num_classes=19)
    knn, _ = knn_vote(xyz, noisy, k=10, num_classes=19)
    s_noisy = boundary_leak(xyz, gt, noisy)
    s_geo = boundary_leak(xyz, gt, geo.labels)
    s_knn = boundary_leak(xyz, gt, knn)
    assert s_geo.accuracy > s_noisy.accuracy + 0.02
    assert s_geo.interior_disagreement < s_noisy.interior_disagreement / 2
    assert s_geo.leak_rate < s_knn.leak_rate


def test_active_region_gives_the_same_result_as_the_full_scan(kernel_path: str) -> None:
    rng = np.random.default_rng(5)
    xyz, gt = _scene(rng)
    labels = np.where(xyz[:, 1] > 3.0, gt, -1).astype(np.int32)  # one side labelled only
    full = smooth_labels(xyz, labels, cfg=SmoothingConfig(active_region=False, ground='none'),
                         num_classes=3)
    fast = smooth_labels(xyz, labels, cfg=SmoothingConfig(active_region=True, ground='none'),
                         num_classes=3)
    assert (full.labels >= 0).sum() < len(xyz) * 0.6  # far points stay unknown
    assert np.array_equal(full.labels, fast.labels)
    assert np.allclose(full.confidence, fast.confidence)

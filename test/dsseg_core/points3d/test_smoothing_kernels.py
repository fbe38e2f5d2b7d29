"""Numba smoothing kernels (active region, voxels, eigenvectors, edge gate, CSR) vs numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import dsseg_core.points3d.smoothing as smoothing
from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.points3d.smoothing import SmoothingConfig, smooth_labels, voxel_downsample
from dsseg_core.points3d.smoothing_kernels import adjacency_csr_kernel, sym3_vectors_kernel

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed')

CONFIGS = [
    SmoothingConfig(),
    SmoothingConfig(ground='none'),
    SmoothingConfig(voxel_size=0.4, k=6, keep_margin=0.0),
    SmoothingConfig(active_region=False, ground='none', scatter_propagates=False),
    SmoothingConfig(point_plane_tolerance=0.1, ground_classes=[0, 3], ground_default=None),
    SmoothingConfig(voxel_size=0.0, k=4, ground='none'),
]


def _assert_same(a: smoothing.SmoothingResult, b: smoothing.SmoothingResult) -> None:
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.confidence, b.confidence)  # bit-identical
    assert a.num_changed == b.num_changed
    assert (a.ground_mask is None) == (b.ground_mask is None)
    if a.ground_mask is not None:
        np.testing.assert_array_equal(a.ground_mask, b.ground_mask)


def _street(n: int = 30_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground, two walls, poles and scattered bushes; labels from the structure + noise."""
    rng = np.random.default_rng(seed)
    k = n // 5
    ground = np.c_[rng.uniform(-20, 20, (2 * k, 2)), rng.normal(-1.7, 0.02, 2 * k)]
    wall = np.c_[rng.choice([-8.0, 8.0], k) + rng.normal(0, 0.02, k), rng.uniform(-20, 20, k),
                 rng.uniform(-1.7, 3, k)]
    pole = np.c_[rng.choice([-3.0, 3.0], k) + rng.normal(0, 0.03, k),
                 rng.choice([-10.0, 0.0, 10.0], k) + rng.normal(0, 0.03, k),
                 rng.uniform(-1.7, 4, k)]
    bush = rng.normal([5, 5, 0], 1.0, (n - 4 * k, 3))
    xyz = np.concatenate([ground, wall, pole, bush]).astype(np.float32)
    labels = np.repeat([0, 1, 2, 3], [2 * k, k, k, n - 4 * k]).astype(np.int32)
    flip = rng.random(n) < 0.1
    labels[flip] = rng.integers(0, 4, flip.sum())
    labels[rng.random(n) < 0.3] = -1
    labels[xyz[:, 0] < -12] = -1  # a region without labels (active region)
    return xyz, labels


@pytest.mark.parametrize('cfg', CONFIGS, ids=range(len(CONFIGS)))
def test_smooth_labels_kernels_equal_numpy(both_paths, cfg: SmoothingConfig) -> None:
    xyz, labels = _street()
    conf = np.random.default_rng(1).uniform(0.2, 1.0, len(xyz)).astype(np.float32)
    jit, ref = both_paths(lambda: smooth_labels(xyz, labels, conf, cfg, num_classes=4))
    _assert_same(jit, ref)
    assert ref.num_changed > 100


@pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')
def test_given_ground_mask_and_non_finite_points(both_paths) -> None:
    xyz, labels = _street(10_000, seed=2)
    mask = xyz[:, 2] < -1.5
    cfg = SmoothingConfig(ground='given')
    jit, ref = both_paths(lambda: smooth_labels(xyz, labels, cfg=cfg, ground_mask=mask,
                                                num_classes=4))
    _assert_same(jit, ref)
    bad = xyz.copy()
    bad[::500] = np.nan  # cells of NaN points are undefined: both take the numpy path
    jit, ref = both_paths(lambda: smoothing.voxel_downsample(bad, 0.3))
    np.testing.assert_array_equal(jit[0], ref[0])
    np.testing.assert_array_equal(jit[1], ref[1])


@pytest.mark.parametrize('size', [0.05, 0.3, 1.0, 7.0])
def test_voxel_downsample_kernel_equals_numpy(both_paths, size: float) -> None:
    xyz, _ = _street(20_000, seed=3)
    xyz[:100] = xyz[100:200]  # duplicate points
    (inv_j, cent_j), (inv_r, cent_r) = both_paths(lambda: voxel_downsample(xyz, size))
    assert inv_j.dtype == inv_r.dtype
    np.testing.assert_array_equal(inv_j, inv_r)  # same numbering (increasing cell key)
    np.testing.assert_array_equal(cent_j, cent_r)  # same float64 sums in point order
    one = np.array([[1.0, 2.0, 3.0]], np.float32)
    (a, b), (c, d) = both_paths(lambda: voxel_downsample(one, size))
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, d)


@pytest.mark.parametrize('reach', [0.3, 2.4, 9.0])
def test_active_points_kernel_equals_numpy(both_paths, reach: float) -> None:
    xyz, labels = _street(20_000, seed=4)
    sparse_labels = (labels >= 0) & (np.arange(len(xyz)) % 37 == 0)
    jit, ref = both_paths(lambda: smoothing._active_points(xyz, sparse_labels, reach))
    np.testing.assert_array_equal(jit, ref)
    assert 0 < ref.sum() < len(xyz)
    none = np.zeros(len(xyz), bool)
    jit, ref = both_paths(lambda: smoothing._active_points(xyz, none, reach))
    np.testing.assert_array_equal(jit, ref)
    huge = xyz * 1e6  # grid too large: both give None (all points used)
    jit, ref = both_paths(lambda: smoothing._active_points(huge, sparse_labels, 0.01))
    assert jit is None and ref is None


def test_sym3_eigenvectors_equal_numpy(both_paths) -> None:
    rng = np.random.default_rng(6)
    v = 5000
    a = rng.normal(size=(v, 3, 3))
    c = a @ a.transpose(0, 2, 1)
    c[:100] = 0.0  # degenerate: any unit vector (0, 0, 1)
    c[100:200] = np.eye(3) * 2.0  # isotropic
    c[200:300, 2, :] = c[200:300, :, 2] = 0.0  # planar
    comps = [np.ascontiguousarray(c[:, i, j]) for i, j in
             ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))]
    comps[0][300] = np.nan
    (ej, dj, nj), (er, dr, nr) = both_paths(lambda: smoothing._sym3_eig(*comps))
    np.testing.assert_array_equal(ej, er)
    np.testing.assert_array_equal(dj, dr)
    np.testing.assert_array_equal(nj, nr)
    direct = sym3_vectors_kernel(*comps, np.ascontiguousarray(er[:, 0]))
    np.testing.assert_array_equal(direct, dr)


def test_adjacency_csr_equals_scipy() -> None:
    rng = np.random.default_rng(7)
    v, k = 2000, 9
    nbr = rng.integers(0, v, (v, k))
    for i in range(v):  # distinct neighbours per row, like a kNN query
        nbr[i] = rng.choice(v, k, replace=False)
    keep = rng.random((v, k)) < 0.6
    indptr, indices = adjacency_csr_kernel(nbr, keep)
    rows = np.broadcast_to(np.arange(v)[:, None], nbr.shape)
    ref = sparse.csr_matrix((np.ones(int(keep.sum())), (rows[keep], nbr[keep])), shape=(v, v))
    np.testing.assert_array_equal(indptr, ref.indptr)
    np.testing.assert_array_equal(indices, ref.indices)  # sorted rows: same summation order


def test_smoothing_uses_the_kernels(monkeypatch) -> None:
    calls = []
    for name in ('active_cells_kernel', 'voxel_kernel', 'edge_gate_kernel',
                 'sym3_vectors_kernel', 'adjacency_csr_kernel'):
        kernel = getattr(smoothing, name)
        monkeypatch.setattr(smoothing, name,
                            lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    xyz, labels = _street(5000, seed=8)
    monkeypatch.setenv('DSSEG_JIT', '1')
    smooth_labels(xyz, labels, num_classes=4)
    assert set(calls) == {'active_cells_kernel', 'voxel_kernel', 'edge_gate_kernel',
                          'sym3_vectors_kernel', 'adjacency_csr_kernel'}
    calls.clear()
    monkeypatch.setenv('DSSEG_JIT', '0')
    smooth_labels(xyz, labels, num_classes=4)
    assert calls == []


def test_kernels_equal_numpy_on_kitti_transfer(both_paths, kitti_raw_dir: Path) -> None:
    """The bench case: labels transferred from a 12-band image, then smoothed."""
    from dsseg_core.calibration import load_kitti_raw
    from dsseg_core.points3d.transfer import CameraView, transfer_labels

    calib = load_kitti_raw(kitti_raw_dir)
    w, h = calib.camera.size
    u = np.arange(w)[None, :].repeat(h, 0)
    v = np.arange(h)[:, None].repeat(w, 1)
    img = ((u * 6) // w + 6 * (v > h // 2)).astype(np.uint8)
    views = [CameraView(calib, img, np.ones(img.shape, np.float32))]
    for i in (0, 30):
        xyz = np.fromfile(kitti_raw_dir / f'velodyne_points/data/{i:010d}.bin',
                          np.float32).reshape(-1, 4)[:, :3].copy()
        tr = transfer_labels(xyz, views, min_depth=1.0)
        for cfg in CONFIGS[:3]:
            jit, ref = both_paths(lambda c=cfg, x=xyz, t=tr: smooth_labels(
                x, t.labels, t.confidence, c, num_classes=12))
            _assert_same(jit, ref)


def test_kernels_equal_numpy_on_semantickitti(both_paths, semantickitti_dir: Path) -> None:
    """Every point labelled (the worst case of the smoothing)."""
    from dsseg_core.semantickitti import load_scan

    xyz, _ = load_scan(semantickitti_dir / 'velodyne' / '000000.bin')
    labels = np.random.default_rng(0).integers(-1, 19, len(xyz)).astype(np.int32)
    for cfg in CONFIGS[:2]:
        jit, ref = both_paths(lambda c=cfg: smooth_labels(xyz, labels, cfg=c,
                                                          num_classes=19))
        _assert_same(jit, ref)

"""Numba projection / z-buffer kernels against the numpy reference path (bit-identical)."""
# Matrix names follow the maths (K, D, R, T, P): ruff pep8-naming is relaxed for them.
# ruff: noqa: N802, N803, N806


from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

import dsseg_core.projection as projection
from dsseg_core.calibration import (
    CameraCalibration,
    CameraModel,
    load_kitti_raw,
    load_nuscenes_sample,
)
from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.projection import Projection, project_points, zbuffer_visible

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed')

W, H = 640, 480
T_OPT = np.array([[0.0, -1.0, 0.0, 0.1], [0.0, 0.0, -1.0, 0.2], [1.0, 0.0, 0.0, -0.3],
                  [0.0, 0.0, 0.0, 1.0]])


def _calib(model: str = 'none', D=(), skew: float = 0.0) -> CameraCalibration:
    K = np.array([[500.0, skew, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]])
    return CameraCalibration(CameraModel(W, H, K, list(D), model, 'cam', 'cam'), T_OPT)


CAMERAS = {
    'pinhole': _calib(),
    'pinhole_skew': _calib(skew=0.7),
    'plumb_bob': _calib('plumb_bob', [-0.3, 0.1, 0.001, -0.002, 0.05]),
    'rational': _calib('rational_polynomial', [0.5, -0.2, 0.001, 0.002, 0.01, 0.8, -0.1, 0.02]),
    'plumb_bob_skew': _calib('plumb_bob', [-0.1, 0.01, 0.0, 0.0, 0.0], skew=1.5),
}


def _assert_same_projection(a: Projection, b: Projection) -> None:
    assert a.point_index.dtype == b.point_index.dtype == np.int64
    assert a.uv.dtype == b.uv.dtype == np.float32 and a.depth.dtype == np.float32
    np.testing.assert_array_equal(a.point_index, b.point_index)
    np.testing.assert_array_equal(a.uv, b.uv)  # bit-identical, not approximately equal
    np.testing.assert_array_equal(a.depth, b.depth)
    assert (a.width, a.height) == (b.width, b.height)


def _random_cloud(n: int = 50_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)) * [15.0, 15.0, 3.0, 1.0]).astype(np.float32)


@pytest.mark.parametrize('camera', sorted(CAMERAS))
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_project_points_kernel_equals_numpy(both_paths, camera: str, dtype) -> None:
    pts = _random_cloud().astype(dtype)
    calib = CAMERAS[camera]
    for arr in (pts, pts[:, :3], np.ascontiguousarray(pts[:, :3])):
        for min_depth in (0.5, 3.0):
            jit, ref = both_paths(lambda a=arr, m=min_depth: project_points(a, calib, m))
            assert len(ref) > 1000
            _assert_same_projection(jit, ref)


def test_project_points_kernel_handles_edges(both_paths) -> None:
    """NaN/inf points, points exactly on the image border, an empty cloud, int input."""
    calib = CAMERAS['pinhole']
    u = np.array([0.0, 639.999, 640.0, 320.0, 320.0])
    v = np.array([240.0, 240.0, 240.0, 0.0, 480.0])
    depth = np.full(5, 4.0)
    x_cam = (u - 320.0) / 500.0 * depth
    y_cam = (v - 240.0) / 480.0 * depth
    cam = np.stack([x_cam, y_cam, depth, np.ones(5)], axis=1)
    lidar = (np.linalg.inv(T_OPT) @ cam.T).T[:, :3].astype(np.float32)
    bad = np.array([[np.nan, 0, 0], [np.inf, 0, 0], [5.0, np.nan, 1.0]], np.float32)
    pts = np.concatenate([lidar, bad])
    jit, ref = both_paths(lambda: project_points(pts, calib))
    _assert_same_projection(jit, ref)
    empty = np.zeros((0, 3), np.float32)
    jit, ref = both_paths(lambda: project_points(empty, calib))
    _assert_same_projection(jit, ref)
    assert len(jit) == 0
    ints = np.array([[10, 0, 0], [20, 1, 1]], np.int32)
    jit, ref = both_paths(lambda: project_points(ints, calib))
    _assert_same_projection(jit, ref)
    assert len(jit) == 2


def test_project_points_uses_the_kernels(monkeypatch) -> None:
    """The jit path really runs the kernels (else the equality tests compare numpy to numpy);
    fisheye cameras stay on the numpy path."""
    calls = []
    for name in ('project_pinhole_kernel', 'project_distorted_kernel'):
        kernel = getattr(projection, name)
        monkeypatch.setattr(projection, name,
                            lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    monkeypatch.setenv('DSSEG_JIT', '1')
    project_points(_random_cloud(100), CAMERAS['pinhole'])
    project_points(_random_cloud(100), CAMERAS['rational'])
    assert calls == ['project_pinhole_kernel', 'project_distorted_kernel']
    fisheye = _calib('equidistant', [0.1, 0.01, 0.0, 0.0])
    project_points(_random_cloud(100), fisheye)
    monkeypatch.setenv('DSSEG_JIT', '0')
    project_points(_random_cloud(100), CAMERAS['pinhole'])
    assert len(calls) == 2


def test_zbuffer_uses_the_kernel(monkeypatch) -> None:
    calls = []
    kernel = projection.zbuffer_kernel

    def spy(*args):
        calls.append(1)
        return kernel(*args)

    monkeypatch.setattr(projection, 'zbuffer_kernel', spy)
    monkeypatch.setenv('DSSEG_JIT', '1')
    proj = project_points(_random_cloud(2000), CAMERAS['pinhole'])
    zbuffer_visible(proj, W, H)
    assert calls == [1]


@pytest.mark.parametrize('radius', [0, 1, 3, 7])
@pytest.mark.parametrize('tolerance', [0.0, 0.1, 0.5])
def test_zbuffer_kernel_equals_numpy(both_paths, radius: int, tolerance: float) -> None:
    proj = project_points(_random_cloud(80_000, seed=3), CAMERAS['plumb_bob'])
    jit, ref = both_paths(lambda: zbuffer_visible(proj, W, H, radius, tolerance))
    assert jit.dtype == ref.dtype == bool
    np.testing.assert_array_equal(jit, ref)
    if radius:
        assert 0 < ref.sum() < len(ref)  # the test scene has hidden and visible points


@pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')
def test_zbuffer_kernel_ties_nan_and_unsized_projections(both_paths) -> None:
    """Equal depths on one pixel, NaN depths (numpy's NaN-propagating minimum), points on the
    image border and a projection without a stored size (clipped to the requested size)."""
    rng = np.random.default_rng(5)
    m = 3000
    uv = np.stack([rng.uniform(0, W, m), rng.uniform(100, 140, m)], 1).astype(np.float32)
    uv[:50] = uv[50:100]  # same pixels ...
    depth = rng.uniform(2, 40, m).astype(np.float32)
    depth[:50] = depth[50:100]  # ... and the same depths: ties
    uv[100] = [W - 1e-3, 139.99]
    uv[101] = [0.0, 100.0]
    sized = Projection(np.arange(m), uv, depth, W, H)
    unsized = Projection(np.arange(m), uv, depth)
    for proj in (sized, unsized):
        for radius in (0, 2, 3):
            jit, ref = both_paths(lambda p=proj, r=radius: zbuffer_visible(p, W, H, r))
            np.testing.assert_array_equal(jit, ref)
    with_nan = Projection(np.arange(m), uv, np.where(np.arange(m) % 97 == 0, np.nan,
                                                     depth).astype(np.float32), W, H)
    jit, ref = both_paths(lambda: zbuffer_visible(with_nan, W, H))
    np.testing.assert_array_equal(jit, ref)
    assert not ref.all()


def test_zbuffer_scratch_is_reused_and_results_do_not_depend_on_it(monkeypatch) -> None:
    monkeypatch.setenv('DSSEG_JIT', '1')
    proj = project_points(_random_cloud(20_000, seed=9), CAMERAS['pinhole'])
    first = zbuffer_visible(proj, W, H)
    scratch = projection.zbuffer_scratch(W, H, 3)
    scratch[:] = -1.0  # garbage from an earlier call must not leak into the next one
    np.testing.assert_array_equal(zbuffer_visible(proj, W, H), first)
    assert projection.zbuffer_scratch(W, H, 3) is scratch


def _kitti_scan(kitti_raw_dir: Path, i: int) -> np.ndarray:
    return np.fromfile(kitti_raw_dir / f'velodyne_points/data/{i:010d}.bin',
                       np.float32).reshape(-1, 4)


def test_kernels_equal_numpy_on_kitti_scans(both_paths, kitti_raw_dir: Path) -> None:
    calib = load_kitti_raw(kitti_raw_dir)
    W_, H_ = calib.camera.size
    for i in (0, 13, 42):
        pts = _kitti_scan(kitti_raw_dir, i)
        jit, ref = both_paths(lambda p=pts: project_points(p, calib))
        _assert_same_projection(jit, ref)
        vis = both_paths(lambda p=ref: zbuffer_visible(p, W_, H_))
        np.testing.assert_array_equal(*vis)
        assert 10_000 < len(ref) and 0.8 < vis[1].mean() < 1.0


def test_kernels_equal_numpy_on_nuscenes(both_paths, nuscenes_dir: Path) -> None:
    rig = load_nuscenes_sample(nuscenes_dir / 'calibration.json')
    pts = np.fromfile(glob.glob(str(nuscenes_dir / '*LIDAR_TOP*.pcd.bin'))[0],
                      np.float32).reshape(-1, 5)
    for calib in rig.cameras.values():
        jit, ref = both_paths(lambda c=calib: project_points(pts, c))
        _assert_same_projection(jit, ref)
        for radius in (3, 12):
            vis = both_paths(lambda p=ref, r=radius, c=calib: zbuffer_visible(
                p, *c.camera.size, radius_px=r))
            np.testing.assert_array_equal(*vis)

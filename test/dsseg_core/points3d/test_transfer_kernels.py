"""Numba label-transfer kernels (one camera's votes, the vote) against the numpy path."""
# Matrix names follow the maths (K, D, R, T, P): ruff pep8-naming is relaxed for them.
# ruff: noqa: N802, N803, N806


from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

import dsseg_core.points3d.transfer as transfer
from dsseg_core.calibration import (
    CameraCalibration,
    CameraModel,
    load_kitti_raw,
    load_nuscenes_sample,
)
from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.points3d.transfer import CameraView, TransferResult, transfer_labels
from dsseg_core.points3d.transfer_kernels import _pairwise_sum

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed')

W, H = 320, 240
K = np.array([[200.0, 0.0, 160.0], [0.0, 200.0, 120.0], [0.0, 0.0, 1.0]])
T_OPT = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 1.0]])


def _yawed(deg: float, name: str) -> CameraCalibration:
    a = np.deg2rad(deg)
    Rz = np.eye(4)
    Rz[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return CameraCalibration(CameraModel(W, H, K, name=name), T_OPT @ Rz.T)


def _cloud(n: int = 40_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    az = rng.uniform(-np.pi, np.pi, n)
    r = rng.uniform(2.0, 40.0, n)
    return np.stack([r * np.cos(az), r * np.sin(az), rng.uniform(-2, 2, n)], 1).astype(
        np.float32)


def _both(monkeypatch: pytest.MonkeyPatch, fn) -> tuple[TransferResult, TransferResult]:
    monkeypatch.setenv('DSSEG_JIT', '1')
    jit = fn()
    monkeypatch.setenv('DSSEG_JIT', '0')
    ref = fn()
    return jit, ref


def _assert_same(a: TransferResult, b: TransferResult) -> None:
    for x, y in ((a.labels, b.labels), (a.confidence, b.confidence), (a.n_views, b.n_views)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def _views(rng: np.random.Generator, yaws, dtype=np.uint8, conf: bool = True,
           levels: tuple[float, ...] | None = None) -> list[CameraView]:
    views = []
    for k, yaw in enumerate(yaws):
        ids = rng.integers(0, 6, (H, W)).astype(dtype)
        if dtype == np.uint8:
            ids[rng.random((H, W)) < 0.05] = 255
        else:
            ids[rng.random((H, W)) < 0.05] = -1
        c = None
        if conf:
            c = (rng.choice(np.asarray(levels, np.float32), (H, W)) if levels
                 else rng.uniform(0, 1, (H, W)).astype(np.float32))
        views.append(CameraView(_yawed(yaw, f'c{k}'), ids, c))
    return views


@pytest.mark.parametrize('yaws', [(0.0,), (0.0, 30.0), (0.0, 30.0, -30.0, 170.0)])
@pytest.mark.parametrize('dtype', [np.uint8, np.int32, np.int64, np.int16])
def test_transfer_kernels_equal_numpy(monkeypatch, yaws, dtype) -> None:
    rng = np.random.default_rng(len(yaws))
    pts = _cloud()
    views = _views(rng, yaws, dtype)
    for kwargs in ({}, {'use_zbuffer': False}, {'radius_px': 0, 'min_depth': 3.0},
                   {'ignore_index': 2, 'unknown': -7}, {'depth_tolerance': 0.3}):
        jit, ref = _both(monkeypatch, lambda kw=kwargs: transfer_labels(pts, views, **kw))
        _assert_same(jit, ref)
        assert (ref.labels >= 0).sum() > 500
        if len(yaws) > 1:
            assert (ref.n_views > 1).sum() > 100  # the vote itself is exercised


def test_vote_ties_many_cameras_and_no_confidence(monkeypatch) -> None:
    """Coarse confidence levels (many exact ties -> smaller class), the same camera 12 times
    (sums of >= 9 votes use numpy's pairwise order), views without confidence."""
    rng = np.random.default_rng(3)
    pts = _cloud(20_000, seed=3)
    tied = _views(rng, (0.0, 10.0, -10.0, 5.0), levels=(0.25, 0.5, 1.0))
    jit, ref = _both(monkeypatch, lambda: transfer_labels(pts, tied))
    _assert_same(jit, ref)
    ids = rng.integers(0, 3, (H, W)).astype(np.uint8)
    many = [CameraView(_yawed(0.0, f'same{k}'), ids,
                       (rng.uniform(0, 1, (H, W)) * 10.0 ** rng.integers(-6, 6, (H, W)))
                       .astype(np.float32)) for k in range(12)]
    jit, ref = _both(monkeypatch, lambda: transfer_labels(pts, many))
    _assert_same(jit, ref)
    assert ref.n_views.max() == 12
    plain = _views(rng, (0.0, 20.0), conf=False)
    jit, ref = _both(monkeypatch, lambda: transfer_labels(pts, plain))
    _assert_same(jit, ref)


@pytest.mark.parametrize('kernel', ['jit', 'numpy'])
def test_vote_sums_in_numpys_order(monkeypatch, kernel: str) -> None:
    """Class 0 gets votes 2**54, 2, 2 and class 1 gets 2**54, 4 (one camera each). Summed as
    ``np.add.reduceat`` does (first + the sum of the rest) both classes reach 2**54 + 4: a tie,
    the smaller class wins. Summed left to right, 2**54 + 2 rounds back to 2**54 and class 1
    would win: the kernel must follow numpy's order."""
    monkeypatch.setenv('DSSEG_JIT', '1' if kernel == 'jit' else '0')
    pts = _cloud(500, seed=8)
    votes = [(0, 2.0 ** 54), (0, 2.0), (0, 2.0), (1, 2.0 ** 54), (1, 4.0)]
    views = [CameraView(_yawed(0.0, f'v{k}'), np.full((H, W), c, np.uint8),
                        np.full((H, W), w, np.float32)) for k, (c, w) in enumerate(votes)]
    res = transfer_labels(pts, views, use_zbuffer=False)
    seen = res.n_views == 5
    assert seen.sum() > 50
    assert (res.labels[seen] == 0).all()


def test_nan_confidences_and_empty_inputs(monkeypatch) -> None:
    rng = np.random.default_rng(4)
    pts = _cloud(5000, seed=4)
    views = _views(rng, (0.0, 15.0))
    views[0].confidence[::3] = np.nan  # a NaN sum leaves the point unknown, like numpy
    jit, ref = _both(monkeypatch, lambda: transfer_labels(pts, views))
    _assert_same(jit, ref)
    jit, ref = _both(monkeypatch, lambda: transfer_labels(np.zeros((0, 3), np.float32), views))
    _assert_same(jit, ref)
    behind = -np.abs(pts)  # no point in front of the cameras: no vote at all
    behind[:, 1:] = 0
    jit, ref = _both(monkeypatch, lambda: transfer_labels(behind, views))
    _assert_same(jit, ref)
    assert (ref.labels == -1).all()
    jit, ref = _both(monkeypatch, lambda: transfer_labels(pts, []))
    _assert_same(jit, ref)


def test_invalid_zbuffer_arguments_raise_on_both_paths(monkeypatch) -> None:
    from dsseg_core.errors import CalibrationError

    views = _views(np.random.default_rng(0), (0.0,))
    for mode in ('1', '0'):
        monkeypatch.setenv('DSSEG_JIT', mode)
        with pytest.raises(CalibrationError):
            transfer_labels(_cloud(500), views, radius_px=-1)


def test_transfer_uses_the_kernels(monkeypatch) -> None:
    calls = []
    for name in ('zbuffer_kernel', 'lookup_votes_kernel', 'vote_kernel'):
        kernel = getattr(transfer, name)
        monkeypatch.setattr(transfer, name,
                            lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    monkeypatch.setenv('DSSEG_JIT', '1')
    transfer_labels(_cloud(1000), _views(np.random.default_rng(0), (0.0, 30.0)))
    assert calls == ['zbuffer_kernel', 'lookup_votes_kernel'] * 2 + ['vote_kernel']
    monkeypatch.setenv('DSSEG_JIT', '0')
    transfer_labels(_cloud(1000), _views(np.random.default_rng(0), (0.0, 30.0)))
    assert len(calls) == 5


def test_pairwise_sum_is_numpys_reduceat_order() -> None:
    rng = np.random.default_rng(0)
    for n in [*range(1, 40), 127, 128, 129, 130, 257, 1000, 1027, 5000]:
        a = rng.random(n) * 10.0 ** rng.integers(-12, 12, n)  # order-sensitive sums
        assert np.add.reduceat(a, [0])[0] == a[0] + _pairwise_sum(a, 1, n - 1)


def test_kernels_equal_numpy_on_kitti(monkeypatch, kitti_raw_dir: Path) -> None:
    calib = load_kitti_raw(kitti_raw_dir)
    w, h = calib.camera.size
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 19, (h, w)).astype(np.uint8)
    ids[rng.random((h, w)) < 0.1] = 255
    conf = rng.uniform(0.0, 1.0, (h, w)).astype(np.float32)
    views = [CameraView(calib, ids, conf),
             CameraView(calib, ids[:, ::-1].copy(), conf[::-1].copy())]  # full overlap
    for i in (0, 21):
        pts = np.fromfile(kitti_raw_dir / f'velodyne_points/data/{i:010d}.bin',
                          np.float32).reshape(-1, 4)
        for vs in (views[:1], views):
            jit, ref = _both(monkeypatch, lambda v=vs, p=pts: transfer_labels(p, v))
            _assert_same(jit, ref)
            assert (ref.labels >= 0).sum() > 10_000


def test_kernels_equal_numpy_on_nuscenes_six_cameras(monkeypatch, nuscenes_dir: Path) -> None:
    rig = load_nuscenes_sample(nuscenes_dir / 'calibration.json')
    pts = np.fromfile(glob.glob(str(nuscenes_dir / '*LIDAR_TOP*.pcd.bin'))[0],
                      np.float32).reshape(-1, 5)
    rng = np.random.default_rng(1)
    views = [CameraView(c, rng.integers(0, 4, c.camera.size[::-1]).astype(np.uint8),
                        rng.choice(np.array([0.25, 0.5, 1.0], np.float32), c.camera.size[::-1]))
             for c in rig.cameras.values()]
    for radius in (3, 12):
        jit, ref = _both(monkeypatch, lambda r=radius: transfer_labels(pts, views, radius_px=r))
        _assert_same(jit, ref)
        assert (ref.n_views > 1).sum() > 100

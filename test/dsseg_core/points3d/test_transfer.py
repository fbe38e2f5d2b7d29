"""2D→3D label transfer: single view, confidence-weighted multi-view vote, occlusion, unknown."""
# Matrix names follow the maths (K, D, R, T, P): ruff pep8-naming is relaxed for them.
# ruff: noqa: N802, N803, N806


from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsseg_core.calibration import CameraCalibration, CameraModel, load_kitti_raw
from dsseg_core.errors import CalibrationError, MessageError
from dsseg_core.points3d.transfer import CameraView, TransferResult, transfer_labels
from dsseg_core.projection import project_points, zbuffer_visible

W, H = 160, 120
K = np.array([[100.0, 0.0, 80.0], [0.0, 100.0, 60.0], [0.0, 0.0, 1.0]])
T_OPT = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 1.0]])


def _calib(name: str = 'front', T: np.ndarray = T_OPT) -> CameraCalibration:
    return CameraCalibration(CameraModel(W, H, K, name=name), T)


def _points_at(u: np.ndarray, v: np.ndarray, depth: np.ndarray) -> np.ndarray:
    x_cam = (u - K[0, 2]) / K[0, 0] * depth
    y_cam = (v - K[1, 2]) / K[1, 1] * depth
    return np.stack([depth, -x_cam, -y_cam], axis=1).astype(np.float32)


def _scene(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _points_at(rng.uniform(0, W, n), rng.uniform(0, H, n), rng.uniform(2, 30, n))


def test_single_view_agrees_with_the_label_image(kernel_path: str) -> None:
    rng = np.random.default_rng(1)
    labels_img = rng.integers(0, 19, (H, W)).astype(np.uint8)
    conf_img = rng.uniform(0.1, 1.0, (H, W)).astype(np.float32)
    pts = np.concatenate([_scene(), [[-5.0, 0.0, 0.0], [5.0, 50.0, 0.0]]]).astype(np.float32)
    view = CameraView(_calib(), labels_img, conf_img)
    res = transfer_labels(pts, [view], use_zbuffer=False)
    assert isinstance(res, TransferResult)
    assert res.labels.dtype == np.int32 and res.confidence.dtype == np.float32
    assert res.n_views.dtype == np.uint8 and res.labels.shape == (len(pts),)
    proj = project_points(pts, view.calib)
    rows, cols = proj.pixels()
    assert len(proj) == 500
    assert np.array_equal(res.labels[proj.point_index], labels_img[rows, cols])
    assert np.array_equal(res.confidence[proj.point_index], conf_img[rows, cols])
    assert res.labels[-2:].tolist() == [-1, -1]  # behind the camera, outside the image
    assert res.n_views.tolist() == [1] * 500 + [0, 0]
    labels, conf = transfer_labels(pts, view, use_zbuffer=False)  # unpacks like a tuple
    assert np.array_equal(labels, res.labels) and np.array_equal(conf, res.confidence)


def test_two_views_higher_confidence_wins_in_both_directions(kernel_path: str) -> None:
    pts = _scene(300)
    a = np.zeros((H, W), np.uint8) + 3
    b = np.zeros((H, W), np.uint8) + 7
    conf_a = np.full((H, W), 0.9, np.float32)
    conf_a[:, W // 2:] = 0.2  # A is unsure on the right half
    conf_b = np.full((H, W), 0.6, np.float32)
    views = [CameraView(_calib('a'), a, conf_a), CameraView(_calib('b'), b, conf_b)]
    res = transfer_labels(pts, views, use_zbuffer=False)
    proj = project_points(pts, views[0].calib)
    right = proj.uv[:, 0] >= W // 2
    assert np.all(res.labels[proj.point_index[~right]] == 3)
    assert np.all(res.labels[proj.point_index[right]] == 7)
    assert np.all(res.n_views[proj.point_index] == 2)
    # Winner's summed confidence / number of votes.
    assert np.allclose(res.confidence[proj.point_index[~right]], 0.9 / 2)
    assert np.allclose(res.confidence[proj.point_index[right]], 0.6 / 2)
    # Order of the views does not matter (not "last camera wins").
    res2 = transfer_labels(pts, views[::-1], use_zbuffer=False)
    assert np.array_equal(res.labels, res2.labels)


def test_votes_are_summed_per_class(kernel_path: str) -> None:
    pts = _scene(200)
    conf = [0.4, 0.45, 0.7]
    cls = [5, 5, 9]
    views = [CameraView(_calib(f'c{i}'), np.full((H, W), c, np.int32),
                        np.full((H, W), p, np.float32))
             for i, (c, p) in enumerate(zip(cls, conf, strict=True))]
    res = transfer_labels(pts, views, use_zbuffer=False)
    seen = res.n_views > 0
    assert seen.sum() == 200 and np.all(res.n_views[seen] == 3)
    assert np.all(res.labels[seen] == 5)  # 0.4 + 0.45 > 0.7
    assert np.allclose(res.confidence[seen], 0.85 / 3)
    # Large class ids (no dense (N, C) array): same answer.
    views_big = [CameraView(v.calib, v.class_ids * 100_000 + 7, v.confidence) for v in views]
    res_big = transfer_labels(pts, views_big, use_zbuffer=False)
    assert np.all(res_big.labels[seen] == 500_007)


def test_partially_overlapping_cameras_and_ignore_pixels(kernel_path: str) -> None:
    yaw = np.deg2rad(40.0)
    Rz = np.eye(4)
    Rz[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    left = _calib('left', T_OPT @ Rz.T)  # looks 40 degrees to the left
    rng = np.random.default_rng(5)
    az = rng.uniform(-np.pi, np.pi, 2000)
    pts = np.stack([10 * np.cos(az), 10 * np.sin(az), rng.uniform(-2, 2, 2000)], 1)
    front_ids = np.full((H, W), 1, np.uint8)
    front_ids[:, :10] = 255  # ignored pixels do not vote
    views = [CameraView(_calib('front'), front_ids),
             CameraView(left, np.full((H, W), 2, np.uint8))]
    res = transfer_labels(pts.astype(np.float32), views, use_zbuffer=False)
    in_front = np.zeros(len(pts), bool)
    pf = project_points(pts, views[0].calib)
    in_front[pf.point_index[pf.uv[:, 0] >= 10]] = True
    in_left = np.zeros(len(pts), bool)
    in_left[project_points(pts, left).point_index] = True
    both = in_front & in_left
    assert both.sum() > 10 and (in_front & ~in_left).sum() > 10
    assert np.all(res.labels[in_front & ~in_left] == 1)
    assert np.all(res.labels[in_left & ~in_front] == 2)
    assert np.all(res.labels[both] == 1)  # tie (1.0 vs 1.0) -> smaller class id
    assert np.all(res.labels[~in_front & ~in_left] == -1)
    assert np.array_equal(res.n_views, in_front.astype(np.uint8) + in_left)


def test_occluded_points_are_not_labelled(kernel_path: str) -> None:
    # Near wall: rings every 5 rows, points every 2 columns over u in [40, 120); far points
    # between the rings behind it (hidden) and beside it (visible).
    fu, fv = np.meshgrid(np.arange(40, 120, 2) + 0.5, np.arange(20, 100, 5) + 0.5)
    near = _points_at(fu.ravel(), fv.ravel(), np.full(fu.size, 4.0))
    bu, bv = np.meshgrid(np.arange(1, W, 2) + 0.5, np.arange(20, 100, 5) + 2.5)
    far = _points_at(bu.ravel(), bv.ravel(), np.full(bu.size, 25.0))
    pts = np.concatenate([near, far])
    ids = np.full((H, W), 4, np.uint8)
    res = transfer_labels(pts, [CameraView(_calib(), ids)])
    far_col = np.floor(bu.ravel())
    behind = (far_col >= 37) & (far_col <= 121)  # a near column within 3 px
    assert np.all(res.labels[: len(near)] == 4)
    assert np.all(res.labels[len(near):][behind] == -1)
    assert np.all(res.labels[len(near):][~behind] == 4)
    no_zb = transfer_labels(pts, [CameraView(_calib(), ids)], use_zbuffer=False)
    assert np.all(no_zb.labels == 4)


def test_size_mismatch_and_bad_inputs_are_clear_errors(kernel_path: str) -> None:
    pts = _scene(10)
    with pytest.raises(CalibrationError, match=r"'front'.*80x60.*160x120"):
        transfer_labels(pts, [CameraView(_calib(), np.zeros((60, 80), np.uint8))])
    with pytest.raises(MessageError, match='integer'):
        transfer_labels(pts, [CameraView(_calib(), np.zeros((H, W), np.float32))])
    with pytest.raises(MessageError, match='confidence'):
        transfer_labels(pts, [CameraView(_calib(), np.zeros((H, W), np.uint8),
                                         np.zeros((10, 10), np.float32))])
    # resized() is the documented fix: the same scene through a half-size mask.
    rng = np.random.default_rng(2)
    pts = _points_at(rng.uniform(2, W - 2, 50), rng.uniform(2, H - 2, 50), np.full(50, 8.0))
    small = CameraView(CameraCalibration(_calib().camera.resized(80, 60), T_OPT),
                       np.full((60, 80), 6, np.uint8))
    assert np.all(transfer_labels(pts, [small]).labels == 6)


def test_no_views_or_empty_cloud(kernel_path: str) -> None:
    res = transfer_labels(_scene(5), [], unknown=-7)
    assert res.labels.tolist() == [-7] * 5 and not res.n_views.any()
    res = transfer_labels(np.zeros((0, 3), np.float32), [CameraView(_calib(),
                                                                    np.zeros((H, W), np.uint8))])
    assert res.labels.shape == (0,)


def test_kitti_frame_transfer_matches_visible_projection(kitti_raw_dir: Path,
                                                        kernel_path: str) -> None:
    cal = load_kitti_raw(kitti_raw_dir)
    pts = np.fromfile(kitti_raw_dir / 'velodyne_points/data/0000000000.bin',
                      np.float32).reshape(-1, 4)
    # A "segmentation" that is a function of the pixel: class = column band.
    ids = np.broadcast_to((np.arange(1242) // 50).astype(np.uint8), (375, 1242)).copy()
    res = transfer_labels(pts, [CameraView(cal, ids)])
    proj = project_points(pts, cal)
    vis = zbuffer_visible(proj, 1242, 375)
    labelled = np.flatnonzero(res.labels >= 0)
    assert np.array_equal(labelled, np.sort(proj.point_index[vis]))
    assert 14_000 < labelled.size < 17_000
    assert np.array_equal(res.labels[proj.point_index[vis]],
                          (proj.uv[vis, 0] // 50).astype(np.int32))

"""Projection, distortion guard, z-buffer visibility, depth image, overlay, alignment score."""
# Matrix names follow the maths (K, D, R, T, P): ruff pep8-naming is relaxed for them.
# ruff: noqa: N802, N803, N806


from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from dsseg_core.calibration import (
    CameraCalibration,
    CameraModel,
    distort_normalized,
    load_kitti_object,
    load_kitti_raw,
    load_nuscenes_sample,
)
from dsseg_core.errors import CalibrationError, MessageError
from dsseg_core.projection import (
    Projection,
    alignment_edge_map,
    depth_colormap,
    depth_image,
    draw_depth_overlay,
    edge_alignment_score,
    project_points,
    zbuffer_visible,
)

W, H = 640, 480
K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
T_OPT = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 1.0]])


def _calib(D=(), model: str = 'none', T: np.ndarray = T_OPT) -> CameraCalibration:
    return CameraCalibration(CameraModel(W, H, K, list(D), model, 'cam', 'cam'), T)


def _lidar_from_pixels(u: np.ndarray, v: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """LiDAR points (x fwd, y left, z up) that project to (u, v) at ``depth`` with T_OPT/K."""
    x_cam = (u - K[0, 2]) / K[0, 0] * depth
    y_cam = (v - K[1, 2]) / K[1, 1] * depth
    return np.stack([depth, -x_cam, -y_cam], axis=1).astype(np.float32)


def _yaw(T: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    Rz = np.eye(4)
    Rz[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return T @ Rz


def _kitti(kitti_raw_dir: Path, i: int) -> np.ndarray:
    return np.fromfile(kitti_raw_dir / f'velodyne_points/data/{i:010d}.bin',
                       np.float32).reshape(-1, 4)


# ------------------------------------------------------------------ project_points


def test_pinhole_projection_front_inside_and_boundaries(kernel_path: str) -> None:
    cal = _calib()
    pts = np.array([
        [10.0, 0.0, 0.0],      # optical axis -> (cx, cy)
        [10.0, -2.0, -1.0],    # right and down: u = 320 + 500*0.2, v = 240 + 500*0.1
        [-10.0, 0.0, 0.0],     # behind the camera
        [0.3, 0.0, 0.0],       # in front but nearer than min_depth
        [10.0, 100.0, 0.0],    # far left, outside the image
        [4.0, 2.56, 0.0],      # u = 320 - 500*0.64 = 0.0 exactly: inside
        [4.0, -2.56, 0.0],     # u = 640.0 exactly: outside (0 <= u < W)
    ])
    proj = project_points(pts, cal)
    assert proj.point_index.dtype == np.int64 and proj.uv.dtype == np.float32
    assert proj.depth.dtype == np.float32
    assert proj.point_index.tolist() == [0, 1, 5]
    assert np.allclose(proj.uv, [[320, 240], [420, 290], [0, 240]])
    assert np.allclose(proj.depth, [10, 10, 4])
    # min_depth is honoured and extra columns (intensity) are ignored.
    near = project_points(np.c_[pts, np.zeros(len(pts))], cal, min_depth=0.1)
    assert near.point_index.tolist() == [0, 1, 3, 5]
    rows, cols = proj.pixels()
    assert rows.tolist() == [240, 290, 240] and cols.tolist() == [320, 420, 0]
    with pytest.raises(MessageError, match=r'\(N, 3\)'):
        project_points(np.zeros((5, 2)), cal)


def test_projection_matches_a_direct_computation_with_distortion(kernel_path: str) -> None:
    rng = np.random.default_rng(3)
    D = [-0.25, 0.07, 0.001, -0.0015, 0.0]
    cal = _calib(D, 'plumb_bob', _yaw(T_OPT, 7.0))
    pts = np.c_[rng.uniform(1, 30, 5000), rng.uniform(-20, 20, 5000), rng.uniform(-5, 5, 5000)]
    proj = project_points(pts, cal, min_depth=0.5)
    cam = (cal.T_cam_lidar @ np.c_[pts, np.ones(len(pts))].T)[:3].T
    front = cam[:, 2] > 0.5
    xd, yd = distort_normalized(cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2], 'plumb_bob', D)
    u, v = 500 * xd + 320, 500 * yd + 240
    want = front & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    assert proj.point_index.tolist() == np.flatnonzero(want).tolist()
    assert np.abs(proj.uv - np.c_[u, v][want]).max() < 1e-3
    assert np.allclose(proj.depth, cam[want, 2])


def test_distortion_fold_back_does_not_wrap_into_the_image(kernel_path: str) -> None:
    # k1 < 0 folds: r_d = r (1 - 0.4 r^2) peaks at r = 0.91 and turns negative beyond 1.58,
    # so points at ~70 deg off-axis would land on the *opposite* side, inside the image.
    D = [-0.4, 0.0, 0.0, 0.0, 0.0]
    cal = _calib(D, 'plumb_bob')
    xn = np.array([0.1, 0.4, 1.2, 1.65, 1.7, -1.7])
    depth = np.full(xn.shape, 5.0)
    pts = np.stack([depth, -xn * depth, np.zeros_like(xn)], axis=1)
    xd, _ = distort_normalized(xn, np.zeros_like(xn), 'plumb_bob', D)
    naive_u = 500 * xd + 320
    assert np.all((naive_u >= 0) & (naive_u < W)), 'test setup: all would wrap inside'
    proj = project_points(pts, cal)
    assert proj.point_index.tolist() == [0, 1]
    assert np.allclose(proj.uv[:, 0], naive_u[:2], atol=1e-3)


def test_rational_model_pole_does_not_wrap_into_the_image(kernel_path: str) -> None:
    # Denominator 1 - 0.5 r^2 vanishes at r = 1.41; at r = 10 (84 deg off-axis) the naive
    # model gives r_d = 10 / -49 = -0.2, i.e. u = 220, inside the image on the wrong side.
    D = [0.0, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 0.0]
    cal = _calib(D, 'rational_polynomial')
    xn = np.array([0.3, -10.0])
    pts = np.stack([np.full(2, 2.0), -xn * 2.0, np.zeros(2)], axis=1)
    xd, _ = distort_normalized(xn, np.zeros(2), 'rational_polynomial', D)
    assert 0 <= 500 * xd[1] + 320 < W, 'test setup: the naive model wraps inside'
    proj = project_points(pts, cal)
    assert proj.point_index.tolist() == [0]
    assert proj.uv[0, 0] == pytest.approx(320 + 500 * 0.3 / (1 - 0.5 * 0.09), abs=1e-3)


def test_equidistant_fisheye_sees_wide_angles(kernel_path: str) -> None:
    cal = _calib([0.0, 0.0, 0.0, 0.0], 'equidistant')
    # 60 degrees off-axis: r_d = theta = pi/3 -> u = 320 + 500 * 1.047 (outside), and 30 deg
    # inside at u = 320 + 500 * pi/6 = 581.8 (a pinhole would put it at 320 + 500*0.577 = 608.7).
    ang = np.deg2rad([30.0, 60.0])
    pts = np.stack([np.cos(ang), -np.sin(ang), np.zeros(2)], axis=1) * 10
    proj = project_points(pts, cal)
    assert proj.point_index.tolist() == [0]
    assert proj.uv[0, 0] == pytest.approx(320 + 500 * np.pi / 6, abs=1e-3)


# ------------------------------------------------------------------ z-buffer / depth image


def _occlusion_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A near wall (5 m) over pixel columns 200..398 (even), sampled like LiDAR rings (every
    5 rows from 100, every 2 columns), and a far wall (20 m) over the whole width on odd
    columns, 2 rows below each near ring, i.e. seen through the gaps between the rings.

    With the default 7x7 window a far point at column c is hidden iff a near point lies
    within 3 columns: 197 <= c <= 401 (and the near ring is 2 rows away)."""
    fu, fv = np.meshgrid(np.arange(200, 400, 2) + 0.5, np.arange(100, 380, 5) + 0.5)
    bu, bv = np.meshgrid(np.arange(1, W, 2) + 0.5, np.arange(100, 380, 5) + 2.5)
    near = _lidar_from_pixels(fu.ravel(), fv.ravel(), np.full(fu.size, 5.0))
    far = _lidar_from_pixels(bu.ravel(), bv.ravel(), np.full(bu.size, 20.0))
    col = np.floor(bu.ravel())
    hidden = np.r_[np.zeros(len(near), bool), (col >= 197) & (col <= 401)]
    return np.concatenate([near, far]), hidden, len(near)


def test_zbuffer_hides_points_seen_through_gaps(kernel_path: str) -> None:
    pts, hidden, n_near = _occlusion_scene()
    proj = project_points(pts, _calib())
    assert len(proj) == len(pts)
    vis = zbuffer_visible(proj, W, H)
    assert vis.dtype == bool and vis.shape == (len(proj),)
    assert np.all(vis[proj.point_index < n_near])  # the near wall is all visible
    assert np.array_equal(vis, ~hidden[proj.point_index])
    assert 0 < (~vis).sum() < (proj.point_index >= n_near).sum()
    # A window that cannot reach across to the rings (2 rows away) sees through the gaps.
    assert zbuffer_visible(proj, W, H, radius_px=1).all()
    # A tolerance wider than the 5 m vs 20 m gap hides nothing.
    assert zbuffer_visible(proj, W, H, depth_tolerance=0.8).all()
    # Shuffling the input order changes nothing.
    perm = np.random.default_rng(0).permutation(len(pts))
    proj2 = project_points(pts[perm], _calib())
    assert np.array_equal(zbuffer_visible(proj2, W, H), ~hidden[perm][proj2.point_index])


def test_zbuffer_keeps_a_slanted_surface(kernel_path: str) -> None:
    # Ground-like surface: depth grows smoothly with v; no point may hide its neighbours.
    u, v = np.meshgrid(np.arange(0, W, 2) + 0.5, np.arange(250, 480, 4) + 0.5)
    depth = 1.65 * 500 / (v - 240)  # flat ground 1.65 m below the camera
    proj = project_points(_lidar_from_pixels(u.ravel(), v.ravel(), depth.ravel()), _calib())
    assert zbuffer_visible(proj, W, H).all()


def test_depth_image_keeps_the_nearest_point_per_pixel() -> None:
    proj = Projection(np.arange(4), np.array([[10.2, 5.7], [10.9, 5.1], [0, 0], [639.9, 479.9]],
                                             np.float32),
                      np.array([7.0, 3.0, 1.5, 9.0], np.float32), W, H)
    img = depth_image(proj, W, H)
    assert img.shape == (H, W) and img.dtype == np.float32
    assert img[5, 10] == 3.0 and img[0, 0] == 1.5 and img[479, 639] == 9.0
    assert np.count_nonzero(img) == 3
    with pytest.raises(CalibrationError, match='640x480'):
        depth_image(proj, 100, 100)


# ------------------------------------------------------------------ overlay


def test_depth_overlay_draws_near_points_on_top() -> None:
    img = np.full((H, W, 3), 50, np.uint8)
    proj = Projection(np.arange(3), np.array([[100.5, 100.5], [101.5, 100.5], [300, 200]],
                                             np.float32),
                      np.array([60.0, 2.0, 30.0], np.float32), W, H)
    out = draw_depth_overlay(img, proj, max_depth=80, radius=1)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 50).all()  # input untouched
    near, far = depth_colormap(np.array([2.0, 60.0]), 80)
    assert not np.array_equal(near, far)
    assert np.array_equal(out[100, 100], near) and np.array_equal(out[100, 102], near)
    assert np.array_equal(out[100, 99], far)  # far dot shows only where the near one is not
    assert np.array_equal(out[199, 299], depth_colormap(np.array([30.0]), 80)[0])
    changed = np.any(out != 50, axis=2)
    assert changed.sum() == 3 * 4 + 9  # two overlapping 3x3 dots (3x4) + one 3x3 dot


# ------------------------------------------------------------------ real data


def test_kitti_raw_points_inside_the_image(kitti_raw_dir: Path, kernel_path: str) -> None:
    cal = load_kitti_raw(kitti_raw_dir)
    for i in (0, 17, 49):
        pts = _kitti(kitti_raw_dir, i)
        proj = project_points(pts, cal, min_depth=0.0)
        assert 14_000 <= len(proj) <= 17_500, (i, len(proj))
        vis = zbuffer_visible(proj, *cal.camera.size)
        assert 0.85 * len(proj) < vis.sum() < len(proj)  # some see-through points, not many


def test_kitti_object_frame(kitti_object_dir: Path, kernel_path: str) -> None:
    cal = load_kitti_object(kitti_object_dir / 'calib_000008.txt')
    pts = np.fromfile(kitti_object_dir / 'velodyne_reduced_000008.bin',
                      np.float32).reshape(-1, 4)
    proj = project_points(pts, cal)
    # The reduced scan is already cropped to the camera's field of view.
    assert len(proj) > 0.98 * len(pts)


def test_nuscenes_projects_into_all_six_cameras(nuscenes_dir: Path, kernel_path: str) -> None:
    rig = load_nuscenes_sample(nuscenes_dir / 'calibration.json')
    pts = np.fromfile(glob.glob(str(nuscenes_dir / '*LIDAR_TOP*.pcd.bin'))[0],
                      np.float32).reshape(-1, 5)
    counts = {name: len(project_points(pts, cal)) for name, cal in rig.cameras.items()}
    assert counts['CAM_FRONT'] > 1000
    assert all(1000 < n < 10_000 for n in counts.values()), counts
    # Neighbouring cameras overlap a little; together they see a large part of the scan.
    seen = np.unique(np.concatenate([project_points(pts, c).point_index
                                     for c in rig.cameras.values()]))
    assert 0.45 * len(pts) < seen.size < sum(counts.values())


@pytest.mark.parametrize('scan_order', [True, False])
def test_edge_alignment_peaks_at_the_true_extrinsic(kitti_raw_dir: Path,
                                                    scan_order: bool) -> None:
    from PIL import Image

    cal = load_kitti_raw(kitti_raw_dir)
    pts = _kitti(kitti_raw_dir, 0)
    img = np.asarray(Image.open(kitti_raw_dir / 'image_02/data/0000000000.png').convert('RGB'))
    rng = np.linalg.norm(pts[:, :3], axis=1) if scan_order else None
    edges = alignment_edge_map(img)
    scores = {}
    for deg in (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0):
        c = CameraCalibration(cal.camera, _yaw(cal.T_cam_lidar, deg))
        scores[deg] = edge_alignment_score(img, project_points(pts, c), rng, edge_map=edges)
    assert scores[0.0] == edge_alignment_score(img, project_points(pts, cal), rng)
    best = scores.pop(0.0)
    assert all(best > s for s in scores.values()), scores
    # Larger errors score lower than smaller ones on each side.
    assert scores[-2.0] < scores[-0.5] and scores[2.0] < scores[0.5]

"""Calibration dataclasses, distortion models and loaders (YAML, KITTI raw/object, nuScenes)."""
# Matrix names follow the maths (K, D, R, T, P): ruff pep8-naming is relaxed for them.
# ruff: noqa: N802, N803, N806


from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from dsseg_core.calibration import (
    CameraCalibration,
    CameraModel,
    RigCalibration,
    distort_normalized,
    load_calibration_yaml,
    load_kitti_object,
    load_kitti_raw,
    load_kitti_raw_rig,
    load_nuscenes_sample,
    matrix_to_quat_xyzw,
    normalize_distortion_model,
    quat_xyzw_to_matrix,
    save_calibration_yaml,
)
from dsseg_core.errors import CalibrationError

K = np.array([[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
# LiDAR (x fwd, y left, z up) -> camera optical (x right, y down, z fwd).
R_OPT = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def _T(R: np.ndarray = R_OPT, t=(0.1, -0.2, 0.3)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _read_kv(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(':')
        try:
            out[key.strip()] = np.array([float(v) for v in rest.split()])
        except ValueError:
            pass
    return out


# ------------------------------------------------------------------ dataclasses / validation


def test_camera_model_validates_and_normalises() -> None:
    cam = CameraModel(640, 480, K.ravel().tolist(), [0.1, -0.05, 0.001, 0.002], 'radtan')
    assert cam.K.shape == (3, 3) and cam.K.dtype == np.float64
    assert cam.distortion_model == 'plumb_bob'
    assert cam.D.tolist() == [0.1, -0.05, 0.001, 0.002, 0.0]  # 4 coefficients padded (k3 = 0)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (500.0, 510.0, 320.0, 240.0)
    assert cam.has_distortion
    # Empty D with a named model means "no coefficients": zeros, no distortion.
    assert not CameraModel(640, 480, K, [], 'plumb_bob').has_distortion
    assert normalize_distortion_model('fisheye') == 'equidistant'
    assert normalize_distortion_model('') == 'none'


@pytest.mark.parametrize(('kwargs', 'match'), [
    ({'K': np.zeros((3, 3))}, 'fx=0'),
    ({'width': 0}, 'image size 0x480'),
    ({'height': -5}, 'image size'),
    ({'K': np.ones(6)}, 'K: expected a 3x3'),
    ({'distortion_model': 'kb8'}, 'unknown model'),
    ({'distortion_model': 'equidistant', 'D': [0.1, 0.2]}, 'needs 4 coefficients'),
    ({'distortion_model': 'none', 'D': [0.1]}, 'non-zero'),
    ({'K': [[500, 0, 320], [0, 500, 240], [0, 1, 1]]}, r'\[0, fy, cy\]'),
])
def test_camera_model_rejects_bad_values(kwargs: dict, match: str) -> None:
    args = {'width': 640, 'height': 480, 'K': K, 'D': [], 'distortion_model': 'none',
            'name': 'front'}
    args.update(kwargs)
    with pytest.raises(CalibrationError, match=match) as info:
        CameraModel(**args)
    assert "'front'" in str(info.value)


@pytest.mark.parametrize(('T', 'match'), [
    (np.diag([2.0, 2.0, 2.0, 1.0]), 'not a proper rotation'),
    (np.diag([1.0, 1.0, -1.0, 1.0]), 'det'),
    (np.ones((3, 4)), 'expected a 4x4'),
    (np.vstack([_T()[:3], [[0, 0, 1, 1]]]), 'last row'),
])
def test_camera_calibration_rejects_bad_transforms(T: np.ndarray, match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        CameraCalibration(CameraModel(640, 480, K, name='c'), T)


def test_calibration_inverse_and_rig_lookup() -> None:
    cal = CameraCalibration(CameraModel(640, 480, K, frame_id='cam_opt'), _T(), 0.02)
    assert np.allclose(cal.T_lidar_cam @ cal.T_cam_lidar, np.eye(4))
    rig = RigCalibration({'front': cal}, 'velo')
    assert rig['front'].name == 'front'  # the key names an unnamed camera
    assert rig.by_frame_id('cam_opt') is cal and rig.by_frame_id('nope') is None
    with pytest.raises(CalibrationError, match="no calibration for camera 'back'.*front"):
        rig['back']


def test_resized_camera_scales_pixel_coordinates() -> None:
    from dsseg_core.projection import project_points

    cal = CameraCalibration(CameraModel(640, 480, K, name='c'), _T(t=(0, 0, 0)))
    small = CameraCalibration(cal.camera.resized(320, 240), cal.T_cam_lidar)
    pts = np.array([[10.0, 1.0, 0.5], [5.0, -2.0, -1.0], [20.0, 0.0, 0.0]])
    a, b = project_points(pts, cal), project_points(pts, small)
    assert a.point_index.tolist() == b.point_index.tolist() == [0, 1, 2]
    # Pixel centres map to pixel centres: u' + 0.5 = (u + 0.5) / 2.
    assert np.allclose(b.uv + 0.5, (a.uv + 0.5) / 2, atol=1e-4)
    assert small.camera.size == (320, 240) and small.name == 'c'


def test_quaternion_round_trip() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = quat_xyzw_to_matrix(q)
        assert np.allclose(R.T @ R, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
        q2 = matrix_to_quat_xyzw(R)
        assert np.allclose(q2, q * np.sign(q[3]))
    # 90 degrees about z.
    Rz = quat_xyzw_to_matrix([0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    assert np.allclose(Rz @ [1, 0, 0], [0, 1, 0])


# ------------------------------------------------------------------ distortion


def test_plumb_bob_matches_the_opencv_formula() -> None:
    k1, k2, p1, p2, k3 = -0.3, 0.1, 0.001, -0.002, 0.02
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    want_x = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    want_y = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    xd, yd = distort_normalized(np.array([x]), np.array([y]), 'plumb_bob', [k1, k2, p1, p2, k3])
    assert xd[0] == pytest.approx(want_x, abs=1e-12) and yd[0] == pytest.approx(want_y, abs=1e-12)


def test_rational_polynomial_reduces_to_plumb_bob_and_divides() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-0.5, 0.5, (2, 100))
    pb = [-0.2, 0.05, 0.001, 0.002, 0.01]
    rat = [-0.2, 0.05, 0.001, 0.002, 0.01, 0.0, 0.0, 0.0]
    a = distort_normalized(x, y, 'plumb_bob', pb)
    b = distort_normalized(x, y, 'rational_polynomial', rat)
    assert np.allclose(a, b)
    # Denominator only (k4): x_d = x / (1 + k4 r^2).
    xd, yd = distort_normalized(x, y, 'rational_polynomial', [0, 0, 0, 0, 0, 0.5, 0, 0])
    assert np.allclose(xd, x / (1 + 0.5 * (x * x + y * y)))


def test_equidistant_is_f_theta_and_vectorised() -> None:
    theta = np.linspace(0.0, 1.4, 50)
    x = np.tan(theta).reshape(5, 10)
    xd, yd = distort_normalized(x, np.zeros_like(x), 'equidistant', [0, 0, 0, 0])
    assert xd.shape == (5, 10)
    assert np.allclose(xd.ravel(), theta)  # r_d = theta for zero coefficients
    xd, _ = distort_normalized(x, np.zeros_like(x), 'equidistant', [0.1, 0, 0, 0])
    assert np.allclose(xd.ravel(), theta * (1 + 0.1 * theta ** 2))


# ------------------------------------------------------------------ YAML


def _rig() -> RigCalibration:
    cam_a = CameraModel(640, 480, K, [0.1, -0.02, 0.001, 0.0, 0.003], 'plumb_bob', 'a_opt', 'a')
    cam_b = CameraModel(1280, 720, K * [[2], [2], [1]], [0.01, 0.0, 0.0, 0.0], 'equidistant',
                        'b_opt', 'b')
    Rb = quat_xyzw_to_matrix([0.1, 0.2, 0.3, 0.9]) @ R_OPT
    return RigCalibration({'a': CameraCalibration(cam_a, _T(), -0.0123),
                           'b': CameraCalibration(cam_b, _T(Rb, (1.0 / 3, 2.0, -7.1)))},
                          'velodyne')


def test_yaml_round_trip_is_exact(tmp_path: Path) -> None:
    rig = _rig()
    path = tmp_path / 'calib' / 'rig.yaml'
    save_calibration_yaml(rig, path)
    back = load_calibration_yaml(path)
    assert back.lidar_frame == 'velodyne' and back.names == ['a', 'b']
    for name in rig.names:
        a, b = rig[name], back[name]
        assert np.array_equal(a.T_cam_lidar, b.T_cam_lidar)
        assert np.array_equal(a.camera.K, b.camera.K) and np.array_equal(a.camera.D, b.camera.D)
        assert (a.camera.size, a.camera.distortion_model, a.camera.frame_id, a.time_offset_s) == (
            b.camera.size, b.camera.distortion_model, b.camera.frame_id, b.time_offset_s)
    assert not list(tmp_path.glob('calib/*.tmp*'))  # atomic write leaves nothing behind
    assert back.cameras == rig.cameras  # value equality (arrays compared element-wise)
    assert back['a'] != rig['b'] and back['a'].camera != rig['a'].camera.resized(320, 240)


def test_yaml_quaternion_form_and_flat_K(tmp_path: Path) -> None:
    q = [0.5, -0.5, 0.5, 0.5]
    doc = {'lidar_frame': 'velo', 'cameras': {'front': {
        'width': 640, 'height': 480, 'K': K.ravel().tolist(),
        'T_cam_lidar': {'translation': [0.1, 0.2, 0.3], 'rotation_quat_xyzw': q},
    }}}
    path = tmp_path / 'c.yaml'
    path.write_text(yaml.safe_dump(doc))
    cal = load_calibration_yaml(path)['front']
    assert np.allclose(cal.T_cam_lidar[:3, :3], quat_xyzw_to_matrix(q))
    assert np.allclose(cal.T_cam_lidar[:3, 3], [0.1, 0.2, 0.3])
    assert cal.camera.distortion_model == 'none' and cal.time_offset_s == 0.0
    # This quaternion is the LiDAR -> optical rotation: forward maps to +z.
    assert np.allclose(cal.T_cam_lidar[:3, :3] @ [1, 0, 0], [0, 0, 1])


@pytest.mark.parametrize(('mutate', 'match'), [
    (lambda c: c.pop('K'), r'cameras\.front\.K: missing'),
    (lambda c: c.pop('T_cam_lidar'), r'cameras\.front\.T_cam_lidar: missing'),
    (lambda c: c.update(K=[1, 2, 3]), r'cameras\.front.*K: expected a 3x3'),
    (lambda c: c.update(T_cam_lidar=[[1, 0, 0]]), r'cameras\.front\.T_cam_lidar: expected a 4x4'),
    (lambda c: c['T_cam_lidar'].pop('translation'),
     r'cameras\.front\.T_cam_lidar\.translation: missing'),
    (lambda c: c.update(focal=3), r'cameras\.front: unknown key\(s\) focal'),
])
def test_yaml_errors_name_file_and_key(tmp_path: Path, mutate, match: str) -> None:
    cam = {'width': 640, 'height': 480, 'K': K.tolist(),
           'T_cam_lidar': {'translation': [0, 0, 0], 'rotation_quat_xyzw': [0, 0, 0, 1]}}
    mutate(cam)
    path = tmp_path / 'broken.yaml'
    path.write_text(yaml.safe_dump({'lidar_frame': 'v', 'cameras': {'front': cam}}))
    with pytest.raises(CalibrationError, match=match) as info:
        load_calibration_yaml(path)
    assert str(path) in str(info.value)


def test_yaml_missing_file_and_missing_cameras(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match='not found'):
        load_calibration_yaml(tmp_path / 'nope.yaml')
    path = tmp_path / 'empty.yaml'
    path.write_text('lidar_frame: v\n')
    with pytest.raises(CalibrationError, match='cameras: missing'):
        load_calibration_yaml(path)


# ------------------------------------------------------------------ KITTI / nuScenes


def test_kitti_raw_equals_the_p_matrix_projection(kitti_raw_dir: Path) -> None:
    cal = load_kitti_raw(kitti_raw_dir, cam=2)
    c2c = _read_kv(kitti_raw_dir / 'calib_cam_to_cam.txt')
    v2c = _read_kv(kitti_raw_dir / 'calib_velo_to_cam.txt')
    P = c2c['P_rect_02'].reshape(3, 4)
    R_rect = np.eye(4)
    R_rect[:3, :3] = c2c['R_rect_00'].reshape(3, 3)
    Tr = np.eye(4)
    Tr[:3, :3] = v2c['R'].reshape(3, 3)
    Tr[:3, 3] = v2c['T']
    pts = np.fromfile(kitti_raw_dir / 'velodyne_points/data/0000000000.bin',
                      np.float32).reshape(-1, 4)[:, :3].astype(np.float64)
    X = np.c_[pts, np.ones(len(pts))].T
    direct = P @ R_rect @ Tr @ X
    ours = cal.camera.K @ (cal.T_cam_lidar @ X)[:3]
    assert np.allclose(ours, direct, rtol=0, atol=1e-9 * np.abs(direct).max())
    front = direct[2] > 1.0
    px_ours = ours[:2, front] / ours[2, front]
    assert np.abs(px_ours - direct[:2, front] / direct[2, front]).max() < 1e-6
    assert cal.camera.size == (1242, 375) and cal.camera.distortion_model == 'none'
    assert cal.camera.frame_id == 'camera_color_left' and cal.name == 'image_02'
    rig = load_kitti_raw_rig(kitti_raw_dir)  # this file has cameras 0 and 2
    assert rig.names == ['image_00', 'image_02'] and rig.lidar_frame == 'velo_link'
    # Camera 2 sits ~6 cm from camera 0: t = K^-1 P_rect_02[:, 3], |t| = 0.060 m.
    base = rig['image_02'].T_lidar_cam[:3, 3] - rig['image_00'].T_lidar_cam[:3, 3]
    assert np.linalg.norm(base) == pytest.approx(0.060, abs=0.001)


def test_kitti_raw_bad_files_name_file_and_key(kitti_raw_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match='calib_cam_to_cam.txt'):
        load_kitti_raw(tmp_path)
    for name in ('calib_cam_to_cam.txt', 'calib_velo_to_cam.txt'):
        shutil.copy(kitti_raw_dir / name, tmp_path / name)
    c2c = tmp_path / 'calib_cam_to_cam.txt'
    lines = [ln if not ln.startswith('P_rect_02') else 'P_rect_02: 1 2 3'
             for ln in c2c.read_text().splitlines()]
    c2c.write_text('\n'.join(lines))
    with pytest.raises(CalibrationError, match=r'calib_cam_to_cam\.txt: P_rect_02: expected 12'):
        load_kitti_raw(tmp_path)
    v2c = tmp_path / 'calib_velo_to_cam.txt'
    v2c.write_text('\n'.join(ln for ln in v2c.read_text().splitlines() if not ln.startswith('T:')))
    with pytest.raises(CalibrationError, match=r"calib_velo_to_cam\.txt: key 'T' missing"):
        load_kitti_raw(tmp_path, cam=0)


def test_kitti_object_equals_the_p_matrix_projection(kitti_object_dir: Path) -> None:
    path = kitti_object_dir / 'calib_000008.txt'
    cal = load_kitti_object(path)
    kv = _read_kv(path)
    R0 = np.eye(4)
    R0[:3, :3] = kv['R0_rect'].reshape(3, 3)
    Tr = np.eye(4)
    Tr[:3] = kv['Tr_velo_to_cam'].reshape(3, 4)
    M = kv['P2'].reshape(3, 4) @ R0 @ Tr
    assert np.allclose(cal.projection_matrix(), M, atol=1e-9)
    assert cal.camera.size == (1242, 375)  # read from image_2_000008.png


def test_nuscenes_sample_rig(nuscenes_dir: Path) -> None:
    path = nuscenes_dir / 'calibration.json'
    rig = load_nuscenes_sample(path)
    data = json.loads(path.read_text())
    assert sorted(rig.names) == sorted(['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT',
                                        'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT'])
    assert rig.lidar_frame == 'LIDAR_TOP'
    for name, cal in rig.cameras.items():
        assert cal.camera.size == (1600, 900)
        entry = data['cameras'][name]
        assert np.array_equal(cal.camera.K, np.asarray(entry['cam2img']))
        assert np.array_equal(cal.T_cam_lidar, np.asarray(entry['lidar2cam']))
        assert cal.time_offset_s == pytest.approx(entry['timestamp_s'] - data['timestamp_s'])
        assert 0.0004 <= abs(cal.time_offset_s) <= 0.044


def test_nuscenes_bad_json_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / 'calibration.json'
    path.write_text(json.dumps({'timestamp_s': 1.0, 'cameras': {
        'CAM_FRONT': {'cam2img': K.tolist(), 'timestamp_s': 1.01}}}))
    with pytest.raises(CalibrationError, match=r'cameras\.CAM_FRONT\.lidar2cam: missing') as info:
        load_nuscenes_sample(path)
    assert str(path) in str(info.value)
    path.write_text(json.dumps({'timestamp_s': 1.0, 'cameras': {'CAM_FRONT': {
        'cam2img': [[1, 0], [0, 1]], 'lidar2cam': np.eye(4).tolist()}}}))
    with pytest.raises(CalibrationError, match=r'CAM_FRONT\.cam2img: expected a 3x3'):
        load_nuscenes_sample(path)

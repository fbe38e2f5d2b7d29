"""Camera models and camera–LiDAR calibration, with loaders for YAML, KITTI and nuScenes.

Conventions (see ``docs/ARCHITECTURE.md`` and ``docs/calibration.md``):

* ``K`` is the 3x3 pinhole matrix of the *image the pixels come from* (for rectified KITTI
  images, ``P_rect[:3, :3]``).
* ``T_cam_lidar`` (4x4 float64) maps LiDAR points into the camera optical frame
  (z forward, x right, y down): ``p_cam = T_cam_lidar @ [x, y, z, 1]``.
* ``D`` follows OpenCV / ROS ``sensor_msgs/CameraInfo`` order:
  ``plumb_bob`` = (k1, k2, p1, p2, k3); ``rational_polynomial`` = (k1, k2, p1, p2, k3, k4, k5,
  k6); ``equidistant`` = (k1, k2, k3, k4) (OpenCV fisheye).
* ``time_offset_s`` = camera stamp − LiDAR stamp (seconds) of the pair the calibration describes
  (nuScenes: ``cam.timestamp_s - lidar timestamp_s``); 0 for hardware-synchronised rigs.
"""
# Matrix names follow the maths (K, D, R, T, P): ruff pep8-naming is relaxed for them.


from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dsseg_core.atomic import write_text_atomic
from dsseg_core.errors import CalibrationError, ConfigError

__all__ = [
    'DISTORTION_MODELS',
    'CameraCalibration',
    'CameraModel',
    'RigCalibration',
    'distort_normalized',
    'load_calibration_yaml',
    'load_kitti_object',
    'load_kitti_raw',
    'load_kitti_raw_rig',
    'load_nuscenes_sample',
    'normalize_distortion_model',
    'matrix_to_quat_xyzw',
    'quat_xyzw_to_matrix',
    'rig_from_mapping',
    'rig_to_mapping',
    'save_calibration_yaml',
]

log = logging.getLogger(__name__)

#: Supported distortion models and their coefficient count (OpenCV / ROS order).
DISTORTION_MODELS: dict[str, int] = {
    'none': 0,
    'plumb_bob': 5,
    'rational_polynomial': 8,
    'equidistant': 4,
}

_MODEL_ALIASES = {
    '': 'none',
    'pinhole': 'none',
    'rectified': 'none',
    'radtan': 'plumb_bob',
    'brown_conrady': 'plumb_bob',
    'fisheye': 'equidistant',
    'kannala_brandt': 'equidistant',
}

# Tolerance on ``R.T @ R == I`` (hand-written YAML calibrations are often rounded to ~4 digits).
_ROTATION_ATOL = 2e-3

KITTI_RAW_CAMERA_FRAMES = {
    0: 'camera_gray_left',
    1: 'camera_gray_right',
    2: 'camera_color_left',
    3: 'camera_color_right',
}
KITTI_LIDAR_FRAME = 'velo_link'
NUSCENES_LIDAR_FRAME = 'LIDAR_TOP'
NUSCENES_IMAGE_SIZE = (1600, 900)


def normalize_distortion_model(name: str | None) -> str:
    """Canonical distortion model name: '' / 'pinhole' → 'none', 'radtan' → 'plumb_bob', ...

    Raises :class:`CalibrationError` for an unknown model.
    """
    key = (name or '').strip().lower()
    key = _MODEL_ALIASES.get(key, key)
    if key not in DISTORTION_MODELS:
        raise CalibrationError(
            f'distortion_model: unknown model {name!r}; use one of '
            f'{", ".join(DISTORTION_MODELS)} '
            f'(aliases: {", ".join(k for k in _MODEL_ALIASES if k)})'
        )
    return key


def _as_matrix(value: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CalibrationError(f'{what}: not a numeric matrix ({err})') from err
    if arr.shape != shape:
        if arr.size == shape[0] * shape[1]:
            arr = arr.reshape(shape)
        else:
            raise CalibrationError(
                f'{what}: expected a {shape[0]}x{shape[1]} matrix '
                f'({shape[0] * shape[1]} numbers), got shape {arr.shape}'
            )
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f'{what}: contains NaN or inf')
    return arr.copy()


@dataclass
class CameraModel:
    """Pinhole camera with an optional lens distortion model (validated on construction)."""

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = 'none'
    frame_id: str = ''
    name: str = ''

    def __post_init__(self) -> None:
        label = f'camera {self.name!r}' if self.name else 'camera'
        try:
            self.width = int(self.width)
            self.height = int(self.height)
        except (TypeError, ValueError) as err:
            raise CalibrationError(
                f'{label}: width/height must be integers, got {self.width!r}x{self.height!r}'
            ) from err
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(
                f'{label}: image size {self.width}x{self.height} is invalid; set width and '
                'height to the size of the images in pixels'
            )
        self.K = _as_matrix(self.K, (3, 3), f'{label}: K')
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise CalibrationError(
                f'{label}: K has fx={self.K[0, 0]:g}, fy={self.K[1, 1]:g}; focal lengths must '
                'be > 0 (an all-zero K means the camera was never calibrated: calibrate it or '
                'provide a calibration file)'
            )
        if not np.allclose(self.K[2], [0.0, 0.0, 1.0]) or self.K[1, 0] != 0:
            raise CalibrationError(
                f'{label}: K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {self.K.tolist()}'
            )
        try:
            self.distortion_model = normalize_distortion_model(self.distortion_model)
        except CalibrationError as err:
            raise CalibrationError(f'{label}: {err}') from err
        try:
            D = np.asarray(self.D if self.D is not None else [], dtype=np.float64).ravel()
        except (TypeError, ValueError) as err:
            raise CalibrationError(f'{label}: D is not a list of numbers ({err})') from err
        if not np.all(np.isfinite(D)):
            raise CalibrationError(f'{label}: D contains NaN or inf')
        n = DISTORTION_MODELS[self.distortion_model]
        if self.distortion_model == 'none':
            if np.any(D != 0):
                raise CalibrationError(
                    f'{label}: distortion_model is none but D={D.tolist()} has non-zero '
                    'coefficients; set distortion_model (plumb_bob, rational_polynomial, '
                    'equidistant) or clear D'
                )
            D = np.zeros(0)
        elif D.size > n:
            if np.any(D[n:] != 0):
                raise CalibrationError(
                    f'{label}: {self.distortion_model} takes {n} coefficients, D has {D.size}'
                )
            D = D[:n]
        elif D.size < n:
            # Empty D = no distortion coefficients yet (zeros); plumb_bob also takes 4 (k3 = 0).
            if not (D.size == 0 or (self.distortion_model == 'plumb_bob' and D.size == 4)):
                raise CalibrationError(
                    f'{label}: {self.distortion_model} needs {n} coefficients in D, got {D.size}'
                )
            D = np.concatenate([D, np.zeros(n - D.size)])
        self.D = D
        self.frame_id = str(self.frame_id or '')
        self.name = str(self.name or '')

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraModel):
            return NotImplemented
        return (self.size == other.size and np.array_equal(self.K, other.K)
                and np.array_equal(self.D, other.D)
                and self.distortion_model == other.distortion_model
                and self.frame_id == other.frame_id and self.name == other.name)

    __hash__ = None  # mutable

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    @property
    def has_distortion(self) -> bool:
        """False when pixels follow the plain pinhole model (an equidistant fisheye never does,
        even with zero coefficients)."""
        if self.distortion_model == 'equidistant':
            return True
        return self.distortion_model != 'none' and bool(np.any(self.D != 0))

    def resized(self, width: int, height: int) -> CameraModel:
        """The same camera for images resized to ``width`` x ``height`` (K scaled, D kept)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        # Pixel centres stay centres: u' = (u + 0.5) * s - 0.5.
        K[0, 2] += 0.5 * sx - 0.5
        K[1, 2] += 0.5 * sy - 0.5
        return CameraModel(width, height, K, self.D.copy(), self.distortion_model,
                           self.frame_id, self.name)


def _check_transform(T: Any, what: str) -> np.ndarray:
    T = _as_matrix(T, (4, 4), what)
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise CalibrationError(f'{what}: last row must be [0, 0, 0, 1], got {T[3].tolist()}')
    R = T[:3, :3]
    err = np.abs(R.T @ R - np.eye(3)).max()
    det = np.linalg.det(R)
    if err > _ROTATION_ATOL or det <= 0:
        raise CalibrationError(
            f'{what}: the 3x3 block is not a proper rotation (|R^T R - I| = {err:.2g}, '
            f'det = {det:.4g}); check row/column order and units, and that it maps LiDAR points '
            'into the camera optical frame (z forward, x right, y down)'
        )
    return T


@dataclass
class CameraCalibration:
    """A camera plus its pose relative to the LiDAR: ``p_cam = T_cam_lidar @ p_lidar``."""

    camera: CameraModel
    T_cam_lidar: np.ndarray
    time_offset_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.camera, CameraModel):
            raise CalibrationError(
                f'CameraCalibration.camera must be a CameraModel, got {type(self.camera).__name__}'
            )
        label = f'camera {self.camera.name!r}' if self.camera.name else 'camera'
        self.T_cam_lidar = _check_transform(self.T_cam_lidar, f'{label}: T_cam_lidar')
        try:
            self.time_offset_s = float(self.time_offset_s)
        except (TypeError, ValueError) as err:
            raise CalibrationError(f'{label}: time_offset_s must be a number') from err
        if not math.isfinite(self.time_offset_s):
            raise CalibrationError(f'{label}: time_offset_s must be finite')

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraCalibration):
            return NotImplemented
        return (self.camera == other.camera
                and np.array_equal(self.T_cam_lidar, other.T_cam_lidar)
                and self.time_offset_s == other.time_offset_s)

    __hash__ = None  # mutable

    @property
    def name(self) -> str:
        return self.camera.name

    @property
    def T_lidar_cam(self) -> np.ndarray:
        """Inverse of ``T_cam_lidar`` (camera pose in the LiDAR frame)."""
        T = np.eye(4)
        R = self.T_cam_lidar[:3, :3]
        T[:3, :3] = R.T
        T[:3, 3] = -R.T @ self.T_cam_lidar[:3, 3]
        return T

    def projection_matrix(self) -> np.ndarray:
        """3x4 ``K @ T_cam_lidar[:3]`` (pixels = P @ [X, 1] for undistorted cameras)."""
        return self.camera.K @ self.T_cam_lidar[:3]


@dataclass
class RigCalibration:
    """All cameras of a rig, keyed by camera name, relative to one LiDAR frame."""

    cameras: dict[str, CameraCalibration]
    lidar_frame: str = ''

    def __post_init__(self) -> None:
        for key, cal in self.cameras.items():
            if not isinstance(cal, CameraCalibration):
                raise CalibrationError(f'cameras.{key}: expected a CameraCalibration')
            if not cal.camera.name:
                cal.camera.name = key

    def __getitem__(self, name: str) -> CameraCalibration:
        try:
            return self.cameras[name]
        except KeyError as err:
            raise CalibrationError(
                f'no calibration for camera {name!r}; calibrated cameras: '
                f'{", ".join(self.cameras) or "(none)"}'
            ) from err

    def __contains__(self, name: object) -> bool:
        return name in self.cameras

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def names(self) -> list[str]:
        return list(self.cameras)

    def by_frame_id(self, frame_id: str) -> CameraCalibration | None:
        """The camera whose ``frame_id`` (or name) is ``frame_id``, or None."""
        for cal in self.cameras.values():
            if frame_id and frame_id in (cal.camera.frame_id, cal.camera.name):
                return cal
        return None


# --------------------------------------------------------------------------------------------
# Distortion


def distort_normalized(
    xn: np.ndarray, yn: np.ndarray, model: str, D: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a lens distortion model to normalised image coordinates (x/z, y/z).

    Vectorised over arrays of any shape; returns distorted normalised coordinates (multiply by
    K to get pixels). ``model`` is one of :data:`DISTORTION_MODELS` (aliases accepted), ``D`` in
    OpenCV order. Points far outside the field of view are *not* guarded here; see
    :func:`dsseg_core.projection.project_points`.
    """
    model = normalize_distortion_model(model)
    xn = np.asarray(xn)
    yn = np.asarray(yn)
    D = np.asarray(D, dtype=np.float64).ravel()
    if model == 'none' or (model != 'equidistant' and not np.any(D)):
        return xn, yn
    dt = np.result_type(xn.dtype, np.float32)
    c = [dt.type(v) for v in D]
    if model == 'equidistant':
        if D.size == 0:
            D = np.zeros(4)
            c = [dt.type(0.0)] * 4
        if D.size != 4:
            raise CalibrationError(f'D: equidistant needs 4 coefficients, got {D.size}')
        k1, k2, k3, k4 = c
        r = np.sqrt(xn * xn + yn * yn)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        with np.errstate(divide='ignore', invalid='ignore'):
            scale = np.where(r > 1e-12, theta_d / r, dt.type(1.0))
        return xn * scale, yn * scale
    if model == 'plumb_bob':
        if D.size < 5:
            c = c + [dt.type(0.0)] * (5 - D.size)
        k1, k2, p1, p2, k3 = c[:5]
        k4 = k5 = k6 = None
    else:
        if D.size != 8:
            raise CalibrationError(f'D: rational_polynomial needs 8 coefficients, got {D.size}')
        k1, k2, p1, p2, k3, k4, k5, k6 = c
    x2 = xn * xn
    y2 = yn * yn
    xy = xn * yn
    r2 = x2 + y2
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    if k4 is not None:
        radial = radial / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = xn * radial + 2 * p1 * xy + p2 * (r2 + 2 * x2)
    yd = yn * radial + p1 * (r2 + 2 * y2) + 2 * p2 * xy
    return xd, yd


def quat_xyzw_to_matrix(q: Any) -> np.ndarray:
    """3x3 rotation from a quaternion (x, y, z, w); normalised first."""
    q = np.asarray(q, dtype=np.float64).ravel()
    if q.size != 4:
        raise CalibrationError(f'quaternion must have 4 numbers (x, y, z, w), got {q.size}')
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise CalibrationError(f'quaternion {q.tolist()} has zero norm')
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix."""
    R = np.asarray(R, dtype=np.float64)
    # Shepperd's method via the largest diagonal term.
    tr = np.trace(R)
    cands = np.array([tr, R[0, 0], R[1, 1], R[2, 2]])
    i = int(np.argmax(cands))
    if i == 0:
        w = 0.5 * math.sqrt(max(1 + tr, 0.0))
        x = (R[2, 1] - R[1, 2]) / (4 * w)
        y = (R[0, 2] - R[2, 0]) / (4 * w)
        z = (R[1, 0] - R[0, 1]) / (4 * w)
    elif i == 1:
        x = 0.5 * math.sqrt(max(1 + R[0, 0] - R[1, 1] - R[2, 2], 0.0))
        w = (R[2, 1] - R[1, 2]) / (4 * x)
        y = (R[0, 1] + R[1, 0]) / (4 * x)
        z = (R[0, 2] + R[2, 0]) / (4 * x)
    elif i == 2:
        y = 0.5 * math.sqrt(max(1 - R[0, 0] + R[1, 1] - R[2, 2], 0.0))
        w = (R[0, 2] - R[2, 0]) / (4 * y)
        x = (R[0, 1] + R[1, 0]) / (4 * y)
        z = (R[1, 2] + R[2, 1]) / (4 * y)
    else:
        z = 0.5 * math.sqrt(max(1 - R[0, 0] - R[1, 1] + R[2, 2], 0.0))
        w = (R[1, 0] - R[0, 1]) / (4 * z)
        x = (R[0, 2] + R[2, 0]) / (4 * z)
        y = (R[1, 2] + R[2, 1]) / (4 * z)
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


# --------------------------------------------------------------------------------------------
# YAML


def _get(mapping: Any, key: str, path: str, source: str, hint: str = '') -> Any:
    if not isinstance(mapping, dict):
        raise CalibrationError(f'{source}: {path}: expected a mapping')
    if key not in mapping or mapping[key] is None:
        full = f'{path}.{key}' if path else key
        raise CalibrationError(f'{source}: {full}: missing{"; " + hint if hint else ""}')
    return mapping[key]


def _yaml_transform(value: Any, where: str, source: str) -> np.ndarray:
    if isinstance(value, dict):
        t = _get(value, 'translation', where, source, 'give [x, y, z] in metres')
        q = _get(value, 'rotation_quat_xyzw', where, source, 'give [x, y, z, w]')
        try:
            tv = np.asarray(t, dtype=np.float64).ravel()
            if tv.size != 3:
                raise CalibrationError(f'translation must have 3 numbers, got {tv.size}')
            T = np.eye(4)
            T[:3, :3] = quat_xyzw_to_matrix(q)
            T[:3, 3] = tv
        except (CalibrationError, TypeError, ValueError) as err:
            raise CalibrationError(f'{source}: {where}: {err}') from err
        return T
    try:
        return _check_transform(value, where)
    except CalibrationError as err:
        raise CalibrationError(f'{source}: {err}') from err


def _camera_from_yaml(name: str, entry: Any, source: str) -> CameraCalibration:
    path = f'cameras.{name}'
    if not isinstance(entry, dict):
        raise CalibrationError(f'{source}: {path}: expected a mapping of camera fields')
    known = {'width', 'height', 'K', 'D', 'distortion_model', 'frame_id', 'T_cam_lidar',
             'time_offset_s', 'name'}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise CalibrationError(
            f'{source}: {path}: unknown key(s) {", ".join(unknown)}; allowed: '
            f'{", ".join(sorted(known))}'
        )
    width = _get(entry, 'width', path, source, 'image width in pixels')
    height = _get(entry, 'height', path, source, 'image height in pixels')
    K = _get(entry, 'K', path, source, 'give the 3x3 intrinsic matrix (or 9 numbers)')
    T = _yaml_transform(
        _get(entry, 'T_cam_lidar', path, source,
             'give a 4x4 matrix or {translation, rotation_quat_xyzw} mapping LiDAR → camera'),
        f'{path}.T_cam_lidar', source,
    )
    try:
        cam = CameraModel(
            width=width, height=height, K=K, D=entry.get('D') or [],
            distortion_model=entry.get('distortion_model') or 'none',
            frame_id=entry.get('frame_id') or '', name=name,
        )
        return CameraCalibration(cam, T, float(entry.get('time_offset_s') or 0.0))
    except (CalibrationError, TypeError, ValueError) as err:
        raise CalibrationError(f'{source}: {path}: {err}') from err


def rig_from_mapping(data: Any, source: str = '<calibration>') -> RigCalibration:
    """Build a :class:`RigCalibration` from the parsed YAML mapping (see docs/calibration.md).

    Accepts the keys at top level or under a ``calibration:`` section.
    """
    if isinstance(data, dict) and 'calibration' in data and 'cameras' not in data:
        data = data['calibration']
    if not isinstance(data, dict):
        raise CalibrationError(f'{source}: expected a mapping with lidar_frame and cameras')
    cameras = _get(data, 'cameras', '', source, 'add a cameras: {name: {...}} mapping')
    if not isinstance(cameras, dict) or not cameras:
        raise CalibrationError(f'{source}: cameras: must be a non-empty mapping name → camera')
    rig = {str(n): _camera_from_yaml(str(n), e, source) for n, e in cameras.items()}
    return RigCalibration(rig, str(data.get('lidar_frame') or ''))


def load_calibration_yaml(path: str | os.PathLike[str]) -> RigCalibration:
    """Load a rig calibration YAML file (format in ``docs/calibration.md``)."""
    try:
        data = _read_yaml(path)
    except ConfigError as err:
        raise CalibrationError(str(err)) from err
    return rig_from_mapping(data, str(path))


def _read_yaml(path: str | os.PathLike[str]) -> Any:
    from dsseg_core.config import read_yaml

    return read_yaml(path)


def _floats(a: np.ndarray) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def rig_to_mapping(rig: RigCalibration) -> dict:
    """Plain-Python mapping of ``rig`` in the YAML format (exact float round trip)."""
    cams = {}
    for name, cal in rig.cameras.items():
        cam = cal.camera
        cams[name] = {
            'width': cam.width,
            'height': cam.height,
            'K': _floats(cam.K),
            'D': _floats(cam.D),
            'distortion_model': cam.distortion_model,
            'frame_id': cam.frame_id,
            'T_cam_lidar': _floats(cal.T_cam_lidar),
            'time_offset_s': float(cal.time_offset_s),
        }
    return {'lidar_frame': rig.lidar_frame, 'cameras': cams}


def save_calibration_yaml(rig: RigCalibration | CameraCalibration,
                          path: str | os.PathLike[str]) -> None:
    """Write ``rig`` (or a single camera) as calibration YAML, atomically; round-trips exactly."""
    if isinstance(rig, CameraCalibration):
        rig = RigCalibration({rig.camera.name or 'camera': rig}, '')
    text = ('# dsseg rig calibration (docs/calibration.md). T_cam_lidar maps LiDAR points into '
            'the camera optical frame.\n')
    text += yaml.safe_dump(rig_to_mapping(rig), sort_keys=False, default_flow_style=None,
                           width=120)
    write_text_atomic(path, text)


# --------------------------------------------------------------------------------------------
# KITTI


def _read_kv_file(path: Path) -> dict[str, np.ndarray | str]:
    """Parse a KITTI ``key: v1 v2 ...`` calibration text file."""
    try:
        text = path.read_text(encoding='utf-8', errors='replace')
    except FileNotFoundError as err:
        raise CalibrationError(f'{path}: calibration file not found') from err
    except OSError as err:
        raise CalibrationError(f'{path}: cannot read calibration file: {err.strerror}') from err
    out: dict[str, np.ndarray | str] = {}
    for line in text.splitlines():
        if ':' not in line:
            continue
        key, _, rest = line.partition(':')
        key = key.strip()
        try:
            out[key] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            out[key] = rest.strip()
    return out


def _kv_matrix(kv: dict, key: str, shape: tuple[int, int], path: Path,
               alt: tuple[str, ...] = ()) -> np.ndarray:
    for k in (key, *alt):
        if k in kv:
            val = kv[k]
            if isinstance(val, str) or val.size != shape[0] * shape[1]:
                n = 'text' if isinstance(val, str) else f'{val.size} numbers'
                raise CalibrationError(
                    f'{path}: {k}: expected {shape[0] * shape[1]} numbers ({shape[0]}x{shape[1]}),'
                    f' got {n}'
                )
            return val.reshape(shape)
    raise CalibrationError(
        f'{path}: key {key!r} missing; is this the right KITTI calibration file?'
    )


def _camera_from_P(P: np.ndarray, T_rect_lidar: np.ndarray, width: int, height: int,
                   name: str, frame_id: str, source: Path) -> CameraCalibration:
    """Split ``P @ T_rect_lidar`` into K and a T_cam_lidar that includes P's baseline column."""
    K = P[:, :3].copy()
    try:
        t_extra = np.linalg.solve(K, P[:, 3])
    except np.linalg.LinAlgError as err:
        raise CalibrationError(f'{source}: projection matrix of {name} is singular') from err
    A = np.eye(4)
    A[:3, 3] = t_extra
    T = A @ T_rect_lidar
    try:
        return CameraCalibration(
            CameraModel(width, height, K, None, 'none', frame_id, name), T, 0.0
        )
    except CalibrationError as err:
        raise CalibrationError(f'{source}: {err}') from err


def _kitti_raw_files(directory: Path) -> tuple[Path, Path]:
    for d in (directory, directory.parent, directory.parent.parent):
        c2c, v2c = d / 'calib_cam_to_cam.txt', d / 'calib_velo_to_cam.txt'
        if c2c.exists() and v2c.exists():
            return c2c, v2c
    raise CalibrationError(
        f'{directory}: calib_cam_to_cam.txt and calib_velo_to_cam.txt not found there or in '
        'the parent folders; pass the KITTI raw date folder (e.g. 2011_09_26/)'
    )


def load_kitti_raw(directory: str | os.PathLike[str], cam: int = 2) -> CameraCalibration:
    """Calibration of KITTI raw camera ``cam`` (0–3, rectified images) relative to the Velodyne.

    ``directory`` holds ``calib_cam_to_cam.txt`` and ``calib_velo_to_cam.txt`` (a drive folder
    also works: the date folder above it is searched). The returned camera has
    ``K = P_rect_0c[:, :3]`` and ``T_cam_lidar = [I | K^-1 P_rect_0c[:, 3]] @ R_rect_00 @ [R|T]``
    so that ``K @ (T_cam_lidar @ X)[:3] == P_rect_0c @ R_rect_00 @ [R|T] @ X``.
    """
    if cam not in KITTI_RAW_CAMERA_FRAMES:
        raise CalibrationError(f'KITTI raw camera must be 0, 1, 2 or 3, got {cam!r}')
    c2c_path, v2c_path = _kitti_raw_files(Path(directory))
    c2c = _read_kv_file(c2c_path)
    v2c = _read_kv_file(v2c_path)
    P = _kv_matrix(c2c, f'P_rect_0{cam}', (3, 4), c2c_path)
    R_rect = np.eye(4)
    R_rect[:3, :3] = _kv_matrix(c2c, 'R_rect_00', (3, 3), c2c_path)
    size = c2c.get(f'S_rect_0{cam}')
    if isinstance(size, np.ndarray) and size.size == 2:
        width, height = int(round(size[0])), int(round(size[1]))
    else:
        raise CalibrationError(f'{c2c_path}: S_rect_0{cam} (image size) missing or malformed')
    Tr = np.eye(4)
    Tr[:3, :3] = _kv_matrix(v2c, 'R', (3, 3), v2c_path)
    Tr[:3, 3] = _kv_matrix(v2c, 'T', (3, 1), v2c_path)[:, 0]
    return _camera_from_P(P, R_rect @ Tr, width, height, f'image_0{cam}',
                          KITTI_RAW_CAMERA_FRAMES[cam], c2c_path)


def load_kitti_raw_rig(directory: str | os.PathLike[str],
                       cams: tuple[int, ...] | None = None) -> RigCalibration:
    """:func:`load_kitti_raw` for several cameras (default: every ``P_rect_0c`` in the file),
    as a rig keyed ``image_0<c>``."""
    if cams is None:
        c2c = _read_kv_file(_kitti_raw_files(Path(directory))[0])
        cams = tuple(c for c in KITTI_RAW_CAMERA_FRAMES if f'P_rect_0{c}' in c2c)
    cals = [load_kitti_raw(directory, c) for c in cams]
    return RigCalibration({c.camera.name: c for c in cals}, KITTI_LIDAR_FRAME)


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except Exception:  # noqa: BLE001 — a missing/unreadable image just means "size unknown"
        return None


def load_kitti_object(calib_txt: str | os.PathLike[str], cam: int = 2,
                      image_size: tuple[int, int] | None = None) -> CameraCalibration:
    """Calibration of a KITTI object-benchmark frame (``P2``, ``R0_rect``, ``Tr_velo_to_cam``).

    The image size is not in the file: pass ``image_size=(w, h)``, else it is read from the
    frame's image if found (``../image_2/<id>.png`` or ``image_2_<id>.png`` next to the file),
    else 1242x375.
    """
    path = Path(calib_txt)
    kv = _read_kv_file(path)
    P = _kv_matrix(kv, f'P{cam}', (3, 4), path)
    R_rect = np.eye(4)
    R_rect[:3, :3] = _kv_matrix(kv, 'R0_rect', (3, 3), path, alt=('R_rect',))
    Tr = np.eye(4)
    Tr[:3] = _kv_matrix(kv, 'Tr_velo_to_cam', (3, 4), path, alt=('Tr_velo_cam',))
    if image_size is None:
        frame = re.sub(r'^calib_?', '', path.stem)
        for cand in (path.parent.parent / f'image_{cam}' / f'{frame}.png',
                     path.parent / f'image_{cam}_{frame}.png',
                     path.parent / f'image_{cam}' / f'{frame}.png'):
            if cand.exists():
                image_size = _image_size(cand)
                if image_size:
                    break
    if image_size is None:
        log.warning('%s: image size unknown (no image found); assuming 1242x375', path)
        image_size = (1242, 375)
    return _camera_from_P(P, R_rect @ Tr, image_size[0], image_size[1], f'image_{cam}',
                          KITTI_RAW_CAMERA_FRAMES.get(cam, f'camera_{cam}'), path)


# --------------------------------------------------------------------------------------------
# nuScenes


def load_nuscenes_sample(calibration_json: str | os.PathLike[str],
                         image_size: tuple[int, int] | None = None) -> RigCalibration:
    """Rig calibration of one nuScenes sample (``calibration.json``: per camera ``cam2img``,
    ``lidar2cam``, ``timestamp_s``; the LiDAR's ``timestamp_s`` at top level).

    ``lidar2cam`` already compensates ego motion between the LiDAR and camera stamps.
    Image size: ``image_size`` if given, else read from the camera's ``file`` next to the JSON,
    else 1600x900. ``time_offset_s`` = camera stamp − LiDAR stamp. Note that nuScenes' LIDAR_TOP
    frame is x right, y forward, z up (not REP 103); ``lidar2cam`` accounts for it.
    """
    path = Path(calibration_json)
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError as err:
        raise CalibrationError(f'{path}: calibration file not found') from err
    except (OSError, ValueError) as err:
        raise CalibrationError(f'{path}: cannot read calibration JSON: {err}') from err
    cams = _get(data, 'cameras', '', str(path), 'expected a nuScenes calibration.json')
    if not isinstance(cams, dict) or not cams:
        raise CalibrationError(f'{path}: cameras: must be a non-empty mapping')
    lidar_ts = data.get('timestamp_s')
    out: dict[str, CameraCalibration] = {}
    for name, entry in cams.items():
        where = f'cameras.{name}'
        K = _get(entry, 'cam2img', where, str(path), 'the 3x3 intrinsics')
        T = _get(entry, 'lidar2cam', where, str(path), 'the 4x4 LiDAR → camera transform')
        size = image_size
        if size is None and entry.get('file'):
            size = _image_size(path.parent / str(entry['file']))
        size = size or NUSCENES_IMAGE_SIZE
        offset = 0.0
        if lidar_ts is not None and entry.get('timestamp_s') is not None:
            offset = float(entry['timestamp_s']) - float(lidar_ts)
        try:
            K = _as_matrix(K, (3, 3), f'{where}.cam2img')
            T = _check_transform(T, f'{where}.lidar2cam')
            out[name] = CameraCalibration(
                CameraModel(size[0], size[1], K, None, 'none', name, name), T, offset
            )
        except CalibrationError as err:
            raise CalibrationError(f'{path}: {err}') from err
    return RigCalibration(out, NUSCENES_LIDAR_FRAME)

"""Synthetic camera + LiDAR frames for the pseudo-labelling tests (ray-cast, see lidar_scene)."""

from __future__ import annotations

import numpy as np
from lidar_scene import STREET, simulate_scan

from dsseg_core.calibration import CameraCalibration, CameraModel
from dsseg_core.pseudolabel.pipeline import CameraInput, FrameInput

#: LiDAR (x fwd, y left, z up) -> camera optical (x right, y down, z fwd), same origin.
R_CAM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def front_camera(width: int = 320, height: int = 120, f: float = 160.0,
                 name: str = 'front') -> CameraCalibration:
    k_mat = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    t_cam = np.eye(4)
    t_cam[:3, :3] = R_CAM_LIDAR
    return CameraCalibration(CameraModel(width, height, k_mat, name=name), t_cam)


def scene_image(calib: CameraCalibration, seed: int = 0) -> np.ndarray:
    """Image with a grey road below the horizon, blue sky above, and some noise."""
    cam = calib.camera
    rng = np.random.default_rng(seed)
    img = np.empty((cam.height, cam.width, 3), np.float32)
    img[: cam.height // 2] = (120, 160, 230)
    img[cam.height // 2:] = (90, 90, 95)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def street_frame(index: int = 0, source: str = 'synthetic', shift: float = 0.0,
                 num_beams: int = 32, num_azimuth: int = 512, cameras: bool = True,
                 boxes: list | None = None) -> FrameInput:
    """A ray-cast street scene (cars, a pedestrian-sized box, a wall) seen by a front camera."""
    boxes = STREET if boxes is None else boxes
    moved = [(x0 - shift, x1 - shift, y0, y1, z0, z1) for x0, x1, y0, y1, z0, z1 in boxes]
    xyz, ring, _ = simulate_scan(moved, num_beams=num_beams, num_azimuth=num_azimuth,
                                 seed=index)
    intensity = np.linspace(0, 1, len(xyz), dtype=np.float32)
    cams = []
    if cameras:
        calib = front_camera()
        cams.append(CameraInput('front', scene_image(calib, index), calib, index * 100))
    return FrameInput(source=source, index=index, stamp_ns=index * 100, xyz=xyz,
                      intensity=intensity, ring=ring, cameras=cams)

"""Small synthetic camera + LiDAR bags with known ground truth, for tests and benchmarks.

:func:`write_rig_bag` writes a real rosbag2 bag (mcap or sqlite3) with N cameras, a LiDAR and
/tf_static, every stamp and transform known, so readers, the synchroniser and the calibration
path can be checked exactly. Images are small deterministic RGB patterns, clouds are points in
front of the rig (a wall 10 m ahead plus a ground plane).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsseg_core.convert.bag_writer import write_bag

__all__ = ['SyntheticCamera', 'make_cloud', 'make_image', 'write_rig_bag']

# Optical frame (z forward, x right, y down) axes expressed in a body frame (x fwd, y left, z up).
_R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _yaw(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class SyntheticCamera:
    """One camera of the synthetic rig. ``delay_s`` is added to its stamps (vs the LiDAR)."""

    name: str
    yaw_deg: float = 0.0                   # heading relative to the LiDAR x axis
    position: tuple[float, float, float] = (0.2, 0.0, -0.1)   # in the LiDAR frame
    width: int = 64
    height: int = 48
    fx: float = 50.0
    delay_s: float = 0.0
    encoding: str = 'rgb8'                 # rgb8, bgr8, mono8, ... or 'jpeg' / 'png'
    zero_k: bool = False                   # publish an uncalibrated CameraInfo (K = 0)
    rate_div: int = 1                      # publish every rate_div-th LiDAR period
    extra_images: int = 0                  # additional images per LiDAR period (higher rate)

    @property
    def topic(self) -> str:
        base = f'/rig/{self.name}/image_raw'
        return base + '/compressed' if self.encoding in ('jpeg', 'png') else base

    @property
    def info_topic(self) -> str:
        return f'/rig/{self.name}/camera_info'

    @property
    def frame_id(self) -> str:
        return f'{self.name}_optical_frame'

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name of the intrinsic matrix
        return np.array([[self.fx, 0.0, self.width / 2.0], [0.0, self.fx, self.height / 2.0],
                         [0.0, 0.0, 1.0]])

    def cam_from_lidar(self) -> np.ndarray:
        """``T_cam_lidar`` (LiDAR → this camera's optical frame)."""
        lidar_optical = np.eye(4)
        lidar_optical[:3, :3] = _yaw(self.yaw_deg) @ _R_BODY_OPTICAL
        lidar_optical[:3, 3] = self.position
        return np.linalg.inv(lidar_optical)


def make_image(width: int, height: int, seed: int) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 RGB pattern (gradients + seed-dependent offset)."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (xx * 4 + seed * 7) % 256
    img[..., 1] = (yy * 5 + seed * 3) % 256
    img[..., 2] = (xx + yy + seed * 11) % 256
    return img


def make_cloud(seed: int, n_wall: int = 2000, n_ground: int = 2000) -> dict[str, np.ndarray]:
    """Points of a wall 10 m ahead (x = 10) and a ground plane (z = -1.5), all around."""
    rng = np.random.default_rng(seed)
    wall = np.stack([np.full(n_wall, 10.0), rng.uniform(-8, 8, n_wall),
                     rng.uniform(-1.5, 3.0, n_wall)], axis=1)
    ang = rng.uniform(-np.pi, np.pi, n_ground)
    rad = rng.uniform(3.0, 30.0, n_ground)
    ground = np.stack([rad * np.cos(ang), rad * np.sin(ang), np.full(n_ground, -1.5)], axis=1)
    xyz = np.concatenate([wall, ground]).astype(np.float32)
    intensity = rng.uniform(0, 1, xyz.shape[0]).astype(np.float32)
    return {'xyz': xyz, 'intensity': intensity}


@dataclass
class RigBagInfo:
    """Ground truth of a written synthetic bag."""

    path: Path
    lidar_topic: str
    lidar_frame: str
    lidar_stamps: np.ndarray
    camera_stamps: dict[str, np.ndarray] = field(default_factory=dict)
    cameras: dict[str, SyntheticCamera] = field(default_factory=dict)


def write_rig_bag(out: str | os.PathLike[str], cameras: list[SyntheticCamera] | None = None,
                  n_scans: int = 5, storage: str = 'mcap', period_s: float = 0.1,
                  start_ns: int = 1_700_000_000_000_000_000, tf_static: bool = True,
                  cloud_fn=None, lidar_topic: str = '/rig/lidar/points',  # noqa: ANN001
                  lidar_frame: str = 'lidar_link') -> RigBagInfo:
    """Write the synthetic rig bag; ``cloud_fn(i) -> dict(xyz, intensity)`` overrides clouds."""
    cameras = cameras if cameras is not None else [SyntheticCamera('cam_front')]
    period = int(round(period_s * 1e9))
    lidar_stamps = start_ns + np.arange(n_scans, dtype=np.int64) * period
    info = RigBagInfo(Path(out), lidar_topic, lidar_frame, lidar_stamps,
                      cameras={c.name: c for c in cameras})
    events: list[tuple[int, int, str, object]] = []  # (stamp, order, kind, payload)
    for i, t in enumerate(lidar_stamps.tolist()):
        events.append((t, 0, 'cloud', i))
    for cam in cameras:
        stamps = []
        per = cam.extra_images + 1
        for i, t in enumerate(lidar_stamps.tolist()):
            if i % cam.rate_div:
                continue
            for j in range(per):
                stamps.append(t + int(round(cam.delay_s * 1e9)) + j * period // per)
        info.camera_stamps[cam.name] = np.asarray(stamps, dtype=np.int64)
        for k, t in enumerate(stamps):
            events.append((t, 1, 'image', (cam, k)))
    events.sort(key=lambda e: (e[0], e[1]))
    with write_bag(out, storage=storage) as bag:
        t0 = int(min(e[0] for e in events))
        if tf_static:
            transforms = []
            base_lidar = np.eye(4)
            base_lidar[2, 3] = 1.8
            transforms.append(('base_link', lidar_frame, base_lidar))
            for cam in cameras:
                transforms.append((lidar_frame, cam.frame_id, np.linalg.inv(cam.cam_from_lidar())))
            bag.add_tf_static(t0, transforms)
        for stamp, _order, kind, payload in events:
            if kind == 'cloud':
                arrays = cloud_fn(payload) if cloud_fn is not None else make_cloud(int(payload))
                bag.add_cloud(lidar_topic, stamp, lidar_frame, arrays)
                continue
            cam, k = payload
            img = make_image(cam.width, cam.height, k)
            if cam.encoding in ('jpeg', 'png'):
                from dsseg_core.msgs.image import compressed_format, encode_compressed

                bag.add_compressed_image(cam.topic, stamp, cam.frame_id,
                                         encode_compressed(img, cam.encoding, quality=95),
                                         compressed_format(cam.encoding, 'rgb8'))
            elif cam.encoding == 'bgr8':
                bag.add_image(cam.topic, stamp, cam.frame_id, img[:, :, ::-1].copy(), 'bgr8')
            elif cam.encoding == 'mono8':
                bag.add_image(cam.topic, stamp, cam.frame_id, img[:, :, 0].copy(), 'mono8')
            elif cam.encoding == 'rgb8':
                bag.add_image(cam.topic, stamp, cam.frame_id, img, 'rgb8')
            else:  # an encoding the decoders do not know: raw bytes, 3 per pixel
                bag.add_image(cam.topic, stamp, cam.frame_id, fields={
                    'height': cam.height, 'width': cam.width, 'encoding': cam.encoding,
                    'is_bigendian': 0, 'step': cam.width * 3, 'data': img.tobytes()})
            k_matrix = np.zeros((3, 3)) if cam.zero_k else cam.K
            bag.add_camera_info(cam.info_topic, stamp, cam.frame_id, cam.width, cam.height,
                                k_matrix)
    return info

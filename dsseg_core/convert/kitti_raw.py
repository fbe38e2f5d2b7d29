"""Convert a KITTI raw drive (left colour camera + Velodyne) into a rosbag2 (mcap) bag.

Input folder layout (as in a KITTI raw drive, calibration files next to or above it)::

    DIR/image_02/data/0000000000.png ...      DIR/image_02/timestamps.txt (optional)
    DIR/velodyne_points/data/0000000000.bin   DIR/velodyne_points/timestamps.txt (optional)
    DIR/calib_cam_to_cam.txt  DIR/calib_velo_to_cam.txt

Output topics (REP 103/105 frame ids):

* ``/kitti/camera_color_left/image_raw`` (sensor_msgs/Image rgb8) or
  ``/kitti/camera_color_left/image_raw/compressed`` (sensor_msgs/CompressedImage jpeg/png),
  frame ``camera_color_left_optical_frame``;
* ``/kitti/camera_color_left/camera_info`` (rectified: K = P_rect_02[:, :3], D = 0, P = [K|0]);
* ``/kitti/velo/pointcloud`` (PointCloud2 x, y, z, intensity float32), frame ``velo_link``;
* ``/tf_static``: ``base_link → velo_link``, ``base_link → camera_color_left`` (x forward,
  y left, z up) and ``camera_color_left → camera_color_left_optical_frame``. The camera pose
  comes from the KITTI calibration (``P_rect_02`` translation folded in, see
  ``calibration.load_kitti_raw``); the Velodyne sits 1.73 m above ``base_link`` (KITTI setup).

Stamps: ``timestamps.txt`` (``2011-09-26 13:02:25.964389445``, UTC) when present, else 10 Hz
from midnight UTC of the date in the folder name (``2011_09_26``), frame ``i`` at ``i * 0.1 s``.
"""

from __future__ import annotations

import calendar
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsseg_core.errors import DatasetError

__all__ = [
    'CAMERA_FRAME',
    'CAMERA_INFO_TOPIC',
    'CLOUD_TOPIC',
    'IMAGE_TOPIC',
    'LIDAR_FRAME',
    'OPTICAL_FRAME',
    'ConvertStats',
    'convert_kitti_raw',
    'parse_kitti_timestamps',
]

log = logging.getLogger(__name__)

IMAGE_TOPIC = '/kitti/camera_color_left/image_raw'
CAMERA_INFO_TOPIC = '/kitti/camera_color_left/camera_info'
CLOUD_TOPIC = '/kitti/velo/pointcloud'
BASE_FRAME = 'base_link'
LIDAR_FRAME = 'velo_link'
CAMERA_FRAME = 'camera_color_left'
OPTICAL_FRAME = 'camera_color_left_optical_frame'
VELO_HEIGHT_M = 1.73
FRAME_PERIOD_NS = 100_000_000
IMAGE_FORMATS = ('raw', 'jpeg', 'png')

# Rotation taking optical-frame coordinates (z fwd, x right, y down) to body coordinates
# (x fwd, y left, z up): columns are the optical axes expressed in the body frame.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

_STAMP_RE = re.compile(r'^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$')


@dataclass(frozen=True)
class ConvertStats:
    frames: int
    skipped: int
    messages: int
    bytes: int
    path: Path
    timestamps: str  # 'timestamps.txt' or '10 Hz (no timestamps.txt)'


def parse_kitti_timestamps(path: str | os.PathLike[str]) -> np.ndarray:
    """KITTI ``timestamps.txt`` → int64 ns since the epoch (UTC), one per line."""
    path = Path(path)
    out = []
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except OSError as err:
        raise DatasetError(f'{path}: cannot read timestamps ({err.strerror})') from err
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        m = _STAMP_RE.match(line)
        if not m:
            raise DatasetError(f'{path}:{lineno}: bad timestamp {line!r}; expected '
                               "'YYYY-MM-DD HH:MM:SS.fffffffff'")
        y, mo, d, h, mi, s = (int(v) for v in m.groups()[:6])
        frac = (m.group(7) or '0').ljust(9, '0')
        sec = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
        out.append(sec * 1_000_000_000 + int(frac))
    return np.asarray(out, dtype=np.int64)


def _base_time_ns(directory: Path) -> int:
    for part in reversed(directory.resolve().parts):
        m = re.search(r'(\d{4})_(\d{2})_(\d{2})', part)
        if m:
            y, mo, d = (int(v) for v in m.groups())
            return calendar.timegm((y, mo, d, 0, 0, 0, 0, 0, 0)) * 1_000_000_000
    return 1_000_000_000 * 1_000_000_000  # 2001-09-09: any fixed positive epoch


def _frame_files(folder: Path, pattern: str) -> dict[int, Path]:
    if not folder.is_dir():
        raise DatasetError(f'{folder}: folder missing; a KITTI raw drive has image_02/data/*.png '
                           'and velodyne_points/data/*.bin')
    files = {}
    for p in folder.glob(pattern):
        if p.stem.isdigit():
            files[int(p.stem)] = p
    return files


def _stamps(sensor_dir: Path, indices: list[int], fallback: np.ndarray) -> tuple[np.ndarray, bool]:
    ts_file = sensor_dir / 'timestamps.txt'
    if not ts_file.exists():
        return fallback, False
    stamps = parse_kitti_timestamps(ts_file)
    if max(indices) >= stamps.size:
        raise DatasetError(f'{ts_file}: {stamps.size} timestamps but frame {max(indices)} is '
                           'needed; the file does not match the data folder')
    return stamps[np.asarray(indices)], True


def _read_velodyne(path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype='<f4')
    if raw.size % 4:
        raise DatasetError(f'{path}: size {raw.size * 4} bytes is not a multiple of 16 '
                           '(KITTI scans are float32 x, y, z, reflectance)')
    return raw.reshape(-1, 4)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert('RGB'))
    except OSError as err:
        raise DatasetError(f'{path}: cannot read image ({err})') from err


def static_transforms(cam_from_lidar: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """The three /tf_static transforms (parent, child, pose of child in parent) of the bag.

    ``cam_from_lidar`` is ``T_cam_lidar`` (LiDAR → rectified camera optical frame).
    """
    base_velo = np.eye(4)
    base_velo[2, 3] = VELO_HEIGHT_M
    velo_optical = np.linalg.inv(cam_from_lidar)
    body_optical = np.eye(4)
    body_optical[:3, :3] = R_BODY_OPTICAL
    base_body = base_velo @ velo_optical @ np.linalg.inv(body_optical)
    return [
        (BASE_FRAME, LIDAR_FRAME, base_velo),
        (BASE_FRAME, CAMERA_FRAME, base_body),
        (CAMERA_FRAME, OPTICAL_FRAME, body_optical),
    ]


def convert_kitti_raw(directory: str | os.PathLike[str], out_bag: str | os.PathLike[str],
                      image_format: str = 'jpeg', max_frames: int | None = None,
                      start: int = 0, stride: int = 1, jpeg_quality: int = 92,
                      storage: str = 'mcap', compress: bool = True,
                      compression_level: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> ConvertStats:
    """Write KITTI raw frames ``start, start+stride, ...`` (at most ``max_frames``) as a bag.

    ``image_format``: 'raw' (Image rgb8), 'jpeg' (CompressedImage, ``jpeg_quality``) or 'png'.
    ``storage``: 'mcap' (default; ``compress`` = zstd chunks at ``compression_level``) or
    'sqlite3' (per-message zstd). The bag folder
    ``out_bag`` appears atomically. ``progress(done, total)`` is called after each frame.
    """
    from dsseg_core.calibration import load_kitti_raw
    from dsseg_core.convert.bag_writer import check_bag_output, write_bag

    directory = Path(directory)
    check_bag_output(out_bag)  # refuse a file / a non-bag folder before reading anything
    if image_format not in IMAGE_FORMATS:
        raise DatasetError(f'unknown image format {image_format!r}; use one of '
                           f'{", ".join(IMAGE_FORMATS)}')
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 1):
        raise DatasetError(f'bad frame selection start={start} stride={stride} '
                           f'max_frames={max_frames}; need start >= 0, stride >= 1, '
                           'max_frames >= 1')
    if not directory.is_dir():
        raise DatasetError(f'{directory}: no such folder (expected a KITTI raw drive folder)')
    images = _frame_files(directory / 'image_02' / 'data', '*.png')
    scans = _frame_files(directory / 'velodyne_points' / 'data', '*.bin')
    both = sorted(set(images) & set(scans))
    skipped = len(set(images) ^ set(scans))
    if skipped:
        log.warning('%s: %d frames have an image or a scan but not both; skipped', directory,
                    skipped)
    selected = both[start::stride]
    if max_frames is not None:
        selected = selected[:max_frames]
    if not selected:
        raise DatasetError(f'{directory}: no frame to convert ({len(both)} frames with both an '
                           f'image_02 PNG and a velodyne .bin; start={start}, stride={stride})')
    calib = load_kitti_raw(directory, cam=2)
    fallback = _base_time_ns(directory) + np.asarray(selected, dtype=np.int64) * FRAME_PERIOD_NS
    cam_stamps, cam_has = _stamps(directory / 'image_02', selected, fallback)
    velo_stamps, velo_has = _stamps(directory / 'velodyne_points', selected, fallback)
    cam_model = calib.camera

    with write_bag(out_bag, storage=storage, compress=compress,
                   compression_level=compression_level) as bag:
        t0 = int(min(cam_stamps.min(), velo_stamps.min()))
        bag.add_tf_static(t0, static_transforms(calib.T_cam_lidar))
        for k, idx in enumerate(selected):
            cam_t, velo_t = int(cam_stamps[k]), int(velo_stamps[k])
            scan = _read_velodyne(scans[idx])
            cloud = {'xyz': scan[:, :3], 'intensity': scan[:, 3]}
            rgb = _read_png(images[idx])
            if (rgb.shape[1], rgb.shape[0]) != (cam_model.width, cam_model.height):
                raise DatasetError(f'{images[idx]}: image is {rgb.shape[1]}x{rgb.shape[0]} but '
                                   f'the calibration says {cam_model.width}x{cam_model.height}')
            msgs: list[tuple[int, Callable[[], None]]] = []
            if image_format == 'raw':
                msgs.append((cam_t, lambda t=cam_t, a=rgb: bag.add_image(
                    IMAGE_TOPIC, t, OPTICAL_FRAME, a, 'rgb8')))
            else:
                from dsseg_core.msgs.image import compressed_format, encode_compressed

                data = encode_compressed(rgb, image_format, quality=jpeg_quality)
                fmt = compressed_format(image_format, 'rgb8')
                msgs.append((cam_t, lambda t=cam_t, d=data, f=fmt: bag.add_compressed_image(
                    IMAGE_TOPIC + '/compressed', t, OPTICAL_FRAME, d, f)))
            msgs.append((cam_t, lambda t=cam_t: bag.add_camera_info(
                CAMERA_INFO_TOPIC, t, OPTICAL_FRAME, cam_model.width, cam_model.height,
                cam_model.K, d=np.zeros(5), distortion_model='plumb_bob')))
            msgs.append((velo_t, lambda t=velo_t, c=cloud: bag.add_cloud(
                CLOUD_TOPIC, t, LIDAR_FRAME, c)))
            for _t, write in sorted(msgs, key=lambda m: m[0]):
                write()
            if progress is not None:
                progress(k + 1, len(selected))
        messages = bag.count
    out_bag = Path(out_bag)
    size = sum(p.stat().st_size for p in out_bag.rglob('*') if p.is_file())
    stamps_src = 'timestamps.txt' if (cam_has and velo_has) else (
        'timestamps.txt (partly) + 10 Hz' if (cam_has or velo_has) else
        '10 Hz (no timestamps.txt)')
    return ConvertStats(frames=len(selected), skipped=skipped, messages=messages, bytes=size,
                        path=out_bag, timestamps=stamps_src)

"""Synchronised camera + LiDAR frames from a bag.

``iter_frames(bag_path, cfg)`` streams :class:`Frame` objects: one LiDAR scan with every camera
image paired to it (see :mod:`dsseg_core.sync`), decoded to numpy, with the calibration of each
camera. It never loads the whole bag: a first pass reads only the header stamps of the image
and cloud topics (from the serialized bytes), the pairs are chosen, then a second pass
deserializes and decodes only the messages of the selected frames.

Calibration, in this order: ``frames.calibration_file`` (calibration YAML, see
``docs/calibration.md``); else intrinsics from each camera's CameraInfo and extrinsics
(LiDAR → camera optical frame) from ``/tf_static``. :attr:`FrameStats.calibration_source`
says which was used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from dsseg_core.bag.reader import (
    CAMERA_INFO_TYPES,
    CLOUD_TYPES,
    IMAGE_TYPES,
    BagSource,
    StampScan,
    TopicInfo,
    camera_name_from_topic,
    discover_topics,
    match_camera_info,
    open_bag,
)
from dsseg_core.calibration import CameraCalibration, RigCalibration
from dsseg_core.config import StageConfig
from dsseg_core.errors import CalibrationError, DssegError, MessageError, TopicError
from dsseg_core.sync import pair_nearest

__all__ = [
    'CameraFrame',
    'Frame',
    'FramePlan',
    'FrameStats',
    'FramesConfig',
    'PointCloud',
    'iter_frames',
    'plan_frames',
    'resolve_calibration',
]

log = logging.getLogger(__name__)

SECTION = 'frames'


class FramesConfig(StageConfig):
    """Section ``frames``: which topics make a frame and how they are paired.

    Empty topic settings mean "discover by message type". ``camera_info_topics`` and
    ``camera_names`` are parallel to ``image_topics`` (an empty entry = automatic).
    ``time_offsets_s`` maps a camera name (or image topic) to camera stamp − LiDAR stamp
    (seconds); when a camera has none, the calibration file's ``time_offset_s`` is used.
    ``max_frames`` 0 or None = all (ROS parameter files cannot hold None, use 0 there).
    ``read_cache_mb``: serialized messages kept in memory by the stamp pass so that the
    decoding pass need not read them again (bags up to this size are read once).
    """

    image_topics: list[str] = Field(default_factory=list)
    camera_info_topics: list[str] = Field(default_factory=list)
    camera_names: list[str] = Field(default_factory=list)
    cloud_topic: str = ''
    tf_static_topic: str = '/tf_static'
    slop_s: float = Field(0.05, ge=0.0)
    time_offsets_s: dict[str, float] = Field(default_factory=dict)
    calibration_file: str | None = None
    max_frames: int | None = Field(None, ge=0)  # None or 0: all frames
    stride: int = Field(1, ge=1)
    min_points: int = Field(1, ge=1)
    read_cache_mb: float = Field(256.0, ge=0.0)


@dataclass
class PointCloud:
    """A LiDAR scan in its own frame (REP 103), NaN/inf points removed."""

    xyz: np.ndarray                      # (N, 3) float32
    intensity: np.ndarray | None         # (N,) float32
    ring: np.ndarray | None              # (N,) int32
    stamp_ns: int
    frame_id: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    dropped_invalid: int = 0

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


@dataclass
class CameraFrame:
    """One camera image (RGB uint8, (H, W, 3)) with its calibration."""

    name: str
    image: np.ndarray
    stamp_ns: int
    frame_id: str
    calib: CameraCalibration
    topic: str = ''


@dataclass
class Frame:
    """A LiDAR scan and the images paired with it; ``source`` is the bag path."""

    index: int
    stamp_ns: int
    cloud: PointCloud
    cameras: dict[str, CameraFrame]
    source: str


@dataclass
class FrameStats:
    """What :func:`iter_frames` found and did (filled while iterating)."""

    bag: str = ''
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    cloud_topic: str = ''
    image_topics: dict[str, str] = field(default_factory=dict)       # camera -> topic
    camera_info_topics: dict[str, str | None] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)              # camera -> pairs
    unmatched_images: dict[str, int] = field(default_factory=dict)   # camera -> images
    unmatched_scans: dict[str, int] = field(default_factory=dict)    # camera -> scans
    max_dt_ms: dict[str, float] = field(default_factory=dict)        # camera -> max |dt|
    scans_without_image: int = 0
    planned_frames: int = 0
    frames: int = 0
    skipped_clouds: int = 0
    dropped_invalid_points: int = 0
    calibration_source: str = ''
    calibration_sources: dict[str, str] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        lines = [f'bag: {self.bag}', 'topics:']
        lines += [f'  {t}  {i.msgtype}  {i.count}' for t, i in self.topics.items()]
        lines.append(f'cloud topic: {self.cloud_topic}')
        for cam, topic in self.image_topics.items():
            lines.append(
                f'camera {cam}: {topic} (info: {self.camera_info_topics.get(cam) or "-"}): '
                f'{self.pairs.get(cam, 0)} pairs, {self.unmatched_images.get(cam, 0)} unmatched '
                f'images, {self.unmatched_scans.get(cam, 0)} unmatched scans, max |dt| '
                f'{self.max_dt_ms.get(cam, 0.0):.1f} ms'
            )
        lines.append(f'scans without any image: {self.scans_without_image}')
        lines.append(f'frames: {self.frames} of {self.planned_frames} planned, '
                     f'{self.skipped_clouds} skipped (empty or all-NaN cloud), '
                     f'{self.dropped_invalid_points} NaN/inf points dropped')
        lines.append(f'calibration: {self.calibration_source}')
        return lines


@dataclass
class _Camera:
    name: str
    topic: str
    info_topic: str | None
    offset_s: float | None  # from config; None = from calibration (or 0)


@dataclass
class FramePlan:
    """The frames to decode: ``scan_index[k]`` with ``images[k][camera] = image index``."""

    cloud_topic: str
    cameras: list[_Camera]
    scan_index: list[int]
    scan_stamp: list[int]
    images: list[dict[str, int]]
    scan: StampScan | None = None

    def __len__(self) -> int:
        return len(self.scan_index)


# ------------------------------------------------------------------------------- planning
def _select_topics(bag: BagSource, cfg: FramesConfig) -> tuple[str, list[_Camera]]:
    sel = discover_topics(bag)
    if cfg.cloud_topic:
        bag.require_topics([cfg.cloud_topic], CLOUD_TYPES)
        cloud = cfg.cloud_topic
    elif len(sel.clouds) == 1:
        cloud = sel.clouds[0]
    elif not sel.clouds:
        raise TopicError(f'{bag.path}: no sensor_msgs/msg/PointCloud2 topic; available topics: '
                         f'{bag.describe_topics()}')
    else:
        raise TopicError(f'{bag.path}: several PointCloud2 topics ({", ".join(sel.clouds)}); '
                         'choose one with frames.cloud_topic')
    if cfg.image_topics:
        bag.require_topics(cfg.image_topics, IMAGE_TYPES)
        image_topics = list(cfg.image_topics)
    else:
        image_topics = sel.images
    if not image_topics:
        raise TopicError(f'{bag.path}: no sensor_msgs/msg/Image or CompressedImage topic; '
                         f'available topics: {bag.describe_topics()}')
    for name, what in ((cfg.camera_info_topics, 'camera_info_topics'),
                       (cfg.camera_names, 'camera_names')):
        if name and len(name) != len(image_topics):
            raise TopicError(f'frames.{what} has {len(name)} entries but there are '
                             f'{len(image_topics)} image topics ({", ".join(image_topics)}); '
                             'give one per image topic (empty string = automatic)')
    if cfg.camera_info_topics:
        bag.require_topics([t for t in cfg.camera_info_topics if t], CAMERA_INFO_TYPES)
    cameras: list[_Camera] = []
    used_names: set[str] = set()
    for k, topic in enumerate(image_topics):
        name = (cfg.camera_names[k] if cfg.camera_names and cfg.camera_names[k]
                else camera_name_from_topic(topic))
        base, n = name, 2
        while name in used_names:
            name, n = f'{base}_{n}', n + 1
        used_names.add(name)
        info = cfg.camera_info_topics[k] if cfg.camera_info_topics else ''
        if not info:
            info = sel.camera_info_of.get(topic) or match_camera_info(topic, sel.camera_infos)
            if info is None and len(image_topics) == 1 and len(sel.camera_infos) == 1:
                info = sel.camera_infos[0]
        offset = cfg.time_offsets_s.get(name, cfg.time_offsets_s.get(topic))
        cameras.append(_Camera(name, topic, info or None, offset))
    unknown = set(cfg.time_offsets_s) - {c.name for c in cameras} - {c.topic for c in cameras}
    if unknown:
        raise TopicError(f'frames.time_offsets_s names unknown cameras {sorted(unknown)}; '
                         f'cameras: {", ".join(c.name for c in cameras)}')
    return cloud, cameras


def plan_frames(bag: BagSource, cfg: FramesConfig, stats: FrameStats,
                offsets: dict[str, float] | None = None) -> FramePlan:
    """Read stamps only, pair each camera with the scans, pick the frames (stride, max)."""
    cloud, cameras = _select_topics(bag, cfg)
    stats.bag = str(bag.path)
    stats.topics = bag.topics
    stats.cloud_topic = cloud
    stats.image_topics = {c.name: c.topic for c in cameras}
    stats.camera_info_topics = {c.name: c.info_topic for c in cameras}
    # Small calibration topics ride along in the same pass (kept in the cache for later).
    extra = [c.info_topic for c in cameras if c.info_topic]
    if not cfg.calibration_file and cfg.tf_static_topic in bag.topics:
        extra.append(cfg.tf_static_topic)
    scan = bag.scan_stamps(list(dict.fromkeys([cloud] + [c.topic for c in cameras] + extra)),
                           cache_bytes=int(cfg.read_cache_mb * 1e6))
    stamps = scan.stamps
    lidar = stamps[cloud]
    per_scan: dict[int, dict[str, int]] = {}
    for cam in cameras:
        off = cam.offset_s if cam.offset_s is not None else (offsets or {}).get(cam.name, 0.0)
        res = pair_nearest(stamps[cam.topic], lidar, cfg.slop_s, off)
        stats.pairs[cam.name] = len(res)
        stats.unmatched_images[cam.name] = res.unmatched_cam
        stats.unmatched_scans[cam.name] = res.unmatched_lidar
        stats.max_dt_ms[cam.name] = float(np.abs(res.dt_ns).max() / 1e6) if len(res) else 0.0
        for ci, li in zip(res.cam_index.tolist(), res.lidar_index.tolist(), strict=True):
            per_scan.setdefault(li, {})[cam.name] = ci
    stats.scans_without_image = int(lidar.size - len(per_scan))
    order = sorted(per_scan, key=lambda i: (int(lidar[i]), i))
    order = order[::cfg.stride]
    if cfg.max_frames:
        order = order[:cfg.max_frames]
    stats.planned_frames = len(order)
    if not per_scan:
        counts = ', '.join(f'{c.topic}: {stamps[c.topic].size}' for c in cameras)
        raise TopicError(
            f'{bag.path}: no image is within {cfg.slop_s} s of a scan on {cloud} '
            f'({lidar.size} scans; images {counts}); check the topics, raise frames.slop_s or '
            'set frames.time_offsets_s'
        )
    return FramePlan(cloud, cameras, order, [int(lidar[i]) for i in order],
                     [per_scan[i] for i in order], scan)


# ---------------------------------------------------------------------------- calibration
def _frame_id(msg: Any) -> str:
    return str(getattr(getattr(msg, 'header', None), 'frame_id', '') or '')


def resolve_calibration(bag: BagSource, cfg: FramesConfig, plan: FramePlan, stats: FrameStats,
                        lidar_frame: str) -> dict[str, CameraCalibration]:
    """Calibration of every planned camera (calibration file, else CameraInfo + /tf_static)."""
    out: dict[str, CameraCalibration] = {}
    if cfg.calibration_file:
        from dsseg_core.calibration import load_calibration_yaml

        rig: RigCalibration = load_calibration_yaml(cfg.calibration_file)
        for cam in plan.cameras:
            calib = rig.cameras.get(cam.name)
            if calib is None:
                info_msg = (bag.first_message(cam.info_topic, plan.scan) if cam.info_topic
                            else None)
                fid = _frame_id(info_msg) if info_msg is not None else ''
                calib = rig.by_frame_id(fid) if fid else None
            if calib is None:
                raise CalibrationError(
                    f'{cfg.calibration_file}: no camera {cam.name!r} (image topic {cam.topic}); '
                    f'cameras in the file: {", ".join(rig.names) or "(none)"}; rename the entry '
                    'or set frames.camera_names'
                )
            if cam.offset_s is not None:
                calib = dataclasses.replace(calib, time_offset_s=cam.offset_s)
            out[cam.name] = calib
            stats.calibration_sources[cam.name] = f'file {cfg.calibration_file}'
        stats.calibration_source = f'calibration file {cfg.calibration_file}'
        return out

    from dsseg_core.msgs.camera_info import camera_model_from_camera_info
    from dsseg_core.msgs.tf import TransformTree

    tree = TransformTree()
    tf_topic = cfg.tf_static_topic
    if tf_topic not in bag.topics:
        raise CalibrationError(
            f'{bag.path}: no {tf_topic} topic, so the LiDAR → camera extrinsics are unknown; '
            'give a calibration YAML with frames.calibration_file (--config) or record '
            '/tf_static'
        )
    for msg in bag.all_messages(tf_topic, plan.scan):
        tree.add(msg, static=True)
    for cam in plan.cameras:
        if cam.info_topic is None:
            raise CalibrationError(
                f'{bag.path}: no CameraInfo topic found for image topic {cam.topic}; set '
                'frames.camera_info_topics or give frames.calibration_file'
            )
        info = _ros2_camera_info(bag.first_message(cam.info_topic, plan.scan))
        try:
            model = camera_model_from_camera_info(info, name=cam.name)
        except DssegError as err:
            raise CalibrationError(f'{bag.path}: topic {cam.info_topic}: {err}') from err
        model.name = cam.name
        cam_frame = model.frame_id or _frame_id(info)
        try:
            cam_from_lidar = tree.lookup(cam_frame, lidar_frame)
        except DssegError as err:
            raise CalibrationError(
                f'{bag.path}: {tf_topic} has no transform from LiDAR frame {lidar_frame!r} to '
                f'camera frame {cam_frame!r} ({err}); give frames.calibration_file instead'
            ) from err
        offset = cam.offset_s if cam.offset_s is not None else 0.0
        out[cam.name] = CameraCalibration(model, np.asarray(cam_from_lidar, dtype=np.float64),
                                           offset)
        stats.calibration_sources[cam.name] = f'{cam.info_topic} + {tf_topic}'
    stats.calibration_source = f'CameraInfo + {tf_topic}'
    return out


def _ros2_camera_info(msg: Any) -> Any:
    """ROS 1 CameraInfo spells its matrices D, K, R, P: expose the ROS 2 (lower-case) names."""
    if hasattr(msg, 'k') or not hasattr(msg, 'K'):
        return msg
    from types import SimpleNamespace

    return SimpleNamespace(header=msg.header, height=msg.height, width=msg.width,
                           distortion_model=msg.distortion_model, d=msg.D, k=msg.K, r=msg.R,
                           p=msg.P, binning_x=msg.binning_x, binning_y=msg.binning_y,
                           roi=msg.roi)


# -------------------------------------------------------------------------------- decoding
def _decode_image(msg: Any, msgtype: str, topic: str, bag: BagSource) -> np.ndarray:
    from dsseg_core.msgs.image import compressed_to_numpy, image_to_rgb

    try:
        if msgtype == 'sensor_msgs/msg/CompressedImage':
            img = compressed_to_numpy(msg)
        else:
            img = image_to_rgb(msg)
    except DssegError as err:
        raise MessageError(f'{bag.path}: topic {topic}: {err}') from err
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise MessageError(f'{bag.path}: topic {topic}: decoded image is {img.shape} '
                           f'{img.dtype}, not an RGB picture (depth image?); choose a colour '
                           'or grey camera topic in frames.image_topics')
    return img


def _decode_cloud(msg: Any, stamp: int, topic: str, bag: BagSource) -> PointCloud:
    from dsseg_core.msgs.pointcloud import cloud_to_points

    try:
        arr = cloud_to_points(msg)
    except DssegError as err:
        raise MessageError(f'{bag.path}: topic {topic}: {err}') from err
    return PointCloud(arr.xyz, arr.intensity, arr.ring, stamp, _frame_id(msg), arr.extra,
                      arr.dropped_invalid)


def iter_frames(bag_path: str | os.PathLike[str], cfg: FramesConfig | None = None,
                stats: FrameStats | None = None) -> Iterator[Frame]:
    """Stream the synchronised frames of a bag (see module docstring).

    ``stats`` (optional) is filled in place: topics, pairs and calibration before the first
    frame is yielded, frame/skip counts as frames are produced. A frame whose cloud has fewer
    than ``min_points`` valid points is skipped and counted; if every frame is skipped a
    :class:`MessageError` is raised.
    """
    cfg = cfg or FramesConfig()
    stats = stats if stats is not None else FrameStats()
    source = str(bag_path)
    with open_bag(bag_path) as bag:
        offsets = None
        if cfg.calibration_file:
            from dsseg_core.calibration import load_calibration_yaml

            rig = load_calibration_yaml(cfg.calibration_file)
            offsets = {n: c.time_offset_s for n, c in rig.cameras.items()}
        plan = plan_frames(bag, cfg, stats, offsets)
        cam_by_topic = {c.topic: c for c in plan.cameras}
        topics = bag.topics
        wanted: dict[str, set[int]] = {plan.cloud_topic: set(plan.scan_index)}
        owner: dict[tuple[str, int], int] = {(plan.cloud_topic, s): k
                                             for k, s in enumerate(plan.scan_index)}
        for k, imgs in enumerate(plan.images):
            for cam in plan.cameras:
                if cam.name in imgs:
                    wanted.setdefault(cam.topic, set()).add(imgs[cam.name])
                    owner[(cam.topic, imgs[cam.name])] = k
        # Calibration before decoding (it needs the LiDAR frame id of the cloud topic).
        lidar_frame = bag.header_frame_id(plan.cloud_topic, plan.scan)
        calibs = resolve_calibration(bag, cfg, plan, stats, lidar_frame)
        if plan.scan is not None:  # free the cached bytes of messages no frame uses
            cache = plan.scan.cache
            for key in [k for k in cache if k[1] not in wanted.get(k[0], ())]:
                del cache[key]
        need = [1 + len(imgs) for imgs in plan.images]
        parts: dict[int, dict[str, Any]] = {}
        next_k = 0
        for topic, idx, stamp, msg in bag.indexed_messages(list(wanted), wanted, plan.scan):
            k = owner[(topic, idx)]
            slot = parts.setdefault(k, {})
            if topic == plan.cloud_topic:
                slot['__cloud__'] = _decode_cloud(msg, stamp, topic, bag)
            else:
                cam = cam_by_topic[topic]
                image = _decode_image(msg, topics[topic].msgtype, topic, bag)
                slot[cam.name] = (image, stamp, _frame_id(msg))
            need[k] -= 1
            while next_k < len(need) and need[next_k] == 0:
                ready = parts.pop(next_k)
                cloud: PointCloud = ready.pop('__cloud__')
                frame = _assemble(next_k, cloud, ready, plan, calibs, cfg, stats, source)
                next_k += 1
                if frame is not None:
                    yield frame
        if stats.frames == 0 and stats.skipped_clouds:
            raise MessageError(
                f'{source}: topic {plan.cloud_topic}: all {stats.skipped_clouds} clouds of the '
                f'selected frames were empty or all-NaN (fewer than {cfg.min_points} valid '
                'points); check the LiDAR driver or choose another cloud topic'
            )


def _assemble(k: int, cloud: PointCloud, images: dict[str, Any], plan: FramePlan,
              calibs: dict[str, CameraCalibration], cfg: FramesConfig, stats: FrameStats,
              source: str) -> Frame | None:
    stats.dropped_invalid_points += cloud.dropped_invalid
    if len(cloud) < cfg.min_points:
        stats.skipped_clouds += 1
        log.warning('%s: %s: scan at %d ns has %d valid points (%d NaN/inf); frame skipped',
                    source, plan.cloud_topic, cloud.stamp_ns, len(cloud), cloud.dropped_invalid)
        return None
    cams: dict[str, CameraFrame] = {}
    for cam in plan.cameras:
        if cam.name not in images:
            continue
        image, stamp, frame_id = images[cam.name]
        calib = calibs[cam.name]
        model = calib.camera
        if (image.shape[1], image.shape[0]) != (model.width, model.height):
            raise CalibrationError(
                f'{source}: topic {cam.topic}: image is {image.shape[1]}x{image.shape[0]} but '
                f'the calibration ({stats.calibration_sources.get(cam.name, "?")}) is '
                f'{model.width}x{model.height}; fix the calibration or the camera topic'
            )
        cams[cam.name] = CameraFrame(cam.name, image, stamp, frame_id, calib, cam.topic)
    stats.frames += 1
    return Frame(k, cloud.stamp_ns, cloud, cams, source)


def frames_config_from(path: str | os.PathLike[str] | None = None, **overrides: Any
                       ) -> FramesConfig:
    """Load the ``frames`` section of a YAML / ROS parameter file plus overrides."""
    from dsseg_core.config import load_config

    return load_config(FramesConfig, Path(path) if path else None, section=SECTION,
                       overrides=overrides)

"""``cloud_labeller`` node: LiDAR cloud + camera masks -> labelled PointCloud2.

Subscribes (sensor-data QoS) ``cloud_labeller.cloud_topic`` (PointCloud2) and, for every camera
in ``cloud_labeller.cameras``, its mask (mono8/mono16 class ids), confidence (32FC1/mono8,
optional) and CameraInfo. Cloud and masks are paired by an approximate-time synchronizer
(``slop_s``, ``sync_queue_size``; dropped messages counted). Each matched set goes through a
drop-oldest queue to a worker thread that projects the points into every camera and votes
(:func:`dsseg_core.points3d.transfer.transfer_labels`, confidence-weighted across cameras).

Publishes ``~/labelled_cloud`` (reliable, depth 5) with the LiDAR message's header and fields
``x, y, z`` float32 (offsets 0/4/8), ``intensity`` float32 (0 when the input has none),
``label`` UINT32 (class id; ``0xFFFFFFFF`` = unknown: no camera sees the point — the bit
pattern of int32 -1, as PCL's XYZRGBL ``label``), ``confidence`` float32 (0 when unknown)
and ``rgb`` (packed float32, palette colour; grey when unknown) for RViz. Points with NaN/inf
coordinates are removed (the output is unorganized).

Extrinsics ``T_cam_lidar``: the calibration YAML (camera names = YAML keys), or TF between
the cloud frame and the camera frame (CameraInfo ``frame_id``): ``/tf_static`` (transient
local) and ``/tf`` when ``tf2_msgs`` is importable (``tf2_ros`` buffer when that is), and/or
the ``/tf_static`` of a bag (``tf_static_bag``). Intrinsics come from the CameraInfo.
"""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from dsseg_core.errors import CalibrationError, ConfigError, DssegError, MessageError
from dsseg_core.nodes_config import UNKNOWN_LABEL, CloudLabellerConfig
from dsseg_core.palette import packed_class_colors
from dsseg_ros.conversions import (
    camera_model,
    cloud_arrays,
    cloud_msg,
    decode_confidence,
    decode_mask,
    stamp_ns,
)
from dsseg_ros.node_base import OUTPUT_DEPTH, SENSOR_QOS, DssegNode
from dsseg_ros.worker import DropOldestWorker

__all__ = ['CloudLabellerNode', 'LabelledCloud', 'label_cloud', 'main']


@dataclass
class LabelledCloud:
    """The columns of a labelled cloud (before packing into a PointCloud2)."""

    xyz: np.ndarray          # (N, 3) float32
    intensity: np.ndarray    # (N,) float32
    labels: np.ndarray       # (N,) int32, -1 unknown
    confidence: np.ndarray   # (N,) float32
    n_views: np.ndarray      # (N,) uint8

    def fields(self, num_classes: int | None = None) -> dict[str, np.ndarray]:
        """Columns for :func:`dsseg_ros.conversions.cloud_msg` (label as uint32, rgb packed)."""
        labels = self.labels.astype(np.int32, copy=False)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if labels.size else 0
        return {'xyz': self.xyz, 'intensity': self.intensity, 'label': labels.view(np.uint32),
                'confidence': self.confidence,
                'rgb': packed_class_colors(labels, max(num_classes, 0)).view(np.float32)}


def label_cloud(xyz: np.ndarray, intensity: np.ndarray | None, views: list[Any],
                min_depth: float = 0.5, min_confidence: float = 0.0,
                use_zbuffer: bool = True) -> LabelledCloud:
    """Label points from camera views (``CameraView`` list) -- the node's computation, ROS-free.

    ``min_confidence`` drops votes of pixels whose confidence is lower.
    """
    from dsseg_core.points3d.transfer import transfer_labels

    if min_confidence > 0.0:
        for view in views:
            if view.confidence is not None:
                ids = view.class_ids.copy()
                ignore = 65535 if ids.dtype == np.uint16 else 255
                ids[view.confidence < min_confidence] = ignore
                view.class_ids = ids
    result = transfer_labels(xyz, views, min_depth=min_depth, use_zbuffer=use_zbuffer)
    if intensity is None:
        intensity = np.zeros(xyz.shape[0], np.float32)
    return LabelledCloud(xyz, intensity.astype(np.float32, copy=False), result.labels,
                         result.confidence, result.n_views)


class _Extrinsics:
    """T_cam_lidar by camera from a calibration YAML and/or transforms (TF, bag /tf_static)."""

    def __init__(self, node: CloudLabellerNode, cfg: CloudLabellerConfig) -> None:
        self.node = node
        self.rig = None
        self.tree = None
        self.tf_buffer = None
        self._tf_listener = None
        self.source = 'none'
        mode = cfg.extrinsics
        if mode == 'auto':
            mode = 'yaml' if cfg.calibration_file else 'tf'
        if mode == 'yaml':
            if not cfg.calibration_file:
                raise ConfigError(f'{node.get_name()}: cloud_labeller.extrinsics is yaml but '
                                  'cloud_labeller.calibration_file is empty')
            from dsseg_core.calibration import load_calibration_yaml

            self.rig = load_calibration_yaml(cfg.calibration_file)
            missing = [n for n in cfg.cameras if n not in self.rig]
            if missing:
                raise ConfigError(
                    f'{cfg.calibration_file}: no calibration for camera(s) '
                    f'{", ".join(missing)} (calibrated: {", ".join(self.rig.names)}); '
                    'name the cloud_labeller.cameras entries like the YAML cameras')
            self.source = f'yaml:{cfg.calibration_file}'
            return
        from dsseg_core.msgs.tf import TransformTree

        self.tree = TransformTree()
        sources = []
        if cfg.tf_static_bag:
            n = self.load_bag(cfg.tf_static_bag)
            sources.append(f'bag:{cfg.tf_static_bag} ({n} transforms)')
        if importlib.util.find_spec('tf2_ros') is not None:
            import tf2_ros

            self.tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self.tf_buffer, node)
            sources.append('tf2_ros')
        elif importlib.util.find_spec('tf2_msgs') is not None:
            from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
            from tf2_msgs.msg import TFMessage

            latched = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                 reliability=ReliabilityPolicy.RELIABLE)
            node.create_subscription(TFMessage, '/tf_static',
                                     lambda m: self.add(m.transforms, True), latched)
            node.create_subscription(TFMessage, '/tf', lambda m: self.add(m.transforms, False),
                                     100)
            sources.append('/tf_static + /tf')
        elif not cfg.tf_static_bag:
            node.get_logger().warning(
                'tf2_msgs is not installed: /tf_static cannot be received; set '
                'cloud_labeller.calibration_file or cloud_labeller.tf_static_bag')
        self.source = 'tf:' + ', '.join(sources) if sources else 'tf:(no source)'

    def load_bag(self, path: str) -> int:
        from dsseg_core.bag.reader import open_bag

        count = 0
        with open_bag(path) as bag:
            topics = [t for t, i in bag.topics.items()
                      if i.msgtype == 'tf2_msgs/msg/TFMessage' and t.endswith('tf_static')]
            if not topics:
                raise ConfigError(f'{path}: the bag has no /tf_static topic '
                                  '(cloud_labeller.tf_static_bag)')
            for _topic, _stamp, msg in bag.messages(topics):
                self.add(msg.transforms, True)
                count += len(msg.transforms)
        return count

    def add(self, transforms: Any, static: bool) -> None:
        for t in transforms:
            self.tree.add(t, static=static)

    def lookup(self, camera: str, camera_frame: str, lidar_frame: str, stamp: int) -> np.ndarray:
        """T_cam_lidar (4x4) or CalibrationError.

        Order: the calibration YAML; else the transforms received or read from the bag; else
        the tf2_ros buffer (when tf2_ros is importable).
        """
        if self.rig is not None:
            return self.rig[camera].T_cam_lidar
        problems = []
        try:
            return self.tree.lookup(camera_frame, lidar_frame, stamp)
        except DssegError as err:
            problems.append(str(err))
        if self.tf_buffer is not None:
            from rclpy.time import Time

            from dsseg_core.calibration import quat_xyzw_to_matrix

            try:
                t = self.tf_buffer.lookup_transform(camera_frame, lidar_frame,
                                                    Time(nanoseconds=stamp))
            except Exception as err:  # noqa: BLE001 - tf2 raises its own exception types
                problems.append(f'tf2: {err}')
            else:
                q, p = t.transform.rotation, t.transform.translation
                t_cam_lidar = np.eye(4)
                t_cam_lidar[:3, :3] = quat_xyzw_to_matrix([q.x, q.y, q.z, q.w])
                t_cam_lidar[:3, 3] = [p.x, p.y, p.z]
                return t_cam_lidar
        raise CalibrationError(
            f'no transform {lidar_frame} -> {camera_frame} ({"; ".join(problems)}); publish '
            '/tf_static, set cloud_labeller.tf_static_bag or cloud_labeller.calibration_file')

    def close(self) -> None:
        self._tf_listener = None


class CloudLabellerNode(DssegNode[CloudLabellerConfig]):
    """See the module docstring."""

    def __init__(self, node_name: str = 'cloud_labeller', *,
                 config: CloudLabellerConfig | dict | None = None, num_classes: int | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, CloudLabellerConfig, 'cloud_labeller', config=config,
                         **node_kwargs)
        from dsseg_core.sync import ApproximateTimeSynchronizer

        cfg = self.config
        self.num_classes = num_classes
        self.camera_names = list(cfg.cameras)
        self.extrinsics = _Extrinsics(self, cfg)
        self._infos: dict[str, CameraInfo] = {}
        self._info_lock = threading.Lock()
        self.published = 0
        self._last_cloud_stamp = -(2**62)
        # Sync inputs: 0 = cloud, then per camera its mask (and confidence when configured).
        self._slots: list[tuple[str, str]] = [('cloud', '')]
        for name, cam in cfg.cameras.items():
            self._slots.append(('mask', name))
            if cam.confidence_topic:
                self._slots.append(('confidence', name))
        self.sync = ApproximateTimeSynchronizer(
            len(self._slots), self._on_matched, queue_size=cfg.sync_queue_size,
            slop_s=cfg.slop_s)
        self.pub = self.create_publisher(PointCloud2, '~/labelled_cloud', OUTPUT_DEPTH)
        self.worker: DropOldestWorker = self.add_worker(DropOldestWorker(
            self._process, maxlen=cfg.queue_size, name='label', on_error=self._on_error))
        self._subs = [self.create_subscription(
            PointCloud2, cfg.cloud_topic, lambda m: self._offer(0, m), SENSOR_QOS)]
        for index, (kind, name) in enumerate(self._slots):
            if kind == 'cloud':
                continue
            cam = cfg.cameras[name]
            topic = cam.mask_topic if kind == 'mask' else cam.confidence_topic
            self._subs.append(self.create_subscription(
                Image, topic, lambda m, i=index: self._offer(i, m), SENSOR_QOS))
        for name, cam in cfg.cameras.items():
            self._subs.append(self.create_subscription(
                CameraInfo, cam.camera_info_topic, lambda m, n=name: self._on_info(n, m),
                SENSOR_QOS))
        self.get_logger().info(
            f'labelling {self.resolve_topic_name(cfg.cloud_topic)} with cameras '
            f'{", ".join(self.camera_names)} (extrinsics from {self.extrinsics.source}) -> '
            f'{self.resolve_topic_name("~/labelled_cloud")}')

    def on_config_change(self, config: CloudLabellerConfig, changed: set[str]) -> None:
        if 'slop_s' in changed:
            self.sync.slop_ns = int(round(config.slop_s * 1e9))

    # -- callbacks -----------------------------------------------------------------------
    def _on_info(self, name: str, msg: CameraInfo) -> None:
        with self._info_lock:
            self._infos[name] = msg

    def _offer(self, index: int, msg: Any) -> None:
        stamp = stamp_ns(msg.header)
        if index == 0:
            if stamp < self._last_cloud_stamp - 1_000_000_000:
                # Time went back (a looping bag, a restarted driver): start pairing afresh.
                self.get_logger().info('cloud stamps jumped back in time; synchronizer reset')
                self.sync.reset()
            self._last_cloud_stamp = stamp
        self.sync.add(index, msg, stamp)

    def _on_matched(self, msgs: list[Any]) -> None:
        self.worker.submit(msgs)

    def _on_error(self, msgs: Any, exc: BaseException) -> None:
        topic = self.resolve_topic_name(self.config.cloud_topic)
        if isinstance(exc, MessageError):
            kind = 'empty_cloud' if 'no valid points' in str(exc) else 'bad_message'
            self.warn(kind, f'{topic}: {exc}')
        elif isinstance(exc, CalibrationError):
            self.warn('no_extrinsics', f'{topic}: {exc}')
        else:
            self.warn(f'error.{type(exc).__name__}',
                      f'{topic}: labelling failed: {type(exc).__name__}: {exc}')

    # -- worker thread -------------------------------------------------------------------
    def build_views(self, msgs: list[Any]) -> list[Any]:
        """CameraViews of a matched set (cameras without CameraInfo/extrinsics skipped)."""
        from dsseg_core.calibration import CameraCalibration
        from dsseg_core.points3d.transfer import CameraView

        cfg = self.config
        cloud = msgs[0]
        lidar_frame = cloud.header.frame_id
        masks: dict[str, Any] = {}
        confs: dict[str, Any] = {}
        for (kind, name), msg in zip(self._slots, msgs, strict=True):
            if kind == 'mask':
                masks[name] = msg
            elif kind == 'confidence':
                confs[name] = msg
        views = []
        for name, mask_msg in masks.items():
            cam_cfg = cfg.cameras[name]
            with self._info_lock:
                info = self._infos.get(name)
            if info is None:
                self.warn(f'no_camera_info.{name}',
                          f'camera {name}: no CameraInfo received on '
                          f'{self.resolve_topic_name(cam_cfg.camera_info_topic)}; this camera '
                          'is skipped until one arrives')
                continue
            mask = decode_mask(mask_msg, cam_cfg.mask_topic)
            conf = None
            if name in confs:
                conf = decode_confidence(confs[name], cam_cfg.confidence_topic)
                if conf.shape != mask.shape:
                    raise MessageError(f'{cam_cfg.confidence_topic}: confidence {conf.shape} '
                                       f'and mask {mask.shape} sizes differ')
            frame = info.header.frame_id or mask_msg.header.frame_id
            model = camera_model(info, frame_id=frame)
            if (model.height, model.width) != mask.shape:
                if (model.height, model.width) == (0, 0):
                    raise MessageError(f'{cam_cfg.camera_info_topic}: CameraInfo has no size')
                model = model.resized(mask.shape[1], mask.shape[0])
            t_cam_lidar = self.extrinsics.lookup(name, frame, lidar_frame,
                                                 stamp_ns(cloud.header))
            views.append(CameraView(CameraCalibration(model, t_cam_lidar), mask, conf))
        return views

    def _process(self, msgs: list[Any]) -> None:
        cfg = self.config
        cloud = msgs[0]
        arrays = cloud_arrays(cloud, self.resolve_topic_name(cfg.cloud_topic))
        views = self.build_views(msgs)
        if not views:
            return  # already warned: no camera usable
        labelled = label_cloud(arrays.xyz, arrays.intensity, views, cfg.min_depth,
                               cfg.min_confidence, cfg.use_zbuffer)
        self.pub.publish(cloud_msg(labelled.fields(self.num_classes), cloud.header))
        self.published += 1

    def diagnostic_values(self) -> dict[str, str]:
        values = super().diagnostic_values()
        values['published'] = str(self.published)
        values['sync.matched'] = str(self.sync.matched)
        for (kind, name), drops, pending in zip(self._slots, self.sync.drops,
                                                self.sync.pending(), strict=True):
            key = f'sync.{kind}' + (f'.{name}' if name else '')
            values[f'{key}.dropped'] = str(drops)
            values[f'{key}.pending'] = str(pending)
        values['extrinsics'] = self.extrinsics.source
        return values

    def on_close(self) -> None:
        self.extrinsics.close()


__all__ += ['UNKNOWN_LABEL']


def main(args: list[str] | None = None) -> int:
    """Console script ``cloud_labeller``."""
    from dsseg_ros.run import spin_nodes

    return spin_nodes(lambda ctx: [CloudLabellerNode(context=ctx)], args,
                      name='cloud_labeller')


if __name__ == '__main__':
    sys.exit(main())

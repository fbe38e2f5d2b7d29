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

With ``student.path`` set (a ``dsseg train-3d`` run dir or exported ``.onnx``, loaded at
start), the 3D student labels the points no camera sees (``student.mode: fill_unknown``; their
``confidence`` is the student's) or every point (``replace``: clouds are labelled as they
arrive, without waiting for masks). With ``student.without_cameras`` the student labels
clouds alone while no mask has arrived for ``student.camera_timeout_s`` or no camera is
usable. The student runs in the worker thread, like the projection.

Cloud, mask and confidence subscriptions are raw: the synchronizer pairs the serialized bytes
by their header stamp (:func:`dsseg_core.msgs.cdr.header_stamp_ns`) and only the worker decodes
the matched set (rosbags CDR, zero-copy), so the executor thread never converts a multi-MB
message.

Extrinsics ``T_cam_lidar``: the calibration YAML (camera names = YAML keys), or TF between
the cloud frame and the camera frame (CameraInfo ``frame_id``): ``/tf_static`` (transient
local) and ``/tf`` when ``tf2_msgs`` is importable (``tf2_ros`` buffer when that is), and/or
the ``/tf_static`` of a bag (``tf_static_bag``). Intrinsics come from the CameraInfo.
"""

from __future__ import annotations

import array
import functools
import importlib
import sys
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from dsseg_core.errors import CalibrationError, ConfigError, DssegError, MessageError
from dsseg_core.jit import jit_enabled
from dsseg_core.msgs.cdr import deserialize, header_stamp_ns
from dsseg_core.msgs.pointcloud_kernels import pack_labelled_points
from dsseg_core.nodes_config import UNKNOWN_LABEL, CloudLabellerConfig
from dsseg_core.palette import UNKNOWN_COLOR, packed_class_colors
from dsseg_ros.conversions import (
    camera_model,
    cloud_arrays,
    copy_header,
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
    student: np.ndarray | None = None  # (N,) bool: labelled by the 3D student (None: no student)

    def fields(self, num_classes: int | None = None) -> dict[str, np.ndarray]:
        """Columns for :func:`dsseg_ros.conversions.cloud_msg` (label as uint32, rgb packed)."""
        labels = self.labels.astype(np.int32, copy=False)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if labels.size else 0
        return {'xyz': self.xyz, 'intensity': self.intensity, 'label': labels.view(np.uint32),
                'confidence': self.confidence,
                'rgb': packed_class_colors(labels, max(num_classes, 0)).view(np.float32)}

    def to_msg(self, header: Any, num_classes: int | None = None,
               buffer: array.array | None = None) -> PointCloud2:
        """The labelled PointCloud2 (the layout of :meth:`fields` through ``cloud_msg``).

        Written in one pass into the message's ``array('B')`` buffer: the colour is one
        table lookup on the uint32 label bits (``-1`` and ids >= ``num_classes`` hit the
        unknown entry), the seven 4-byte columns are stacked straight into the buffer (one
        numba kernel, :func:`dsseg_core.msgs.pointcloud_kernels.pack_labelled_points`, unless
        ``DSSEG_JIT=0``; same bytes). ``buffer``: an ``array('B')`` the caller owns, resized
        and used as the message's data (no fresh multi-MB allocation, whose page faults cost
        more than the packing); only for a message that is published (serialized) before the
        buffer is used again.
        """
        n = self.xyz.shape[0]
        labels = np.ascontiguousarray(self.labels, np.int32).reshape(n)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if n else 0
        num_classes = max(int(num_classes), 0)
        bits = labels.view(np.uint32)
        xyz = np.ascontiguousarray(self.xyz, np.float32).reshape(n, 3).view(np.uint32)
        intensity = np.ascontiguousarray(self.intensity, np.float32).reshape(n)
        confidence = np.ascontiguousarray(self.confidence, np.float32).reshape(n)
        size = _POINT_STEP * n
        if buffer is None:
            buf = array.array('B', [0]) * size
        else:
            buf = buffer
            if len(buf) < size:
                buf.frombytes(bytes(size - len(buf)))
            elif len(buf) > size:
                del buf[size:]
        table = np.frombuffer(buf, np.uint32).reshape(n, _POINT_STEP // 4)
        if jit_enabled():
            dense = pack_labelled_points(xyz, intensity.view(np.uint32), bits,
                                         confidence.view(np.uint32), _rgb_table(num_classes),
                                         table)
        else:
            rgb = _rgb_table(num_classes).take(np.minimum(bits, np.uint32(num_classes)))
            np.stack((xyz[:, 0], xyz[:, 1], xyz[:, 2], intensity.view(np.uint32), bits,
                      confidence.view(np.uint32), rgb), axis=1, out=table)
            dense = np.isfinite(self.xyz).all()
        msg = PointCloud2(check_fields=True, header=copy_header(header), height=1, width=n,
                          is_bigendian=sys.byteorder == 'big', point_step=_POINT_STEP,
                          row_step=_POINT_STEP * n, is_dense=bool(dense))
        msg.fields = [PointField(name=name, offset=4 * i, datatype=datatype, count=1)
                      for i, (name, datatype) in enumerate(_FIELDS)]
        msg.data = buf  # check_fields=True: rclpy takes the array('B') without a copy
        del table
        return msg


_FIELDS = (('x', PointField.FLOAT32), ('y', PointField.FLOAT32), ('z', PointField.FLOAT32),
           ('intensity', PointField.FLOAT32), ('label', PointField.UINT32),
           ('confidence', PointField.FLOAT32), ('rgb', PointField.FLOAT32))
_POINT_STEP = 4 * len(_FIELDS)


@functools.lru_cache(maxsize=8)
def _rgb_table(num_classes: int) -> np.ndarray:
    """``(num_classes + 1,) uint32`` packed colours; the last entry is the unknown colour."""
    table = np.empty(num_classes + 1, np.uint32)
    if num_classes:
        table[:num_classes] = packed_class_colors(np.arange(num_classes), num_classes)
    r, g, b = (int(c) for c in UNKNOWN_COLOR)
    table[num_classes] = (r << 16) | (g << 8) | b
    table.setflags(write=False)
    return table


STUDENT_MODES = ('fill_unknown', 'replace')


def label_cloud(xyz: np.ndarray, intensity: np.ndarray | None, views: list[Any],
                min_depth: float = 0.5, min_confidence: float = 0.0,
                use_zbuffer: bool = True, *, student: Any | None = None,
                student_mode: str = 'fill_unknown',
                ring: np.ndarray | None = None) -> LabelledCloud:
    """Label points from camera views (``CameraView`` list) -- the node's computation, ROS-free.

    ``min_confidence`` drops votes of pixels whose confidence is lower. ``student`` (a
    :func:`dsseg_core.points3d.student.load_student` predictor) labels the whole scan
    (``predict(xyz, intensity, ring)``); with ``student_mode='fill_unknown'`` its labels and
    confidences replace those of the points no camera voted for, with ``'replace'`` (or no
    views) they are the result (the cameras are not projected).
    """
    if student is not None:
        if student_mode not in STUDENT_MODES:
            raise ConfigError(f'student mode {student_mode!r} is not one of '
                              f'{", ".join(STUDENT_MODES)} (cloud_labeller.student.mode)')
        if student_mode == 'replace' or not views:
            labels, conf = student.predict(xyz, intensity, ring)
            n = xyz.shape[0]
            inten = (np.zeros(n, np.float32) if intensity is None
                     else intensity.astype(np.float32, copy=False))
            return LabelledCloud(xyz, inten, labels.astype(np.int32, copy=False),
                                 conf.astype(np.float32, copy=False), np.zeros(n, np.uint8),
                                 labels >= 0)
    out = _camera_labels(xyz, intensity, views, min_depth, min_confidence, use_zbuffer)
    if student is not None:
        unknown = out.labels < 0
        out.student = np.zeros(out.labels.shape[0], bool)
        if unknown.any():
            s_labels, s_conf = student.predict(xyz, intensity, ring)
            labels = out.labels.copy()
            conf = out.confidence.copy()
            labels[unknown] = s_labels[unknown]
            conf[unknown] = s_conf[unknown]
            out.student = unknown & (labels >= 0)
            out.labels, out.confidence = labels, conf
    return out


def _camera_labels(xyz: np.ndarray, intensity: np.ndarray | None, views: list[Any],
                   min_depth: float, min_confidence: float,
                   use_zbuffer: bool) -> LabelledCloud:
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


def load_cloud_student(path: str, device: str = 'cpu', node_name: str = 'cloud_labeller'
                       ) -> Any:
    """The 3D student of ``cloud_labeller.student.path``, or a ConfigError naming it."""
    from pathlib import Path

    where = f'{node_name}: cloud_labeller.student.path {path!r}'
    fix = ('; set it to a dsseg train-3d run directory or an exported student .onnx, or to '
           "'' to leave points no camera sees unknown")
    if not Path(path).exists():
        raise ConfigError(f'{where} does not exist{fix}')
    try:
        from dsseg_core.points3d.student import load_student

        return load_student(path, device=device)
    except ImportError as err:
        raise ConfigError(f'{where}: the 3D student needs torch ({err}); pip install torch '
                          'or use an exported .onnx') from err
    except DssegError as err:
        raise ConfigError(f'{where}: cannot load the 3D student: {err}{fix}') from err
    except (OSError, RuntimeError, ValueError) as err:
        raise ConfigError(f'{where} (device {device!r}): cannot load the 3D student: '
                          f'{type(err).__name__}: {err}{fix}') from err


def warm_up_kernels() -> float:
    """Label a 64-point cloud with two tiny cameras (uint8 masks, with and without
    confidence) and pack it, so that the compiled kernels are loaded (or, on a machine's very
    first run, compiled: ~40 s) before the first real cloud. Returns the seconds it took."""
    from dsseg_core.calibration import CameraCalibration, CameraModel
    from dsseg_core.points3d.transfer import CameraView

    started = time.monotonic()
    rng = np.random.default_rng(0)
    xyz = np.column_stack([rng.uniform(2.0, 10.0, 64), rng.uniform(-1.0, 1.0, (64, 2))])
    xyz = xyz.astype(np.float32)
    T = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 1.0]])
    calib = CameraCalibration(CameraModel(8, 6, np.array([[4.0, 0, 4], [0, 4.0, 3], [0, 0, 1]])),
                              T)
    mask = rng.integers(0, 3, (6, 8)).astype(np.uint8)
    views = [CameraView(calib, mask, np.full((6, 8), 0.5, np.float32)), CameraView(calib, mask)]
    labelled = label_cloud(xyz, np.ones(64, np.float32), views)
    labelled.to_msg(SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id='w'), 3,
                    array.array('B'))
    return time.monotonic() - started


@dataclass
class _StudentOnly:
    """A worker item: one cloud labelled by the student alone (no synchronized masks)."""

    cloud: Any


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
        self.student = None
        self.student_published = 0
        if cfg.student.path:
            started = time.monotonic()
            self.student = load_cloud_student(cfg.student.path, cfg.student.device,
                                              self.get_name())
            if self.num_classes is None:
                self.num_classes = self.student.num_classes
            elif self.num_classes != self.student.num_classes:
                self.get_logger().warning(
                    f'the 3D student {cfg.student.path} has {self.student.num_classes} classes '
                    f'but the node was given num_classes={self.num_classes}: the class ids of '
                    'cameras and student must mean the same classes')
            self.get_logger().info(
                f'3D student {cfg.student.path} ({self.student.num_classes} classes, '
                f'{cfg.student.device}) loaded in {time.monotonic() - started:.1f} s; mode '
                f'{cfg.student.mode}, without_cameras {cfg.student.without_cameras}')
        self._last_mask_time = time.monotonic()
        self.extrinsics = _Extrinsics(self, cfg)
        self._infos: dict[str, CameraInfo] = {}
        self._info_lock = threading.Lock()
        self.published = 0
        self._out_buffer = array.array('B')  # reused data of ~/labelled_cloud (worker thread)
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
        self._slot_topics = [self.resolve_topic_name(cfg.cloud_topic)]  # for messages
        self._subs = [self.create_subscription(
            PointCloud2, cfg.cloud_topic, lambda m: self._offer(0, m), SENSOR_QOS, raw=True)]
        for index, (kind, name) in enumerate(self._slots):
            if kind == 'cloud':
                continue
            cam = cfg.cameras[name]
            topic = cam.mask_topic if kind == 'mask' else cam.confidence_topic
            self._slot_topics.append(self.resolve_topic_name(topic))
            self._subs.append(self.create_subscription(
                Image, topic, lambda m, i=index: self._offer(i, m), SENSOR_QOS, raw=True))
        for name, cam in cfg.cameras.items():
            self._subs.append(self.create_subscription(
                CameraInfo, cam.camera_info_topic, lambda m, n=name: self._on_info(n, m),
                SENSOR_QOS))
        if jit_enabled():  # load/compile the kernels now, not on the first cloud
            threading.Thread(target=self._warm_up, name='kernel-warm-up', daemon=True).start()
        self.get_logger().info(
            f'labelling {self.resolve_topic_name(cfg.cloud_topic)} with cameras '
            f'{", ".join(self.camera_names)} (extrinsics from {self.extrinsics.source}) -> '
            f'{self.resolve_topic_name("~/labelled_cloud")}')

    def _warm_up(self) -> None:
        try:
            seconds = warm_up_kernels()
        except Exception as err:  # noqa: BLE001 - the real clouds will report real problems
            self.get_logger().warning(f'kernel warm-up failed: {type(err).__name__}: {err}')
            return
        if seconds > 2.0:
            self.get_logger().info(f'compiled the labelling kernels in {seconds:.0f} s '
                                   '(cached for the next start)')

    def on_config_change(self, config: CloudLabellerConfig, changed: set[str]) -> None:
        if 'slop_s' in changed:
            self.sync.slop_ns = int(round(config.slop_s * 1e9))

    # -- callbacks -----------------------------------------------------------------------
    def _on_info(self, name: str, msg: CameraInfo) -> None:
        with self._info_lock:
            self._infos[name] = msg

    def _offer(self, index: int, msg: bytes | Any) -> None:
        """A cloud (index 0), mask or confidence: serialized bytes from the raw subscriptions
        (or a message object, e.g. from a tool calling this directly)."""
        if isinstance(msg, bytes):
            try:
                stamp = header_stamp_ns(msg, self._slot_topics[index])
            except MessageError as err:
                self.warn('bad_message', str(err))
                return
        else:
            stamp = stamp_ns(msg.header)
        if index == 0 and self.student is not None and self._student_alone():
            self.worker.submit(_StudentOnly(msg))
            return
        if index != 0:
            self._last_mask_time = time.monotonic()
            if self.student is not None and self.config.student.mode == 'replace':
                return  # masks are not used: do not let them pile up in the synchronizer
        if index == 0:
            if stamp < self._last_cloud_stamp - 1_000_000_000:
                # Time went back (a looping bag, a restarted driver): start pairing afresh.
                self.get_logger().info('cloud stamps jumped back in time; synchronizer reset')
                self.sync.reset()
            self._last_cloud_stamp = stamp
        self.sync.add(index, msg, stamp)

    def _student_alone(self) -> bool:
        """Whether a cloud arriving now is labelled by the student without masks."""
        student = self.config.student
        if student.mode == 'replace':
            return True
        return student.without_cameras and (
            time.monotonic() - self._last_mask_time > student.camera_timeout_s)

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

    def _decoded(self, index: int, msg: bytes | Any) -> Any:
        """The message of sync slot ``index`` decoded from its serialized bytes."""
        if not isinstance(msg, bytes):
            return msg
        msgtype = 'sensor_msgs/msg/PointCloud2' if index == 0 else 'sensor_msgs/msg/Image'
        return deserialize(msg, msgtype, self._slot_topics[index])

    def _process(self, msgs: list[Any] | _StudentOnly) -> None:
        cfg = self.config
        alone = isinstance(msgs, _StudentOnly)
        if alone:
            msgs = _StudentOnly(self._decoded(0, msgs.cloud))
        else:
            msgs = [self._decoded(i, m) for i, m in enumerate(msgs)]
        cloud = msgs.cloud if alone else msgs[0]
        arrays = cloud_arrays(cloud, self.resolve_topic_name(cfg.cloud_topic))
        views = [] if alone else self.build_views(msgs)
        student = self.student
        if not views:
            if student is None or not (alone or cfg.student.without_cameras):
                return  # already warned: no camera usable
            alone = True
        labelled = label_cloud(arrays.xyz, arrays.intensity, views, cfg.min_depth,
                               cfg.min_confidence, cfg.use_zbuffer, student=student,
                               student_mode=cfg.student.mode, ring=arrays.ring)
        # publish() serializes synchronously, so the buffer is free again for the next cloud.
        self.pub.publish(labelled.to_msg(cloud.header, self.num_classes, self._out_buffer))
        self.published += 1
        if alone:
            self.student_published += 1

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
        if self.student is not None:
            values['student'] = f'{self.config.student.path} ({self.config.student.mode})'
            values['student.published_alone'] = str(self.student_published)
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

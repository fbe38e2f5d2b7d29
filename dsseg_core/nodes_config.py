"""Configuration schemas of the on-car nodes (segmenter, cloud labeller, bag player, recorder).

ROS-free, so ``dsseg run`` and the nodes share them. In ``config/dsseg.yaml`` each schema is a
section under ``ros__parameters``; the nodes declare every leaf as a ROS parameter named with
dots (``segmenter.model.path``) and validate changes against the same schema
(:mod:`dsseg_ros.params`). Fields marked :func:`read_only` are fixed once the node runs
(topics, QoS depths): change them in the YAML and restart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from dsseg_core.config import StageConfig

__all__ = [
    'BagPlayerConfig',
    'CameraInputConfig',
    'CloudLabellerConfig',
    'ModelParams',
    'RecorderConfig',
    'RunConfig',
    'SegmenterNodeConfig',
    'StudentParams',
    'UNKNOWN_LABEL',
    'read_only',
    'shipped_config_path',
]

#: ``label`` value (uint32 field) of points that no camera sees: 0xFFFFFFFF, the bit pattern of
#: int32 ``-1`` (the "unknown" point label of dsseg_core).
UNKNOWN_LABEL = 0xFFFFFFFF

_RO = {'ros_read_only': True}


def read_only(description: str, **kwargs: Any) -> Any:
    """A field that cannot change while the node runs (becomes a read-only ROS parameter)."""
    return Field(description=description, json_schema_extra=_RO, **kwargs)


class ModelParams(StageConfig):
    """Which model the segmenter runs and how."""

    path: str = Field('', description='checkpoint run dir or .onnx file (required)')
    device: str = Field('cpu', description="torch device ('cpu', 'cuda', 'cuda:1') or ONNX "
                        'provider device')
    precision: Literal['fp32', 'fp16', 'bf16'] = Field(
        'fp32', description='inference precision (fp16/bf16 on GPU only)')
    window_size: int = Field(0, ge=0, description='sliding-window crop size in pixels '
                             '(0 = the model default)')
    window_stride: int = Field(0, ge=0, description='sliding-window stride in pixels '
                               '(0 = the model default)')
    short_side: int = Field(0, ge=0, description='resize the shorter image side to this '
                            'before inference (0 = the model default)')

    def predictor_overrides(self) -> dict[str, int]:
        """Keyword overrides for ``load_predictor`` (only the values that are set)."""
        out = {'window': self.window_size, 'stride': self.window_stride,
               'short_side': self.short_side}
        return {k: v for k, v in out.items() if v}


class SegmenterNodeConfig(StageConfig):
    """Section ``segmenter``: image -> class-id mask, overlay and confidence."""

    image_topic: str = read_only('input image topic (Image, or CompressedImage when '
                                 "transport is 'compressed')", default='~/input/image')
    camera_info_topic: str = read_only('input CameraInfo topic',
                                       default='~/input/camera_info')
    transport: Literal['raw', 'compressed'] = read_only(
        "'raw' subscribes sensor_msgs/Image, 'compressed' sensor_msgs/CompressedImage",
        default='raw')
    require_camera_info: bool = Field(
        True, description='drop images until a CameraInfo arrived (it is republished on '
        '~/camera_info with the mask header, for the cloud labeller)')
    model: ModelParams = Field(default_factory=ModelParams)
    publish_overlay: bool = Field(True, description='publish ~/overlay (rgb8)')
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0, description='class colour weight')
    publish_confidence: bool = Field(True, description='publish ~/confidence')
    confidence_encoding: Literal['32FC1', 'mono8'] = Field(
        '32FC1', description="'32FC1' (0..1) or 'mono8' (0..255)")
    queue_size: int = read_only('worker queue length (drop-oldest)', default=1, ge=1, le=100)
    diagnostics_period_s: float = Field(1.0, gt=0.0, description='/diagnostics period')
    warn_throttle_s: float = Field(5.0, ge=0.0, description='min seconds between repeats '
                                   'of one warning')


class CameraInputConfig(StageConfig):
    """One camera's segmenter outputs, as the cloud labeller subscribes them."""

    mask_topic: str = read_only('mono8/mono16 class-id mask topic', default='/segmenter/mask')
    confidence_topic: str = read_only("32FC1/mono8 confidence topic ('' = confidence 1)",
                                      default='/segmenter/confidence')
    camera_info_topic: str = read_only('CameraInfo matching the mask',
                                       default='/segmenter/camera_info')


class StudentParams(StageConfig):
    """The cloud labeller's 3D student (``dsseg train-3d``): labels for points no camera sees."""

    path: str = read_only("train-3d run dir or exported .onnx ('' = off: points no camera "
                          'sees stay unknown)', default='')
    device: str = read_only("torch device of the student ('cpu', 'cuda', 'cuda:1'; .onnx "
                            'runs on the CPU)', default='cpu')
    mode: Literal['fill_unknown', 'replace'] = Field(
        'fill_unknown', description="'fill_unknown': camera-voted labels where a camera sees "
        "the point, the student's elsewhere; 'replace': the student labels every point (clouds "
        'are labelled as they arrive, masks are not waited for)')
    without_cameras: bool = Field(
        False, description='label clouds with the student alone while no camera mask '
        'arrives (camera_timeout_s) or no camera is usable (no CameraInfo)')
    camera_timeout_s: float = Field(
        1.0, gt=0.0, description='seconds (wall clock) without any mask after which '
        'without_cameras starts labelling clouds with the student alone')


class CloudLabellerConfig(StageConfig):
    """Section ``cloud_labeller``: PointCloud2 + camera masks -> labelled PointCloud2."""

    cloud_topic: str = read_only('input PointCloud2 topic', default='~/input/points')
    cameras: dict[str, CameraInputConfig] = read_only(
        'cameras by name (the name is the calibration YAML key)',
        default_factory=lambda: {'camera': CameraInputConfig()})
    slop_s: float = Field(0.05, ge=0.0, description='max stamp difference cloud <-> mask')
    sync_queue_size: int = read_only('messages kept per input by the synchronizer',
                                     default=10, ge=1, le=1000)
    extrinsics: Literal['auto', 'yaml', 'tf'] = read_only(
        "'yaml': calibration_file; 'tf': /tf_static (+ /tf); 'auto': yaml when "
        'calibration_file is set, else tf', default='auto')
    calibration_file: str = read_only('rig calibration YAML (docs/calibration.md)', default='')
    tf_static_bag: str = read_only('bag whose /tf_static is loaded at start (replay without '
                                   'tf2_msgs, or a calibration bag)', default='')
    min_depth: float = Field(0.5, ge=0.0, description='points nearer the camera are unseen')
    use_zbuffer: bool = Field(True, description='occlusion test: points hidden behind nearer '
                              'ones take no label (off = faster, labels bleed through)')
    min_confidence: float = Field(0.0, ge=0.0, le=1.0,
                                  description='votes below this confidence are ignored')
    student: StudentParams = Field(default_factory=StudentParams)
    queue_size: int = read_only('worker queue length (drop-oldest)', default=1, ge=1, le=100)
    diagnostics_period_s: float = Field(1.0, gt=0.0, description='/diagnostics period')
    warn_throttle_s: float = Field(5.0, ge=0.0, description='min seconds between repeats '
                                   'of one warning')

    @field_validator('cameras')
    @classmethod
    def _at_least_one(cls, value: dict[str, CameraInputConfig]) -> dict:
        if not value:
            raise ValueError('at least one camera is needed')
        return value


class BagPlayerConfig(StageConfig):
    """Section ``bag_player``: republish a bag with its original timing."""

    bag: str = read_only('rosbag2 folder / .mcap / .db3 or ROS 1 .bag', default='')
    rate: float = Field(1.0, gt=0.0, le=1000.0, description='playback speed factor')
    loop: bool = Field(False, description='start again at the end')
    start_offset_s: float = Field(0.0, ge=0.0, description='skip this much of the bag')
    topics: list[str] = read_only('topics to play (empty = all)', default_factory=list)
    publish_clock: bool = read_only('publish /clock (rosgraph_msgs/Clock) for use_sim_time',
                                    default=True)
    clock_rate_hz: float = Field(100.0, gt=0.0, le=10000.0, description='/clock rate')
    queue_depth: int = read_only('publisher history depth', default=10, ge=1, le=1000)
    exit_when_done: bool = Field(True, description='the console script exits at the end '
                                 'of the bag (when not looping)')


class RecorderConfig(StageConfig):
    """Section ``recorder``: write subscribed topics to a rosbag2 mcap bag (raw bytes)."""

    output: str = read_only('output bag folder', default='')
    topics: list[str] = read_only('topics to record', default_factory=lambda: [
        '/segmenter/mask', '/segmenter/overlay', '/cloud_labeller/labelled_cloud'])
    reliable: bool = read_only('subscribe reliable (else sensor-data best effort)',
                               default=True)


class RunConfig(StageConfig):
    """Section ``run``: which nodes ``dsseg run`` starts in one process."""

    segmenters: list[str] = Field(default_factory=lambda: ['segmenter'],
                                  description='segmenter node names (one per camera; each '
                                  'reads its own block of the YAML too)')
    cloud_labeller: bool = Field(True, description='start the cloud labeller')
    threads: int = Field(0, ge=0, description='executor threads (0 = automatic)')


def shipped_config_path(name: str) -> str | None:
    """Path of a file shipped in the package's ``config/`` (installed share dir or source tree).

    ``shipped_config_path('fastdds_shm.xml')``; None when neither location has it.
    """
    import importlib.util
    from pathlib import Path

    candidates = []
    if importlib.util.find_spec('ament_index_python') is not None:
        try:
            from ament_index_python.packages import get_package_share_directory

            candidates.append(Path(get_package_share_directory('dsseg')) / 'config' / name)
        except Exception:  # noqa: BLE001 - package not installed in an ament index
            pass
    candidates.append(Path(__file__).resolve().parents[1] / 'config' / name)
    for path in candidates:
        if path.is_file():
            return str(path)
    return None

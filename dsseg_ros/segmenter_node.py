"""``segmenter`` node: camera image -> class-id mask, colour overlay and confidence.

Subscribes (sensor-data QoS): ``segmenter.image_topic`` (sensor_msgs/Image, or
CompressedImage with ``transport: compressed``) and ``segmenter.camera_info_topic``.
Publishes (reliable, depth 5), every output with the input image's header (stamp, frame_id):

* ``~/mask`` — mono8 class ids (mono16 for models with > 255 classes),
* ``~/overlay`` — rgb8, class colours of :mod:`dsseg_core.palette` blended over the image,
* ``~/confidence`` — 32FC1 in [0, 1] or mono8 (``confidence_encoding``),
* ``~/camera_info`` — the last CameraInfo with the mask's header (for the cloud labeller),
* ``/diagnostics`` — queue, drop, latency and processing-time statistics.

Images are handed to a worker thread through a drop-oldest queue: the subscription callback
never waits for the model, and when images come faster than the model runs the oldest
waiting image is dropped (counted in the diagnostics). The image subscription is raw: the
executor thread only receives the serialized bytes, the worker decodes them
(:func:`dsseg_core.msgs.cdr.deserialize`, zero-copy pixels) and publishes its images as
serialized bytes (:func:`dsseg_core.msgs.cdr.image_cdr`, one copy). The overlay and the
confidence image are computed only while someone subscribes to them.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dsseg_core.errors import ConfigError, DssegError, MessageError
from dsseg_core.msgs.cdr import deserialize, image_cdr
from dsseg_core.nodes_config import SegmenterNodeConfig
from dsseg_core.palette import blend_overlay
from dsseg_ros.conversions import copy_header
from dsseg_ros.node_base import OUTPUT_DEPTH, SENSOR_QOS, DssegNode
from dsseg_ros.worker import DropOldestWorker

__all__ = ['SegmenterNode', 'main', 'mask_encoding']


def mask_encoding(num_classes: int) -> tuple[str, type]:
    """``('mono8', uint8)`` for up to 255 classes (255 = unlabelled), else mono16."""
    return ('mono8', np.uint8) if num_classes <= 255 else ('mono16', np.uint16)


class SegmenterNode(DssegNode[SegmenterNodeConfig]):
    """See the module docstring. ``predictor`` injects a ready predictor (tests, tools)."""

    def __init__(self, node_name: str = 'segmenter', *, predictor: Any = None,
                 config: SegmenterNodeConfig | dict | None = None, **node_kwargs: Any) -> None:
        super().__init__(node_name, SegmenterNodeConfig, 'segmenter', config=config,
                         **node_kwargs)
        cfg = self.config
        self._predictor_lock = threading.Lock()
        self.predictor = predictor if predictor is not None else self._load_predictor(cfg)
        self._camera_info: CameraInfo | None = None
        self._reloading = False
        self.published = 0
        self.pub_mask = self.create_publisher(Image, '~/mask', OUTPUT_DEPTH)
        self.pub_overlay = self.create_publisher(Image, '~/overlay', OUTPUT_DEPTH)
        self.pub_confidence = self.create_publisher(Image, '~/confidence', OUTPUT_DEPTH)
        self.pub_info = self.create_publisher(CameraInfo, '~/camera_info', OUTPUT_DEPTH)
        self.worker: DropOldestWorker = self.add_worker(DropOldestWorker(
            self._process, maxlen=cfg.queue_size, name='segment', on_error=self._on_error))
        msg_type = CompressedImage if cfg.transport == 'compressed' else Image
        self._image_msgtype = ('sensor_msgs/msg/CompressedImage' if cfg.transport == 'compressed'
                               else 'sensor_msgs/msg/Image')
        self._image_topic = self.resolve_topic_name(cfg.image_topic)  # names bad messages
        self.sub_image = self.create_subscription(msg_type, cfg.image_topic, self._on_image,
                                                  SENSOR_QOS, raw=True)
        self.sub_info = self.create_subscription(CameraInfo, cfg.camera_info_topic,
                                                 self._on_camera_info, SENSOR_QOS)
        self.get_logger().info(
            f'segmenting {self.resolve_topic_name(cfg.image_topic)} ({cfg.transport}) with '
            f'{self.predictor.num_classes} classes -> {self.resolve_topic_name("~/mask")}')

    # -- model ---------------------------------------------------------------------------
    def _load_predictor(self, cfg: SegmenterNodeConfig) -> Any:
        if not cfg.model.path:
            raise ConfigError(
                f'{self.get_name()}: parameter segmenter.model.path is empty; set it to a '
                'checkpoint run dir or an .onnx file (config/dsseg.yaml, -p '
                'segmenter.model.path:=PATH or dsseg run --model PATH)')
        from dsseg_core.segmenter.inference import load_predictor

        self.get_logger().info(f'loading model {cfg.model.path} on {cfg.model.device} '
                               f'({cfg.model.precision})')
        t0 = time.monotonic()
        predictor = load_predictor(cfg.model.path, device=cfg.model.device,
                                   precision=cfg.model.precision,
                                   **cfg.model.predictor_overrides())
        self.get_logger().info(f'model loaded in {time.monotonic() - t0:.1f} s')
        return predictor

    def on_config_change(self, config: SegmenterNodeConfig, changed: set[str]) -> None:
        if any(k.startswith('model.') for k in changed):
            threading.Thread(target=self._reload, args=(config,), daemon=True,
                             name='model-reload').start()

    def _reload(self, config: SegmenterNodeConfig) -> None:
        self._reloading = True
        try:
            predictor = self._load_predictor(config)
        except DssegError as err:
            self.get_logger().error(f'model reload failed, keeping the previous model: {err}')
            return
        finally:
            self._reloading = False
        with self._predictor_lock:
            self.predictor = predictor

    # -- callbacks (executor thread: must not block) -------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_image(self, msg: bytes | Image | CompressedImage) -> None:
        if self.config.require_camera_info and self._camera_info is None:
            self.warn('no_camera_info',
                      f'no CameraInfo received yet on '
                      f'{self.resolve_topic_name(self.config.camera_info_topic)}; images are '
                      'dropped until one arrives (or set segmenter.require_camera_info: false)')
            return
        self.worker.submit(msg)

    def _on_error(self, msg: Any, exc: BaseException) -> None:
        topic = self.resolve_topic_name(self.config.image_topic)
        if isinstance(exc, MessageError):
            self.warn('bad_image', f'{topic}: {exc}')
        else:
            self.warn(f'error.{type(exc).__name__}',
                      f'{topic}: processing failed: {type(exc).__name__}: {exc}')

    # -- worker thread -------------------------------------------------------------------
    def _process(self, msg: bytes | Image | CompressedImage) -> None:
        from dsseg_ros.conversions import decode_image

        cfg = self.config
        if isinstance(msg, bytes):  # the raw subscription
            msg = deserialize(msg, self._image_msgtype, self._image_topic)
        rgb = decode_image(msg)
        with self._predictor_lock:
            predictor = self.predictor
        class_ids, confidence = predictor.predict(rgb)
        num_classes = int(predictor.num_classes)
        encoding, dtype = mask_encoding(num_classes)
        mask = np.ascontiguousarray(class_ids, dtype=dtype)
        header = msg.header
        self.pub_mask.publish(image_cdr(mask, encoding, header))
        # the overlay and confidence cost CPU: only while someone listens (RViz, the labeller)
        if cfg.publish_overlay and self.pub_overlay.get_subscription_count():
            overlay = blend_overlay(rgb, mask, cfg.overlay_alpha, num_classes)
            self.pub_overlay.publish(image_cdr(overlay, 'rgb8', header))
        if cfg.publish_confidence and self.pub_confidence.get_subscription_count():
            conf = np.asarray(confidence, np.float32)
            if cfg.confidence_encoding == 'mono8':
                conf8 = np.clip(np.rint(conf * 255.0), 0, 255).astype(np.uint8)
                self.pub_confidence.publish(image_cdr(conf8, 'mono8', header))
            else:
                self.pub_confidence.publish(image_cdr(conf, '32FC1', header))
        info = self._camera_info
        if info is not None:
            out = CameraInfo()
            for field in ('height', 'width', 'distortion_model', 'd', 'k', 'r', 'p',
                          'binning_x', 'binning_y', 'roi'):
                setattr(out, field, getattr(info, field))
            out.header = copy_header(header)
            self.pub_info.publish(out)
        self.published += 1

    def diagnostic_values(self) -> dict[str, str]:
        values = super().diagnostic_values()
        values['published'] = str(self.published)
        values['num_classes'] = str(self.predictor.num_classes)
        values['model_reloading'] = str(self._reloading)
        return values


def main(args: list[str] | None = None) -> int:
    """Console script ``segmenter`` (``ros2 run dsseg segmenter --ros-args ...``)."""
    from dsseg_ros.run import spin_nodes

    return spin_nodes(lambda ctx: [SegmenterNode(context=ctx)], args, name='segmenter')


if __name__ == '__main__':
    sys.exit(main())

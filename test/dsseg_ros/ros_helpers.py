"""Helpers for the node tests: a spinner, collectors, a fake predictor, synthetic sensor data.

test/conftest.py has already set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and this run's
ROS_DOMAIN_ID. Every test puts its topics under its own namespace so tests never see each
other's messages.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from dsseg_ros.conversions import cloud_msg, image_msg, time_msg  # noqa: E402

_counter = itertools.count()

W, H = 64, 48
K = np.array([[40.0, 0.0, 32.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]])
#: LiDAR (x forward, y left, z up) -> camera optical (z forward, x right, y down).
T_CAM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0],
                        [0.0, 0.0, -1.0, 0.0],
                        [1.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 1.0]])


def unique(prefix: str = 't') -> str:
    return f'{prefix}{os.getpid()}_{next(_counter)}'


class Spinner:
    """Spin nodes of one context in the test thread until a condition holds."""

    def __init__(self, context: Context) -> None:
        self.executor = SingleThreadedExecutor(context=context)
        self.nodes: list[Node] = []

    def add(self, node: Node) -> Node:
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def spin_until(self, cond: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return cond()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        for node in reversed(self.nodes):
            close = getattr(node, 'close', None)
            close() if close is not None else node.destroy_node()


class Collector:
    """Subscribes a topic and keeps every message."""

    def __init__(self, node: Node, msg_type: type, topic: str, qos: int = 10) -> None:
        self.msgs: list = []
        self._lock = threading.Lock()
        self.sub = node.create_subscription(msg_type, topic, self._cb, qos)

    def _cb(self, msg) -> None:
        with self._lock:
            self.msgs.append(msg)

    def __len__(self) -> int:
        with self._lock:
            return len(self.msgs)


class FakePredictor:
    """class id = red channel // 64 (4 classes + room), confidence = green / 255; ``delay_s``
    simulates a slow model."""

    def __init__(self, num_classes: int = 5, delay_s: float = 0.0) -> None:
        self.num_classes = num_classes
        self.class_names = [f'class_{i}' for i in range(num_classes)]
        self.delay_s = delay_s
        self.calls = 0

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        ids = (rgb[..., 0] // 64).astype(dtype)
        if self.num_classes > 255:
            ids = ids + 256
        return ids, rgb[..., 1].astype(np.float32) / 255.0


def header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=time_msg(stamp_ns), frame_id=frame_id)


def synthetic_rgb(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb[..., 0] = (np.arange(W) * 4).astype(np.uint8)[None, :]  # 4 vertical class bands
    return rgb


def rgb_image_msg(stamp_ns: int, frame_id: str = 'cam_optical', seed: int = 0):
    return image_msg(synthetic_rgb(seed), 'rgb8', header(stamp_ns, frame_id))


def camera_info_msg(stamp_ns: int = 0, frame_id: str = 'cam_optical') -> CameraInfo:
    info = CameraInfo(header=header(stamp_ns, frame_id), width=W, height=H,
                      distortion_model='plumb_bob')
    info.k = K.reshape(-1).tolist()
    info.d = [0.0] * 5
    info.r = np.eye(3).reshape(-1).tolist()
    projection = np.zeros((3, 4))
    projection[:, :3] = K
    info.p = projection.reshape(-1).tolist()
    return info


def synthetic_points(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Points in front of the camera (most inside the 64x48 image), some behind."""
    rng = np.random.default_rng(seed)
    xyz = np.empty((n, 3), np.float32)
    xyz[:, 0] = rng.uniform(-3.0, 12.0, n)   # some behind the camera
    xyz[:, 1] = rng.uniform(-6.0, 6.0, n)
    xyz[:, 2] = rng.uniform(-3.0, 3.0, n)
    intensity = rng.uniform(0, 1, n).astype(np.float32)
    return xyz, intensity


def synthetic_cloud_msg(stamp_ns: int, frame_id: str = 'lidar', n: int = 400, seed: int = 1):
    xyz, intensity = synthetic_points(n, seed)
    return cloud_msg({'xyz': xyz, 'intensity': intensity}, header(stamp_ns, frame_id))


def write_calibration(path: Path, name: str = 'cam') -> Path:
    from dsseg_core.calibration import (
        CameraCalibration,
        CameraModel,
        RigCalibration,
        save_calibration_yaml,
    )

    model = CameraModel(W, H, K, np.zeros(5), 'plumb_bob', 'cam_optical', name)
    save_calibration_yaml(RigCalibration({name: CameraCalibration(model, T_CAM_LIDAR)},
                                         'lidar'), path)
    return path

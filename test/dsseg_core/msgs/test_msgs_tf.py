"""TransformTree: chains, inverse lookups, interpolation in time, errors; quaternion helpers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from msg_factories import make_msg

from dsseg_core.errors import CalibrationError
from dsseg_core.msgs.tf import (
    TransformTree,
    invert_transform,
    transform_from_xyz_quat,
    xyz_quat_from_transform,
)


def yaw_quat(angle: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2))


def tf_msg(flavor, parent, child, xyz, quat, stamp_ns=0):
    return make_msg(flavor, 'TransformStamped', frame_id=parent, child_frame_id=child,
                    xyz=xyz, quat=quat, stamp_ns=stamp_ns)


def apply(T: np.ndarray, p) -> np.ndarray:  # noqa: N803
    return (T @ np.append(np.asarray(p, float), 1.0))[:3]


def test_quaternion_helpers_round_trip() -> None:
    T = transform_from_xyz_quat([1, 2, 3], yaw_quat(math.pi / 2))  # noqa: N806
    np.testing.assert_allclose(apply(T, [1, 0, 0]), [1, 3, 3], atol=1e-12)  # x → y
    rng = np.random.default_rng(0)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    T = transform_from_xyz_quat([0.5, -1, 2], q)  # noqa: N806
    xyz, q2 = xyz_quat_from_transform(T)
    np.testing.assert_allclose(xyz, [0.5, -1, 2])
    np.testing.assert_allclose(q2, q if q[3] >= 0 else -q, atol=1e-12)
    np.testing.assert_allclose(invert_transform(T) @ T, np.eye(4), atol=1e-12)
    with pytest.raises(CalibrationError, match='quaternion'):
        transform_from_xyz_quat([0, 0, 0], [0, 0, 0, 0])


def test_three_frame_chain_and_inverse(flavor: str) -> None:
    tree = TransformTree()
    tree.add(tf_msg(flavor, 'map', 'base_link', (10, 0, 0), yaw_quat(math.pi / 2)), static=True)
    tree.add(tf_msg(flavor, '/base_link', 'velo_link', (1, 0, 2), yaw_quat(0)), static=True)
    t_map_velo = tree.lookup('map', 'velo_link')
    # velo origin is (1, 0, 2) in base, base is turned 90° left at (10, 0, 0) in map.
    np.testing.assert_allclose(apply(t_map_velo, [0, 0, 0]), [10, 1, 2], atol=1e-12)
    np.testing.assert_allclose(apply(t_map_velo, [1, 0, 0]), [10, 2, 2], atol=1e-12)
    np.testing.assert_allclose(tree.lookup('velo_link', 'map'), np.linalg.inv(t_map_velo),
                               atol=1e-12)
    assert tree.frames == ['base_link', 'map', 'velo_link']
    np.testing.assert_array_equal(tree.lookup('map', 'map'), np.eye(4))


def test_sibling_frames_through_common_parent(flavor: str) -> None:
    tree = TransformTree()
    q_cam = (-0.5, 0.5, -0.5, 0.5)  # optical frame: z forward, x right, y down
    tree.add([tf_msg(flavor, 'base_link', 'velo_link', (0, 0, 1.7), yaw_quat(0)),
              tf_msg(flavor, 'base_link', 'cam_optical', (0.3, 0, 1.6), q_cam)], static=True)
    t_cam_velo = tree.lookup('cam_optical', 'velo_link')
    # A point 10 m ahead of the LiDAR at its height is 10 - 0.3 m ahead of the camera (z) and
    # 0.1 m above it (y is down).
    np.testing.assert_allclose(apply(t_cam_velo, [10, 0, 0]), [0, -0.1, 9.7], atol=1e-12)
    t_velo_cam = tree.lookup('velo_link', 'cam_optical')
    np.testing.assert_allclose(t_velo_cam @ t_cam_velo, np.eye(4), atol=1e-12)


def test_interpolation_in_time(flavor: str) -> None:
    tree = TransformTree()
    s = 1_000_000_000
    tree.add(tf_msg(flavor, 'odom', 'base_link', (0, 0, 0), yaw_quat(0), stamp_ns=10 * s))
    tree.add(tf_msg(flavor, 'odom', 'base_link', (2, 0, 0), yaw_quat(math.pi / 2),
                    stamp_ns=11 * s))
    tree.add_transform('base_link', 'velo_link', (1, 0, 0), yaw_quat(0), static=True)
    mid = tree.lookup('odom', 'base_link', stamp_ns=10 * s + s // 2)
    np.testing.assert_allclose(mid[:3, 3], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(apply(mid, [1, 0, 0]) - mid[:3, 3],
                               [math.cos(math.pi / 4), math.sin(math.pi / 4), 0], atol=1e-12)
    # through the static child: velo origin is 1 m ahead of base along its heading
    velo = tree.lookup('odom', 'velo_link', stamp_ns=11 * s)
    np.testing.assert_allclose(velo[:3, 3], [2, 1, 0], atol=1e-12)
    latest = tree.lookup('odom', 'base_link')
    np.testing.assert_allclose(latest[:3, 3], [2, 0, 0])
    # inside the extrapolation tolerance: clamp to the end sample
    np.testing.assert_allclose(tree.lookup('odom', 'base_link', 11 * s + 50_000_000)[:3, 3],
                               [2, 0, 0])
    with pytest.raises(CalibrationError, match=r'no transform at t=.*history covers'):
        tree.lookup('odom', 'base_link', stamp_ns=12 * s)

    nearest = TransformTree(interpolation='nearest')
    nearest.add_transform('odom', 'base_link', (0, 0, 0), yaw_quat(0), stamp_ns=0)
    nearest.add_transform('odom', 'base_link', (2, 0, 0), yaw_quat(0), stamp_ns=s)
    np.testing.assert_allclose(nearest.lookup('odom', 'base_link', int(0.4 * s))[:3, 3], 0)
    np.testing.assert_allclose(nearest.lookup('odom', 'base_link', int(0.6 * s))[:3, 3],
                               [2, 0, 0])


def test_history_is_trimmed() -> None:
    tree = TransformTree(cache_ns=1000, max_history=5, extrapolation_ns=0)
    for t in range(0, 20_000, 100):
        tree.add_transform('odom', 'base_link', (t, 0, 0), yaw_quat(0), stamp_ns=t)
    np.testing.assert_allclose(tree.lookup('odom', 'base_link', 19_650)[:3, 3], [19_650, 0, 0])
    with pytest.raises(CalibrationError, match=r'history covers \[19500, 19900\]'):
        tree.lookup('odom', 'base_link', stamp_ns=0)
    wide = TransformTree(cache_ns=1000, extrapolation_ns=0)
    for t in range(0, 20_000, 100):
        wide.add_transform('odom', 'base_link', (t, 0, 0), yaw_quat(0), stamp_ns=t)
    with pytest.raises(CalibrationError, match=r'history covers \[18900, 19900\]'):
        wide.lookup('odom', 'base_link', stamp_ns=0)


def test_unknown_and_disconnected_frames() -> None:
    tree = TransformTree()
    tree.add_transform('base_link', 'velo_link', (0, 0, 1), yaw_quat(0), static=True)
    tree.add_transform('world', 'gps', (0, 0, 0), yaw_quat(0), static=True)
    with pytest.raises(CalibrationError, match=r"unknown frame 'camera'.*base_link, gps, "
                                               r'velo_link, world'):
        tree.lookup('camera', 'velo_link')
    with pytest.raises(CalibrationError, match=r"no path between 'gps'.*'velo_link'"):
        tree.lookup('gps', 'velo_link')
    assert not tree.can_transform('gps', 'velo_link')
    assert tree.can_transform('base_link', 'velo_link')
    with pytest.raises(CalibrationError, match='loop'):
        tree.add_transform('velo_link', 'base_link', (0, 0, 0), yaw_quat(0), static=True)


def test_tf_message_container(flavor: str) -> None:
    tree = TransformTree()
    container = SimpleNamespace(transforms=[
        tf_msg(flavor, 'base_link', 'a', (1, 0, 0), yaw_quat(0)),
        tf_msg(flavor, 'a', 'b', (0, 1, 0), yaw_quat(0)),
    ])
    tree.add(container, static=True)
    np.testing.assert_allclose(tree.lookup('base_link', 'b')[:3, 3], [1, 1, 0])
    with pytest.raises(CalibrationError, match='TransformStamped-like'):
        tree.add(SimpleNamespace(header=None, transform=None))

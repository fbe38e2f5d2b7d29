"""Serialized messages without rclpy: image_cdr writes what rclpy would, deserialize reads it."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from dsseg_core.errors import MessageError
from dsseg_core.msgs.cdr import IMAGE_MSGTYPE, deserialize, header_stamp_ns, image_cdr
from dsseg_core.msgs.image import image_to_numpy

HAVE_RCLPY = importlib.util.find_spec('rclpy') is not None

CASES = [('mono8', (4, 5), np.uint8, 'cam'), ('rgb8', (3, 3, 3), np.uint8, 'ab'),
         ('mono8', (2, 1), np.uint8, ''), ('32FC1', (2, 2), np.float32, 'xxxxxxx'),
         ('mono16', (4, 7), np.uint16, 'abc'), ('rgb8', (5, 1242, 3), np.uint8, 'camera_left')]


def _header(frame_id: str) -> SimpleNamespace:
    return SimpleNamespace(stamp=SimpleNamespace(sec=5, nanosec=7), frame_id=frame_id)


@pytest.mark.parametrize(('encoding', 'shape', 'dtype', 'frame_id'), CASES)
def test_roundtrip_through_rosbags(encoding: str, shape: tuple, dtype: type,
                                   frame_id: str) -> None:
    arr = (np.random.default_rng(0).random(shape) * 250).astype(dtype)
    msg = deserialize(image_cdr(arr, encoding, _header(frame_id)), IMAGE_MSGTYPE)
    assert (msg.height, msg.width, msg.encoding) == (shape[0], shape[1], encoding)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
        (5, 7, frame_id)
    assert msg.step == shape[1] * arr.itemsize * (shape[2] if len(shape) == 3 else 1)
    np.testing.assert_array_equal(image_to_numpy(msg).reshape(shape), arr)


@pytest.mark.skipif(not HAVE_RCLPY, reason='rclpy not installed (pip install .[ros])')
@pytest.mark.parametrize(('encoding', 'shape', 'dtype', 'frame_id'), CASES)
def test_same_bytes_as_rclpy(encoding: str, shape: tuple, dtype: type, frame_id: str) -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from dsseg_ros.conversions import image_msg

    arr = (np.random.default_rng(1).random(shape) * 250).astype(dtype)
    ours = image_cdr(arr, encoding, _header(frame_id))
    theirs = serialize_message(image_msg(arr, encoding, _header(frame_id)))
    assert len(ours) == len(theirs)
    back = deserialize_message(ours, Image)
    assert bytes(back.data) == arr.tobytes() and back.header.frame_id == frame_id
    # equal except for padding bytes, which rclpy leaves uninitialised
    differ = np.flatnonzero(np.frombuffer(ours, np.uint8) != np.frombuffer(theirs, np.uint8))
    assert all(ours[i] == 0 for i in differ)


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(MessageError, match='encoding'):
        image_cdr(np.zeros((2, 2), np.uint8), 'yuv422', _header('c'))
    with pytest.raises(MessageError, match=r'rgb8 needs a uint8 array of shape \(H, W, 3\)'):
        image_cdr(np.zeros((2, 2), np.uint8), 'rgb8', _header('c'))
    with pytest.raises(MessageError, match='/cam/image: cannot decode 6 bytes'):
        deserialize(b'\x00\x01\x00\x00\x05\x00', IMAGE_MSGTYPE, '/cam/image')
    with pytest.raises(MessageError, match='unknown message type'):
        deserialize(b'\x00\x01\x00\x00', 'nope_msgs/msg/Nope', '/x')


def test_header_stamp_without_decoding() -> None:
    raw = image_cdr(np.zeros((2, 3), np.uint8), 'mono8', _header('cam'))
    assert header_stamp_ns(raw) == 5_000_000_007
    with pytest.raises(MessageError, match='/lidar: 6 bytes are not a CDR message'):
        header_stamp_ns(raw[:6], '/lidar')
    big_endian = b'\x00\x00\x00\x00' + (3).to_bytes(4, 'big') + (9).to_bytes(4, 'big')
    assert header_stamp_ns(big_endian) == 3_000_000_009

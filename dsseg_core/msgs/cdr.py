"""Serialized ROS 2 messages (CDR, what DDS and rosbag2 carry) without rclpy.

The nodes take their large inputs as serialized bytes (``create_subscription(..., raw=True)``)
and publish their images as bytes (``Publisher.publish(bytes)``): rclpy's own conversion of a
1242x375 rgb8 Image to a Python message costs ~2 ms with the GIL held on the executor thread,
rosbags' CDR decoder ~0.2 ms on the worker thread, with ``uint8[]`` fields as zero-copy numpy
views of the received bytes.

* :func:`deserialize` — bytes -> rosbags message dataclass (Kilted typestore), duck-typed like
  an rclpy message for every dsseg decoder (``header.stamp.sec``, ``data``, ...).
* :func:`header_stamp_ns` — the ``header.stamp`` of serialized bytes without decoding them (for
  the synchronizer, on the executor thread).
* :func:`image_cdr` — numpy image -> serialized ``sensor_msgs/msg/Image`` in one copy of the
  pixels, byte-compatible with rclpy's ``serialize_message`` (padding bytes are zero).
"""

from __future__ import annotations

import functools
import struct
import sys
from typing import Any

import numpy as np

from dsseg_core.errors import MessageError

__all__ = ['IMAGE_MSGTYPE', 'deserialize', 'header_stamp_ns', 'image_cdr']

IMAGE_MSGTYPE = 'sensor_msgs/msg/Image'

#: CDR encapsulation header: plain CDR, little or big endian (options 0).
_ENCAPSULATION = b'\x00\x01\x00\x00' if sys.byteorder == 'little' else b'\x00\x00\x00\x00'
_ENDIAN = '<' if sys.byteorder == 'little' else '>'

#: Image encodings :func:`image_cdr` writes: (dtype, channels).
_IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'mono8': (np.dtype(np.uint8), 1), '8UC1': (np.dtype(np.uint8), 1),
    'mono16': (np.dtype(np.uint16), 1), '16UC1': (np.dtype(np.uint16), 1),
    'rgb8': (np.dtype(np.uint8), 3), 'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4), '32FC1': (np.dtype(np.float32), 1),
}


@functools.cache
def _typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def deserialize(raw: bytes | bytearray | memoryview, msgtype: str, source: str = '?') -> Any:
    """Decode serialized CDR bytes of ``msgtype`` (e.g. ``'sensor_msgs/msg/PointCloud2'``).

    Array fields of the result may be views of ``raw``: keep ``raw`` alive while they are used
    (the caller owns it; ``bytes`` are immutable, so views stay valid). ``source`` (a topic)
    names the input in the :class:`MessageError` raised for truncated or malformed bytes.
    """
    try:
        return _typestore().deserialize_cdr(raw, msgtype)
    except KeyError as err:
        raise MessageError(f'{source}: unknown message type {msgtype!r}') from err
    except Exception as err:  # rosbags raises struct.error / IndexError / ValueError ...
        raise MessageError(
            f'{source}: cannot decode {len(raw)} bytes as {msgtype}: '
            f'{type(err).__name__}: {err}; is the publisher using this type?') from err


def header_stamp_ns(raw: bytes | bytearray | memoryview, source: str = '?') -> int:
    """Nanoseconds of the ``header.stamp`` of a serialized message whose first field is a
    ``std_msgs/Header`` (Image, PointCloud2, CameraInfo, ...), read from bytes 4..12."""
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        raise MessageError(f'{source}: {len(raw)} bytes are not a CDR message with a header '
                           '(too short or unknown encapsulation)')
    sec, nanosec = struct.unpack_from('<iI' if raw[1] == 1 else '>iI', raw, 4)
    return sec * 1_000_000_000 + nanosec


def _string(value: str, offset: int) -> tuple[bytes, int]:
    """CDR string at ``offset`` (already 4-aligned): length incl. NUL, bytes, NUL."""
    data = value.encode('utf-8') + b'\x00'
    return struct.pack(f'{_ENDIAN}I', len(data)) + data, offset + 4 + len(data)


def _pad(offset: int, align: int) -> bytes:
    return b'\x00' * (-offset % align)


def image_cdr(image: np.ndarray, encoding: str, header: Any) -> bytes:
    """Serialized ``sensor_msgs/msg/Image`` of ``image`` with ``header``'s stamp and frame_id.

    ``image`` is ``(H, W)`` or ``(H, W, C)`` of the encoding's dtype (see ``_IMAGE_ENCODINGS``);
    ``header`` anything with ``stamp.sec``, ``stamp.nanosec`` and ``frame_id``. The pixels are
    copied once, into the returned bytes.
    """
    spec = _IMAGE_ENCODINGS.get(encoding)
    if spec is None:
        raise MessageError(f'image_cdr: encoding {encoding!r} not supported; use one of '
                           f'{sorted(_IMAGE_ENCODINGS)}')
    dtype, channels = spec
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1 and channels == 1:
        arr = arr[:, :, 0]
    shape_ok = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if arr.dtype.newbyteorder('=') != dtype or not shape_ok:
        shape = '(H, W)' if channels == 1 else f'(H, W, {channels})'
        raise MessageError(f'image_cdr: {encoding} needs a {dtype} array of shape {shape}, '
                           f'got {arr.dtype} {arr.shape}')
    arr = np.ascontiguousarray(arr, dtype=dtype)  # native byte order, C order
    height, width = arr.shape[:2]
    step = width * channels * dtype.itemsize
    # offsets count from the end of the 4-byte encapsulation header
    parts = [_ENCAPSULATION,
             struct.pack(f'{_ENDIAN}iI', int(header.stamp.sec), int(header.stamp.nanosec))]
    frame, offset = _string(str(header.frame_id), 8)
    parts += [frame, _pad(offset, 4)]
    offset += -offset % 4
    parts.append(struct.pack(f'{_ENDIAN}II', height, width))
    enc, offset = _string(encoding, offset + 8)
    parts += [enc, struct.pack('B', int(sys.byteorder == 'big'))]
    offset += 1
    parts.append(_pad(offset, 4))
    offset += -offset % 4
    parts.append(struct.pack(f'{_ENDIAN}II', step, step * height))
    parts.append(memoryview(arr).cast('B'))
    return b''.join(parts)

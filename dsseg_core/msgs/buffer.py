"""Zero-copy access to the ``data`` field of a message, whatever the client library made of it.

rosbags gives ``np.ndarray`` (uint8), rclpy gives ``array.array('B')`` (or ``bytes`` if the
caller assigned bytes before publishing), hand-built messages may carry ``bytes``,
``bytearray`` or ``memoryview``. All of them expose the buffer protocol, so one
``np.frombuffer`` turns them into a flat ``uint8`` view without copying.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsseg_core.errors import MessageError

__all__ = ['as_uint8', 'header_frame_id', 'stamp_to_ns', 'ns_to_stamp']


def as_uint8(data: Any, what: str = 'data') -> np.ndarray:
    """Flat ``uint8`` view of ``data`` (no copy for ndarray / bytes / array.array / memoryview).

    A list of ints (old-style messages) is copied once. Raises :class:`MessageError` naming
    ``what`` for anything else.
    """
    if isinstance(data, np.ndarray):
        if data.dtype == np.uint8:
            return data.reshape(-1) if data.ndim != 1 else data
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        return data.reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        view = memoryview(data)
    except TypeError:
        view = None
    if view is not None:
        if view.itemsize != 1 or view.ndim != 1:
            view = view.cast('B')
        return np.frombuffer(view, dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            return np.asarray(data, dtype=np.uint8)
        except (ValueError, OverflowError, TypeError) as err:
            raise MessageError(f'{what}: list is not a sequence of bytes (0..255): {err}') from err
    raise MessageError(
        f'{what}: expected bytes, array.array, memoryview or a uint8 numpy array, '
        f'got {type(data).__name__}'
    )


def stamp_to_ns(stamp: Any) -> int:
    """Integer nanoseconds of a ``builtin_interfaces/Time`` (``sec``, ``nanosec``) or a header.

    Also accepts ROS 1 style ``secs``/``nsecs`` and plain ints (returned unchanged).
    """
    if isinstance(stamp, (int, np.integer)):
        return int(stamp)
    if hasattr(stamp, 'stamp'):  # a Header
        stamp = stamp.stamp
    if hasattr(stamp, 'sec'):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    if hasattr(stamp, 'secs'):
        return int(stamp.secs) * 1_000_000_000 + int(stamp.nsecs)
    raise MessageError(
        f'cannot read a time stamp from {type(stamp).__name__}: expected sec/nanosec fields'
    )


def ns_to_stamp(stamp_ns: int) -> tuple[int, int]:
    """``(sec, nanosec)`` for a ``builtin_interfaces/Time`` from integer nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return sec, nanosec


def header_frame_id(msg: Any) -> str:
    """``msg.header.frame_id`` without a leading ``/`` ('' when the message has no header)."""
    header = getattr(msg, 'header', None)
    frame = getattr(header, 'frame_id', '') if header is not None else ''
    return str(frame or '').lstrip('/')

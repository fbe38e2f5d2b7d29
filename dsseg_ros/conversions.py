"""rclpy messages <-> numpy, built on the ROS-free decoders of :mod:`dsseg_core.msgs`.

Decoding goes through dsseg_core (duck-typed, so the same code reads bags and live topics);
this module adds what needs rclpy: building ``sensor_msgs`` messages, copying headers, and
the small checks the nodes apply to masks and confidence images.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from dsseg_core.errors import MessageError

__all__ = [
    'MASK_ENCODINGS',
    'camera_model',
    'cloud_arrays',
    'cloud_msg',
    'copy_header',
    'decode_confidence',
    'decode_image',
    'decode_mask',
    'image_msg',
    'stamp_ns',
    'time_msg',
]

MASK_ENCODINGS = ('mono8', '8UC1', 'mono16', '16UC1')


def stamp_ns(header: Any) -> int:
    """Integer nanoseconds of a header (or a ``Time``)."""
    stamp = getattr(header, 'stamp', header)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def time_msg(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def copy_header(header: Any) -> Header:
    """A new Header with the same stamp and frame_id."""
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                  frame_id=header.frame_id)


def _uint8_array(data: bytes | bytearray | memoryview) -> array.array:
    """``array('B')`` copy of ``data``: assigning it to a message's ``uint8[]`` field is one
    memcpy, where ``bytes`` would go through a per-element Python check in rclpy."""
    out = array.array('B')
    out.frombytes(data)
    return out


#: Encodings the nodes publish: (dtype, channels) for the direct path of :func:`image_msg`.
_DIRECT_ENCODINGS = {'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1), 'rgb8': (np.uint8, 3),
                     '32FC1': (np.float32, 1)}


def _zeroed_uint8_array(size: int) -> array.array:
    return array.array('B', [0]) * size


def image_msg(array_: np.ndarray, encoding: str, header: Any) -> Image:
    """An Image with ``header``'s stamp and frame_id (``numpy_to_image_fields`` layout).

    The node encodings (mono8, mono16, rgb8, 32FC1) are written straight into the message's
    ``array('B')`` buffer (one copy); others go through ``numpy_to_image_fields``.
    """
    direct = _DIRECT_ENCODINGS.get(encoding)
    arr = np.asarray(array_)
    if direct is not None and arr.dtype == direct[0] and arr.dtype.isnative and (
            arr.ndim == 2 and direct[1] == 1 or arr.ndim == 3 and arr.shape[2] == direct[1]):
        height, width = arr.shape[:2]
        step = width * direct[1] * arr.dtype.itemsize
        # check_fields=True: the data setter then takes the array('B') as is (no copy).
        msg = Image(check_fields=True, header=copy_header(header), height=height, width=width,
                    encoding=encoding, is_bigendian=int(sys.byteorder == 'big'), step=step)
        buf = _zeroed_uint8_array(step * height)
        np.frombuffer(buf, arr.dtype).reshape(arr.shape)[...] = arr
        msg.data = buf
        return msg
    from dsseg_core.msgs.image import numpy_to_image_fields

    fields = numpy_to_image_fields(arr, encoding)
    msg = Image(check_fields=True, header=copy_header(header), height=fields['height'],
                width=fields['width'], encoding=fields['encoding'],
                is_bigendian=int(bool(fields['is_bigendian'])), step=fields['step'])
    msg.data = _uint8_array(fields['data'])
    return msg


_DATATYPES_4 = {('f', 4): PointField.FLOAT32, ('u', 4): PointField.UINT32,
                ('i', 4): PointField.INT32}


def _cloud_4byte(arrays: Mapping[str, np.ndarray], header: Any) -> PointCloud2 | None:
    """Fast path of :func:`cloud_msg` when ``xyz`` and every other column are 4-byte scalars.

    Same layout as ``points_to_cloud_fields`` (fields at offsets 0, 4, 8, ... in order,
    ``point_step = 4 k``), written column by column straight into the message's buffer.
    """
    xyz = arrays.get('xyz')
    if xyz is None or xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.dtype != np.float32:
        return None
    n = xyz.shape[0]
    others = [(k, np.asarray(v)) for k, v in arrays.items() if k != 'xyz']
    if any(v.shape != (n,) or (v.dtype.kind, v.dtype.itemsize) not in _DATATYPES_4
           or not v.dtype.isnative for _k, v in others):
        return None
    k = 3 + len(others)
    buf = _zeroed_uint8_array(4 * k * n)
    table = np.frombuffer(buf, np.uint32).reshape(n, k)
    table[:, :3] = xyz.view(np.uint32)
    fields = [PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
              PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
              PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1)]
    for j, (name, values) in enumerate(others, start=3):
        table[:, j] = values.view(np.uint32)
        fields.append(PointField(name=name, offset=4 * j, count=1,
                                 datatype=_DATATYPES_4[(values.dtype.kind, 4)]))
    msg = PointCloud2(check_fields=True, header=copy_header(header), height=1, width=n,
                      is_bigendian=sys.byteorder == 'big', point_step=4 * k,
                      row_step=4 * k * n, is_dense=bool(np.isfinite(xyz).all()))
    msg.fields = fields
    msg.data = buf
    return msg


def cloud_msg(arrays: Mapping[str, np.ndarray], header: Any) -> PointCloud2:
    """A PointCloud2 from columns (``xyz`` or x/y/z first, then the others in order)."""
    fast = _cloud_4byte(arrays, header)
    if fast is not None:
        return fast
    from dsseg_core.msgs.pointcloud import points_to_cloud_fields

    fields = points_to_cloud_fields(arrays)
    msg = PointCloud2(check_fields=True, header=copy_header(header), height=fields['height'],
                      width=fields['width'], is_bigendian=bool(fields['is_bigendian']),
                      point_step=fields['point_step'], row_step=fields['row_step'],
                      is_dense=bool(fields['is_dense']))
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                  for f in fields['fields']]
    msg.data = _uint8_array(fields['data'])
    return msg


def decode_image(msg: Any) -> np.ndarray:
    """Image or CompressedImage -> ``(H, W, 3) uint8`` RGB (MessageError when undecodable).

    A C-contiguous rgb8 image comes back as a view of the message data (read-only for bytes).
    """
    from dsseg_core.msgs import image as img

    if hasattr(msg, 'format') and not hasattr(msg, 'encoding'):
        return img.compressed_to_numpy(msg)
    array = img.image_to_numpy(msg)
    if msg.encoding == 'rgb8' and array.flags.c_contiguous:
        return array  # already what the models take: no copy (a read-only view of the data)
    return img.to_rgb(array, msg.encoding)


def decode_mask(msg: Any, topic: str = 'mask') -> np.ndarray:
    """A class-id mask Image (mono8/8UC1 -> uint8, mono16/16UC1 -> uint16), ``(H, W)``."""
    from dsseg_core.msgs.image import image_to_numpy

    if msg.encoding not in MASK_ENCODINGS:
        raise MessageError(f'{topic}: mask encoding {msg.encoding!r} is not a class-id '
                           f'encoding ({", ".join(MASK_ENCODINGS)}); subscribe the segmenter '
                           '~/mask topic, not the overlay')
    mask = image_to_numpy(msg)
    return mask.reshape(mask.shape[:2])


def decode_confidence(msg: Any, topic: str = 'confidence') -> np.ndarray:
    """32FC1 (0..1) or mono8 (0..255) confidence Image -> ``(H, W) float32`` in [0, 1]."""
    from dsseg_core.msgs.image import image_to_numpy

    if msg.encoding == '32FC1':
        return image_to_numpy(msg).reshape(msg.height, msg.width).astype(np.float32,
                                                                           copy=False)
    if msg.encoding in ('mono8', '8UC1'):
        return image_to_numpy(msg).reshape(msg.height, msg.width).astype(np.float32) / 255.0
    raise MessageError(f'{topic}: confidence encoding {msg.encoding!r} is not 32FC1 or mono8')


def camera_model(msg: CameraInfo | Any, frame_id: str | None = None) -> Any:
    """:class:`dsseg_core.calibration.CameraModel` from a CameraInfo."""
    from dsseg_core.msgs.camera_info import camera_model_from_camera_info

    return camera_model_from_camera_info(msg, frame_id=frame_id)


def cloud_arrays(msg: Any, topic: str = 'cloud') -> Any:
    """Decode a PointCloud2 (x, y, z, intensity) and insist on at least one valid point."""
    from dsseg_core.msgs.pointcloud import cloud_to_points, require_points

    return require_points(cloud_to_points(msg, fields=('x', 'y', 'z')), topic=topic)

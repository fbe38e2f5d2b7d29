"""Message factories for the msgs tests: the same content as rosbags, rclpy and plain messages.

Imported as ``msg_factories`` (pytest's default import mode puts this folder on sys.path).

``make_msg(flavor, kind, **fields)`` builds a message of ``kind`` ('Image', 'PointCloud2',
'CompressedImage', 'CameraInfo', 'TransformStamped') for ``flavor``:

* ``rosbags``: a rosbags Kilted dataclass, serialised to CDR and deserialised again, exactly
  what a bag reader yields (``data`` is then a uint8 ndarray view into the CDR buffer);
* ``rclpy``: a ``sensor_msgs.msg`` / ``geometry_msgs.msg`` object (``data`` is array.array);
* ``plain``: a SimpleNamespace whose ``data`` is ``bytes``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

FLAVORS = ('rosbags', 'rclpy', 'plain')

_TYPES = {
    'Image': 'sensor_msgs/msg/Image',
    'CompressedImage': 'sensor_msgs/msg/CompressedImage',
    'PointCloud2': 'sensor_msgs/msg/PointCloud2',
    'CameraInfo': 'sensor_msgs/msg/CameraInfo',
    'TransformStamped': 'geometry_msgs/msg/TransformStamped',
}


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _rosbags_msg(kind: str, fields: dict[str, Any]) -> Any:
    ts = _typestore()
    T = ts.types  # noqa: N806
    stamp_ns = int(fields.pop('stamp_ns', 0))
    header = T['std_msgs/msg/Header'](
        stamp=T['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=fields.pop('frame_id', ''))
    if kind == 'PointCloud2':
        fields['fields'] = [T['sensor_msgs/msg/PointField'](name=f[0], offset=f[1],
                                                             datatype=f[2], count=f[3])
                            for f in fields['fields']]
        fields.setdefault('is_dense', False)
    if kind == 'CameraInfo':
        fields.setdefault('distortion_model', '')
        fields['d'] = np.asarray(fields.get('d', []), dtype=np.float64)
        fields['k'] = np.asarray(fields.get('k', np.zeros(9)), dtype=np.float64)
        fields['r'] = np.asarray(fields.get('r', np.eye(3).ravel()), dtype=np.float64)
        fields['p'] = np.asarray(fields.get('p', np.zeros(12)), dtype=np.float64)
        fields.setdefault('binning_x', 0)
        fields.setdefault('binning_y', 0)
        roi = fields.pop('roi', (0, 0, 0, 0))
        fields['roi'] = T['sensor_msgs/msg/RegionOfInterest'](
            x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3], do_rectify=False)
    if kind == 'TransformStamped':
        xyz, q = fields.pop('xyz'), fields.pop('quat')
        fields['transform'] = T['geometry_msgs/msg/Transform'](
            translation=T['geometry_msgs/msg/Vector3'](x=xyz[0], y=xyz[1], z=xyz[2]),
            rotation=T['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]))
    if 'data' in fields:
        fields['data'] = np.frombuffer(bytes(fields['data']), dtype=np.uint8)
    msgtype = _TYPES[kind]
    msg = T[msgtype](header=header, **fields)
    # Through CDR and back: the exact objects a bag reader hands out.
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msgtype), msgtype)


def _rclpy_msg(kind: str, fields: dict[str, Any]) -> Any:
    sensor_msgs = pytest.importorskip('sensor_msgs.msg')
    geometry_msgs = pytest.importorskip('geometry_msgs.msg')
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    stamp_ns = int(fields.pop('stamp_ns', 0))
    header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                    frame_id=fields.pop('frame_id', ''))
    if kind == 'PointCloud2':
        fields['fields'] = [sensor_msgs.PointField(name=f[0], offset=f[1], datatype=f[2],
                                                   count=f[3]) for f in fields['fields']]
    if kind == 'CameraInfo':
        for key in ('d', 'k', 'r', 'p'):
            if key in fields:
                fields[key] = [float(v) for v in np.asarray(fields[key]).ravel()]
        roi = fields.pop('roi', (0, 0, 0, 0))
        fields['roi'] = sensor_msgs.RegionOfInterest(x_offset=roi[0], y_offset=roi[1],
                                                     width=roi[2], height=roi[3])
    if kind == 'TransformStamped':
        xyz, q = fields.pop('xyz'), fields.pop('quat')
        fields['transform'] = geometry_msgs.Transform(
            translation=geometry_msgs.Vector3(x=float(xyz[0]), y=float(xyz[1]),
                                              z=float(xyz[2])),
            rotation=geometry_msgs.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                              w=float(q[3])))
        return geometry_msgs.TransformStamped(header=header, **fields)
    if 'data' in fields:
        fields['data'] = bytes(fields['data'])
    if 'is_bigendian' in fields and kind == 'PointCloud2':
        fields['is_bigendian'] = bool(fields['is_bigendian'])
    return getattr(sensor_msgs, kind)(header=header, **fields)


def _plain_msg(kind: str, fields: dict[str, Any]) -> Any:
    stamp_ns = int(fields.pop('stamp_ns', 0))
    header = SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 10**9,
                                                   nanosec=stamp_ns % 10**9),
                             frame_id=fields.pop('frame_id', ''))
    if kind == 'PointCloud2':
        fields['fields'] = [SimpleNamespace(name=f[0], offset=f[1], datatype=f[2], count=f[3])
                            for f in fields['fields']]
    if kind == 'CameraInfo':
        roi = fields.pop('roi', (0, 0, 0, 0))
        fields['roi'] = SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2],
                                        height=roi[3])
        fields.setdefault('binning_x', 0)
        fields.setdefault('binning_y', 0)
        fields.setdefault('distortion_model', '')
        fields.setdefault('d', [])
    if kind == 'TransformStamped':
        xyz, q = fields.pop('xyz'), fields.pop('quat')
        fields['transform'] = SimpleNamespace(
            translation=SimpleNamespace(x=xyz[0], y=xyz[1], z=xyz[2]),
            rotation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3]))
    if 'data' in fields:
        fields['data'] = bytes(fields['data'])
    return SimpleNamespace(header=header, **fields)


def make_msg(flavor: str, kind: str, **fields: Any) -> Any:
    """A ``kind`` message of ``flavor`` with the given fields (see the module docstring).

    PointCloud2 ``fields`` are ``(name, offset, datatype, count)`` tuples.
    """
    builder = {'rosbags': _rosbags_msg, 'rclpy': _rclpy_msg, 'plain': _plain_msg}[flavor]
    return builder(kind, dict(fields))

"""Message ⇄ numpy conversions, duck-typed over rosbags dataclasses and rclpy messages.

Nothing here imports rclpy; rosbags only to (de)serialize CDR bytes (:mod:`.cdr`), Pillow only
to (de)compress images and transforms3d only for quaternions. Submodules:

* :mod:`~dsseg_core.msgs.image` — Image / CompressedImage ⇄ numpy, ``to_rgb``.
* :mod:`~dsseg_core.msgs.pointcloud` — PointCloud2 ⇄ numpy for any field layout.
* :mod:`~dsseg_core.msgs.camera_info` — CameraInfo → ``CameraModel``.
* :mod:`~dsseg_core.msgs.tf` — ``TransformTree`` and transform helpers.
* :mod:`~dsseg_core.msgs.buffer` — zero-copy ``data`` access, stamps.
* :mod:`~dsseg_core.msgs.cdr` — serialized bytes ⇄ messages (the nodes' raw topics).
"""

from __future__ import annotations

from dsseg_core.msgs.buffer import as_uint8, header_frame_id, ns_to_stamp, stamp_to_ns
from dsseg_core.msgs.camera_info import camera_model_from_camera_info
from dsseg_core.msgs.image import (
    compressed_format,
    compressed_to_numpy,
    encode_compressed,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image_fields,
    to_rgb,
)
from dsseg_core.msgs.pointcloud import (
    POINTFIELD_DTYPES,
    CloudArrays,
    FieldSpec,
    cloud_to_points,
    cloud_to_structured,
    pack_rgb,
    points_to_cloud_fields,
    require_points,
    unpack_rgb,
)
from dsseg_core.msgs.tf import (
    TransformTree,
    invert_transform,
    transform_from_xyz_quat,
    xyz_quat_from_transform,
)

__all__ = [
    'POINTFIELD_DTYPES',
    'CloudArrays',
    'FieldSpec',
    'TransformTree',
    'as_uint8',
    'camera_model_from_camera_info',
    'cloud_to_points',
    'cloud_to_structured',
    'compressed_format',
    'compressed_to_numpy',
    'encode_compressed',
    'header_frame_id',
    'image_to_numpy',
    'image_to_rgb',
    'invert_transform',
    'ns_to_stamp',
    'numpy_to_image_fields',
    'pack_rgb',
    'points_to_cloud_fields',
    'require_points',
    'stamp_to_ns',
    'to_rgb',
    'transform_from_xyz_quat',
    'unpack_rgb',
    'xyz_quat_from_transform',
]

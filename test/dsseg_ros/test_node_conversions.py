"""rclpy message builders: the direct paths give the same bytes as dsseg_core's builders."""

from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

from dsseg_core.msgs.image import image_to_numpy, numpy_to_image_fields
from dsseg_core.msgs.pointcloud import cloud_to_structured, points_to_cloud_fields
from dsseg_ros.conversions import cloud_msg, decode_mask, image_msg


@pytest.mark.parametrize('encoding,array', [
    ('mono8', np.arange(12, dtype=np.uint8).reshape(3, 4)),
    ('mono16', np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000),
    ('rgb8', np.arange(36, dtype=np.uint8).reshape(3, 4, 3)),
    ('32FC1', np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)),
    ('bgr8', np.arange(36, dtype=np.uint8).reshape(3, 4, 3)),  # the generic path
])
def test_image_msg_matches_numpy_to_image_fields(encoding, array) -> None:
    msg = image_msg(array, encoding, Header(frame_id='f'))
    ref = numpy_to_image_fields(array, encoding)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (
        ref['height'], ref['width'], ref['step'], ref['encoding'])
    assert bytes(msg.data) == bytes(ref['data'])
    np.testing.assert_array_equal(image_to_numpy(msg).reshape(array.shape), array)


def test_cloud_msg_direct_path_matches_points_to_cloud_fields() -> None:
    rng = np.random.default_rng(0)
    n = 100
    arrays = {'xyz': rng.normal(size=(n, 3)).astype(np.float32),
              'intensity': rng.uniform(size=n).astype(np.float32),
              'label': rng.integers(0, 5, n).astype(np.uint32),
              'confidence': rng.uniform(size=n).astype(np.float32),
              'rgb': rng.integers(0, 2**24, n).astype(np.uint32).view(np.float32)}
    msg = cloud_msg(arrays, Header(frame_id='velo'))
    ref = points_to_cloud_fields(arrays)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        tuple(f) for f in ref['fields']]
    assert (msg.point_step, msg.row_step, msg.width, msg.height) == (
        ref['point_step'], ref['row_step'], ref['width'], ref['height'])
    assert bytes(msg.data) == ref['data']
    got = cloud_to_structured(msg)
    np.testing.assert_array_equal(got['label'], arrays['label'])
    # A column that is not 4 bytes wide takes the generic path, same reader result.
    generic = cloud_msg({**arrays, 'ring': np.arange(n, dtype=np.uint16)}, Header())
    np.testing.assert_array_equal(cloud_to_structured(generic)['ring'], np.arange(n))


def test_decode_mask_rejects_colour_images() -> None:
    from dsseg_core.errors import MessageError

    with pytest.raises(MessageError, match='not a class-id encoding'):
        decode_mask(image_msg(np.zeros((2, 2, 3), np.uint8), 'rgb8', Header()), '/x/mask')

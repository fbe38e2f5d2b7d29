"""Image / CompressedImage ⇄ numpy: encodings, step padding, endianness, to_rgb, errors."""

from __future__ import annotations

import array
import io
import struct
import zlib

import numpy as np
import pytest
from msg_factories import make_msg
from PIL import Image as PILImage

from dsseg_core.errors import MessageError
from dsseg_core.msgs.image import (
    compressed_format,
    compressed_to_numpy,
    encode_compressed,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image_fields,
    to_rgb,
)

H, W = 5, 7


def sample(encoding: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(encoding.encode()))
    shapes = {
        'rgb8': ((H, W, 3), np.uint8), 'bgr8': ((H, W, 3), np.uint8),
        'rgba8': ((H, W, 4), np.uint8), 'bgra8': ((H, W, 4), np.uint8),
        'mono8': ((H, W), np.uint8), '8UC1': ((H, W), np.uint8),
        '8UC3': ((H, W, 3), np.uint8), 'mono16': ((H, W), np.uint16),
        '16UC1': ((H, W), np.uint16), '32FC1': ((H, W), np.float32),
    }
    shape, dtype = shapes[encoding]
    if dtype == np.float32:
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


ENCODINGS = ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', '8UC1', '8UC3', '16UC1',
             '32FC1']


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_round_trip_every_encoding(flavor: str, encoding: str) -> None:
    arr = sample(encoding)
    fields = numpy_to_image_fields(arr, encoding)
    assert isinstance(fields['data'], bytes)
    assert fields['step'] == W * arr.itemsize * (1 if arr.ndim == 2 else arr.shape[2])
    msg = make_msg(flavor, 'Image', frame_id='cam', **fields)
    out = image_to_numpy(msg)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    copied = image_to_numpy(msg, copy=True)
    assert copied.flags.c_contiguous and copied.flags.writeable
    np.testing.assert_array_equal(copied, arr)


@pytest.mark.parametrize('encoding', ['rgb8', 'mono16', '32FC1'])
def test_padded_step(flavor: str, encoding: str) -> None:
    arr = sample(encoding)
    row = arr[0].nbytes
    step = row + 13  # odd padding, filled with garbage
    data = b''.join(arr[r].tobytes() + b'\xee' * 13 for r in range(H))
    msg = make_msg(flavor, 'Image', height=H, width=W, encoding=encoding, is_bigendian=0,
                   step=step, data=data)
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_zero_copy_view_of_rosbags_data() -> None:
    arr = sample('rgb8')
    msg = make_msg('rosbags', 'Image', **numpy_to_image_fields(arr, 'rgb8'))
    assert np.shares_memory(image_to_numpy(msg), msg.data)
    assert not np.shares_memory(image_to_numpy(msg, copy=True), msg.data)


@pytest.mark.parametrize('encoding,dtype', [('mono16', '>u2'), ('16UC1', '>u2'),
                                            ('32FC1', '>f4')])
def test_big_endian(flavor: str, encoding: str, dtype: str) -> None:
    arr = sample(encoding)
    msg = make_msg(flavor, 'Image', height=H, width=W, encoding=encoding, is_bigendian=1,
                   step=W * arr.itemsize, data=arr.astype(dtype).tobytes())
    out = image_to_numpy(msg)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_rclpy_message_keeps_array_data() -> None:
    arr = sample('mono8')
    msg = make_msg('rclpy', 'Image', **numpy_to_image_fields(arr, 'mono8'))
    assert isinstance(msg.data, array.array)  # the premise of the rclpy flavour
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_to_rgb_channel_orders_and_mono() -> None:
    rgb = sample('rgb8')
    out = to_rgb(rgb, 'rgb8')
    np.testing.assert_array_equal(out, rgb)
    assert not np.shares_memory(out, rgb)
    np.testing.assert_array_equal(to_rgb(rgb[:, :, ::-1], 'bgr8'), rgb)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb(rgba, 'rgba8'), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((H, W, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb(bgra, 'bgra8'), rgb)
    mono = sample('mono8')
    out = to_rgb(mono, 'mono8')
    assert out.shape == (H, W, 3) and out.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], mono)


def test_to_rgb_mono16_scaling() -> None:
    img = np.array([[0, 255, 256, 65535], [4095, 1024, 16, 40000]], dtype=np.uint16)
    out = to_rgb(img, 'mono16')[:, :, 0]
    np.testing.assert_array_equal(out, [[0, 0, 1, 255], [15, 4, 0, 156]])
    out12 = to_rgb(img, 'mono16', bits=12)[:, :, 0]
    np.testing.assert_array_equal(out12, [[0, 15, 16, 255], [255, 64, 1, 255]])
    with pytest.raises(MessageError, match='bits'):
        to_rgb(img, 'mono16', bits=20)


def test_to_rgb_float_images() -> None:
    unit = np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(to_rgb(unit, '32FC1')[:, :, 0], [[0, 128], [255, 0]])
    depth = np.array([[2.0, 4.0], [np.inf, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_rgb(depth, '32FC1')[:, :, 0], [[0, 128], [0, 255]])


def test_image_to_rgb_from_bgr_message(flavor: str) -> None:
    rgb = sample('rgb8')
    msg = make_msg(flavor, 'Image', **numpy_to_image_fields(rgb[:, :, ::-1], 'bgr8'))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_decode_errors(flavor: str) -> None:
    arr = sample('rgb8')
    fields = numpy_to_image_fields(arr, 'rgb8')
    bayer = make_msg(flavor, 'Image', **{**fields, 'encoding': 'bayer_rggb8'})
    with pytest.raises(MessageError, match=r"'bayer_rggb8' is not supported.*rgb8.*mono16"):
        image_to_numpy(bayer)
    short_step = make_msg(flavor, 'Image', **{**fields, 'step': W * 3 - 1})
    with pytest.raises(MessageError, match=r'step=20 is smaller .* 21'):
        image_to_numpy(short_step)
    truncated = make_msg(flavor, 'Image', **{**fields, 'data': fields['data'][:-5]})
    with pytest.raises(MessageError, match=r'100 bytes, expected 105'):
        image_to_numpy(truncated)


def test_encode_errors() -> None:
    with pytest.raises(MessageError, match='rgb8.*uint8'):
        numpy_to_image_fields(np.zeros((H, W, 3), np.float32), 'rgb8')
    with pytest.raises(MessageError, match=r'\(H, W\)'):
        numpy_to_image_fields(np.zeros((H, W, 3), np.uint16), 'mono16')
    with pytest.raises(MessageError, match='not supported'):
        numpy_to_image_fields(np.zeros((H, W), np.uint8), 'yuv422_weird')
    with pytest.raises(MessageError, match='jpeg or png'):
        encode_compressed(np.zeros((H, W, 3), np.uint8), 'tiff')
    with pytest.raises(MessageError, match='JPEG takes'):
        encode_compressed(np.zeros((H, W), np.uint16), 'jpeg')


def test_compressed_png_exact_and_jpeg_close(flavor: str) -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (32, 48, 3)).astype(np.uint8)
    png = encode_compressed(rgb, 'png')
    assert png.startswith(b'\x89PNG')
    msg = make_msg(flavor, 'CompressedImage', format=compressed_format('png'), data=png)
    np.testing.assert_array_equal(compressed_to_numpy(msg), rgb)

    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[:, :, 0] = np.linspace(0, 255, 48).astype(np.uint8)
    smooth[:, :, 2] = 200
    jpg = encode_compressed(smooth, 'jpeg', quality=95)
    msg = make_msg(flavor, 'CompressedImage', format='rgb8; jpeg compressed bgr8', data=jpg)
    out = compressed_to_numpy(msg)
    assert out.shape == smooth.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).mean() < 3.0  # colours not swapped
    assert out[:, :, 2].mean() > 180 and out[:, :, 1].mean() < 20


def test_compressed_grey_and_16bit(flavor: str) -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    msg = make_msg(flavor, 'CompressedImage', format='png', data=encode_compressed(grey, 'png'))
    np.testing.assert_array_equal(compressed_to_numpy(msg, rgb=False), grey)
    np.testing.assert_array_equal(compressed_to_numpy(msg)[:, :, 1], grey)
    deep = (np.arange(48, dtype=np.uint16) * 1000).reshape(6, 8)
    msg = make_msg(flavor, 'CompressedImage', format='png', data=encode_compressed(deep, 'png'))
    out = compressed_to_numpy(msg, rgb=False)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, deep)


def test_compressed_depth_16uc1(flavor: str) -> None:
    depth = (np.arange(20, dtype=np.uint16) * 300).reshape(4, 5)
    buf = io.BytesIO()
    PILImage.fromarray(depth).save(buf, format='PNG')
    data = struct.pack('<iff', 0, 0.0, 0.0) + buf.getvalue()
    msg = make_msg(flavor, 'CompressedImage', format='16UC1; compressedDepth png', data=data)
    out = compressed_to_numpy(msg)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)


def test_compressed_garbage_is_an_error(flavor: str) -> None:
    msg = make_msg(flavor, 'CompressedImage', format='jpeg', data=b'not an image at all')
    with pytest.raises(MessageError, match="format 'jpeg'.*neither JPEG nor PNG"):
        compressed_to_numpy(msg)
    broken = make_msg(flavor, 'CompressedImage', format='jpeg',
                      data=encode_compressed(np.zeros((8, 8, 3), np.uint8), 'jpeg')[:20])
    with pytest.raises(MessageError, match='cannot decode'):
        compressed_to_numpy(broken)


def test_compressed_depth_32fc1_inverse_depth(flavor: str) -> None:
    # image_transport stores inv = quant_a / depth + quant_b as 16-bit PNG, 0 = no depth.
    inv = np.array([[100, 50], [25, 0]], dtype=np.uint16)
    buf = io.BytesIO()
    PILImage.fromarray(inv).save(buf, format='PNG')
    data = struct.pack('<iff', 1, 100.0, 0.0) + buf.getvalue()
    msg = make_msg(flavor, 'CompressedImage', format='32FC1; compressedDepth png', data=data)
    out = compressed_to_numpy(msg)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[1.0, 2.0], [4.0, np.nan]])

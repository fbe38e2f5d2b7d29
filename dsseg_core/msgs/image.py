"""sensor_msgs/Image and CompressedImage ⇄ numpy.

Decoding returns the image in its *native* layout, as a view of the message buffer when the
byte order is native (no per-pixel work at all, ``step`` padding handled with strides):

======================  ===============================  ==================================
encoding                array                            notes
======================  ===============================  ==================================
rgb8, bgr8              (H, W, 3) uint8                  channel order as in the message
rgba8, bgra8            (H, W, 4) uint8
mono8, 8UC1             (H, W) uint8
mono16, 16UC1           (H, W) uint16                    ``is_bigendian`` honoured
rgb16, bgr16, ...16     (H, W, 3|4) uint16
{8,16}{U,S}C{1..4},     (H, W) or (H, W, C)              OpenCV-style types; 32SC*, 32FC*,
32SC*, {32,64}FC*                                        64FC* too
======================  ===============================  ==================================

:func:`to_rgb` turns any of them into the (H, W, 3) uint8 RGB the models take:

* bgr/bgra are reordered, alpha dropped; mono is repeated on the 3 channels; ``8UC3`` and
  ``8UC4`` are taken as RGB(A) (OpenCV code usually means BGR: publish ``bgr8`` for that).
* 16-bit data is scaled by its bit depth: ``value >> (bits - 8)`` with ``bits=16`` by
  default, i.e. the full 0..65535 range maps to 0..255 with the same scale on every frame.
  Cameras that store 10/12-bit samples in 16-bit words should pass ``bits=10``/``12``
  (values above ``2**bits - 1`` saturate at 255).
* Float and signed images (depth, 32FC1): if every finite value lies in [0, 1] they are
  scaled by 255, otherwise min–max normalised over the finite values of that image;
  NaN/inf become 0.

Compressed images are decoded with Pillow (JPEG, PNG, and the ``compressedDepth`` PNG variant
of image_transport).
"""

from __future__ import annotations

import io
import re
import struct
import sys
from typing import Any

import numpy as np

from dsseg_core.errors import DependencyError, MessageError
from dsseg_core.msgs.buffer import as_uint8

__all__ = [
    'ENCODINGS',
    'compressed_format',
    'compressed_to_numpy',
    'encode_compressed',
    'encoding_layout',
    'image_to_numpy',
    'image_to_rgb',
    'numpy_to_image_fields',
    'to_rgb',
]

_NATIVE_BIG = sys.byteorder == 'big'

#: Named encodings → (numpy base dtype, channels).
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype('u1'), 3),
    'bgr8': (np.dtype('u1'), 3),
    'rgba8': (np.dtype('u1'), 4),
    'bgra8': (np.dtype('u1'), 4),
    'mono8': (np.dtype('u1'), 1),
    'mono16': (np.dtype('u2'), 1),
    'rgb16': (np.dtype('u2'), 3),
    'bgr16': (np.dtype('u2'), 3),
    'rgba16': (np.dtype('u2'), 4),
    'bgra16': (np.dtype('u2'), 4),
}
_CV_TYPE = re.compile(r'^(8|16|32|64)([USF])C([1-4])$')
_CV_DTYPES = {('8', 'U'): 'u1', ('8', 'S'): 'i1', ('16', 'U'): 'u2', ('16', 'S'): 'i2',
              ('32', 'S'): 'i4', ('32', 'F'): 'f4', ('64', 'F'): 'f8'}
_SUPPORTED = ', '.join(ENCODINGS) + ', and OpenCV types 8UC1..4, 8SC*, 16UC*, 16SC*, ' \
    '32SC*, 32FC*, 64FC* (e.g. 8UC3, 16UC1, 32FC1)'


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """``(base dtype, channels)`` of an Image encoding; MessageError lists what is supported."""
    enc = str(encoding).strip()
    if enc.lower() in ENCODINGS:
        return ENCODINGS[enc.lower()]
    m = _CV_TYPE.match(enc.upper())
    if m:
        dt = _CV_DTYPES.get((m.group(1), m.group(2)))
        if dt is not None:
            return np.dtype(dt), int(m.group(3))
    raise MessageError(
        f'Image.encoding {encoding!r} is not supported; supported encodings: {_SUPPORTED} '
        '(convert Bayer/YUV images with image_proc first)'
    )


def image_to_numpy(msg: Any, copy: bool = False) -> np.ndarray:
    """Decode a sensor_msgs/Image into ``(H, W)`` or ``(H, W, C)`` (see the module table).

    Without ``copy`` the result is a (possibly read-only, possibly strided) view of
    ``msg.data`` whenever the data is in native byte order; ``copy=True`` always returns a
    fresh C-contiguous array. Big-endian 16/32/64-bit data is converted to native order.
    """
    try:
        height, width, step = int(msg.height), int(msg.width), int(msg.step)
        encoding = str(msg.encoding)
        big = bool(msg.is_bigendian)
        data = msg.data
    except AttributeError as err:
        raise MessageError(f'not an Image-like message: {err}') from err
    base, channels = encoding_layout(encoding)
    buf = as_uint8(data, 'Image.data')
    row_bytes = width * channels * base.itemsize
    if step < row_bytes:
        raise MessageError(
            f'Image.step={step} is smaller than width*channels*bytes = {width}*{channels}*'
            f'{base.itemsize} = {row_bytes} for encoding {encoding!r}'
        )
    need = height * step
    if height and buf.size < (height - 1) * step + row_bytes:
        raise MessageError(
            f'Image.data has {buf.size} bytes, expected {need} (height={height} x '
            f'step={step}) for a {width}x{height} {encoding!r} image'
        )
    dtype = base.newbyteorder('>' if big else '<') if base.itemsize > 1 else base
    shape: tuple[int, ...] = (height, width) if channels == 1 else (height, width, channels)
    if height == 0 or width == 0:
        return np.zeros(shape, dtype=base)
    strides = (step, channels * base.itemsize, base.itemsize)[:len(shape)]
    view = np.ndarray(shape=shape, dtype=dtype, buffer=buf, strides=strides)
    if not dtype.isnative:
        return view.astype(base)
    if copy:
        return np.array(view, order='C', copy=True)
    return view


def _scale_to_uint8(arr: np.ndarray, bits: int | None) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        bits = 16 if bits is None else int(bits)
        if not 8 <= bits <= 16:
            raise MessageError(f'to_rgb: bits must be in 8..16 for 16-bit images, got {bits}')
        if bits == 16:
            return (arr >> 8).astype(np.uint8)
        return np.minimum(arr >> (bits - 8), 255).astype(np.uint8)
    # float / signed: [0, 1] → x255, else min-max over finite values.
    vals = arr.astype(np.float32, copy=False)
    finite = np.isfinite(vals)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(vals[finite].min()), float(vals[finite].max())
    if lo >= 0.0 and hi <= 1.0:
        scaled = vals * 255.0
    elif hi > lo:
        scaled = (vals - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(vals)
    scaled = np.where(finite, scaled, 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(array: np.ndarray, encoding: str, bits: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB (C-contiguous, a new array) from a decoded image.

    ``encoding`` is the message encoding the array came from; ``bits`` is the significant
    bit depth of 16-bit data (default 16). See the module docstring for the scaling rules.
    """
    base, channels = encoding_layout(encoding)
    arr = np.asarray(array)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    expect = 2 if channels == 1 else 3
    if arr.ndim != expect or (channels > 1 and arr.shape[2] != channels):
        raise MessageError(
            f'to_rgb: array of shape {arr.shape} does not match encoding {encoding!r} '
            f'({channels} channel(s))'
        )
    if channels == 2:
        raise MessageError(f'to_rgb: 2-channel encoding {encoding!r} has no RGB meaning')
    out = np.empty(arr.shape[:2] + (3,), dtype=np.uint8)
    if channels == 1:
        mono = _scale_to_uint8(arr, bits)
        for c in range(3):  # three 2-D copies: much faster than np.repeat / broadcasting
            out[:, :, c] = mono
        return out
    order = (2, 1, 0) if str(encoding).strip().lower().startswith('bgr') else (0, 1, 2)
    scaled = _scale_to_uint8(arr[:, :, :3], bits)
    if order == (0, 1, 2) and scaled.flags.c_contiguous:
        np.copyto(out, scaled)  # one memcpy
        return out
    for dst, src in enumerate(order):
        out[:, :, dst] = scaled[:, :, src]
    return out


def image_to_rgb(msg: Any, bits: int | None = None) -> np.ndarray:
    """``to_rgb(image_to_numpy(msg), msg.encoding)``: (H, W, 3) uint8 RGB from an Image."""
    return to_rgb(image_to_numpy(msg), str(msg.encoding), bits=bits)


def numpy_to_image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """Fields of a sensor_msgs/Image holding ``array``: ``dict(height, width, encoding,
    is_bigendian, step, data: bytes)``.

    The array dtype and channel count must match ``encoding`` (e.g. uint8 (H, W, 3) for
    rgb8/bgr8, uint8 (H, W) for mono8, uint16 (H, W) for mono16/16UC1, float32 (H, W) for
    32FC1); nothing is converted silently. ``data`` is ``bytes``: assigning bytes to an rclpy
    message is far faster than assigning a numpy array.
    """
    base, channels = encoding_layout(encoding)
    arr = np.asarray(array)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    shape_ok = arr.ndim == 2 if channels == 1 else (arr.ndim == 3 and arr.shape[2] == channels)
    if not shape_ok or arr.dtype.newbyteorder('=') != base:
        want = '(H, W)' if channels == 1 else f'(H, W, {channels})'
        raise MessageError(
            f'numpy_to_image_fields: encoding {encoding!r} needs a {base} array of shape '
            f'{want}, got {arr.dtype} {arr.shape}; convert the array (e.g. .astype) first'
        )
    if not arr.dtype.isnative:
        arr = arr.astype(base)
    height, width = arr.shape[:2]
    return {
        'height': int(height),
        'width': int(width),
        'encoding': str(encoding).strip(),
        'is_bigendian': int(_NATIVE_BIG and base.itemsize > 1),
        'step': int(width * channels * base.itemsize),
        'data': np.ascontiguousarray(arr).tobytes(),
    }


def _pil():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow is a core requirement
        raise DependencyError('Pillow is needed for compressed images: pip install pillow'
                              ) from err
    return Image


_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _pil_to_array(img: Any) -> np.ndarray:
    if img.mode in ('I;16', 'I;16B', 'I;16L'):
        return np.asarray(img).astype(np.uint16)
    if img.mode == 'I':
        arr = np.asarray(img)
        return arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr
    if img.mode in ('L', 'RGB', 'RGBA', 'F'):
        return np.asarray(img)
    return np.asarray(img.convert('RGBA' if 'A' in img.mode else 'RGB'))


def compressed_to_numpy(msg: Any, rgb: bool = True) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG, detected from the bytes).

    ``rgb=True`` (default) gives (H, W, 3) uint8 RGB (grey expanded, 16-bit PNG scaled as in
    :func:`to_rgb`); ``rgb=False`` gives the decoded layout ((H, W) uint8 / uint16, (H, W, 3)
    or (H, W, 4) uint8). ``compressedDepth`` messages always give depth: ``16UC1`` → (H, W)
    uint16, ``32FC1`` → (H, W) float32 metres with NaN where there was no depth.
    """
    fmt = str(getattr(msg, 'format', '') or '')
    raw = as_uint8(msg.data, 'CompressedImage.data')
    depth_quant: tuple[float, float] | None = None
    if 'compresseddepth' in fmt.lower().replace(' ', ''):
        if raw.size < 12:
            raise MessageError(f'CompressedImage (format {fmt!r}): compressedDepth data has '
                               f'{raw.size} bytes, shorter than its 12-byte header')
        _, quant_a, quant_b = struct.unpack('<iff', raw[:12].tobytes())
        depth_quant = (quant_a, quant_b)
        raw = raw[12:]
    head = raw[:8].tobytes()
    if not (head.startswith(_JPEG_MAGIC) or head.startswith(_PNG_MAGIC)):
        raise MessageError(
            f'CompressedImage (format {fmt!r}): data is neither JPEG nor PNG (starts with '
            f'{head.hex()}); supported formats: jpeg, png, compressedDepth png'
        )
    image_mod = _pil()
    try:
        with image_mod.open(io.BytesIO(raw)) as img:
            img.load()
            arr = _pil_to_array(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise MessageError(f'CompressedImage (format {fmt!r}): cannot decode: {err}') from err
    if depth_quant is not None:
        if '32fc1' in fmt.lower():
            inv = arr.astype(np.float32)
            with np.errstate(divide='ignore', invalid='ignore'):
                depth = depth_quant[0] / (inv - depth_quant[1])
            return np.where(arr == 0, np.float32(np.nan), depth).astype(np.float32)
        return arr
    if not rgb:
        return arr
    if arr.ndim == 2:
        return to_rgb(arr, 'mono16' if arr.dtype == np.uint16 else 'mono8')
    if arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, :3])
    return arr


def encode_compressed(array: np.ndarray, fmt: str = 'jpeg', quality: int = 90,
                      png_level: int = 1) -> bytes:
    """JPEG/PNG bytes of an RGB (H, W, 3) uint8, grey (H, W) uint8 or, PNG only, (H, W)
    uint16 / (H, W, 4) uint8 array. ``quality`` applies to JPEG, ``png_level`` (0..9) to PNG.

    Class-id masks must use PNG: JPEG changes ids at region edges.
    """
    kind = str(fmt).strip().lower()
    if kind in ('jpg', 'jpeg'):
        kind = 'jpeg'
    elif kind != 'png':
        raise MessageError(f'encode_compressed: format {fmt!r} is not supported (jpeg or png)')
    arr = np.asarray(array)
    ok = (arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)))
    if kind == 'png':
        ok = ok or (arr.dtype == np.uint16 and arr.ndim == 2) or (
            arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 4)
    if not ok:
        raise MessageError(
            f'encode_compressed({kind}): unsupported array {arr.dtype} {arr.shape}; JPEG takes '
            '(H, W, 3) or (H, W) uint8, PNG also (H, W) uint16 and (H, W, 4) uint8'
        )
    if not 1 <= int(quality) <= 100:
        raise MessageError(f'encode_compressed: quality must be in 1..100, got {quality}')
    image_mod = _pil()
    img = image_mod.fromarray(np.ascontiguousarray(arr))
    out = io.BytesIO()
    if kind == 'jpeg':
        img.save(out, format='JPEG', quality=int(quality))
    else:
        img.save(out, format='PNG', compress_level=int(png_level))
    return out.getvalue()


def compressed_format(fmt: str = 'jpeg', encoding: str = 'rgb8') -> str:
    """image_transport-style ``CompressedImage.format`` string, e.g. ``'rgb8; jpeg compressed
    bgr8'`` (the compressed stream always holds correctly ordered colours)."""
    kind = 'jpeg' if str(fmt).lower() in ('jpg', 'jpeg') else str(fmt).lower()
    base, channels = encoding_layout(encoding)
    if channels == 1:
        target = 'mono16' if base.itemsize == 2 else 'mono8'
    else:
        target = 'bgr16' if base.itemsize == 2 else 'bgr8'
    return f'{encoding}; {kind} compressed {target}'

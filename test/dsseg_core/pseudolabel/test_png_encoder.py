"""The fast PNG writer: lossless (read back by PIL and zlib), deterministic, compact."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.pseudolabel.dataset import encode_png
from dsseg_core.pseudolabel.png_encoder import (
    BLOCK_SYMBOLS,
    deflate_bound,
    deflate_rle,
    encode_png_fast,
)


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img)


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-3, 4, (61, 83, 3)), axis=1) % 256
    labels = np.full((40, 70), 255, np.uint8)
    labels[10:30, 5:40] = 3
    labels[25:38, 30:65] = 17
    return {
        'rgb_smooth': smooth.astype(np.uint8),
        'rgb_noise': rng.integers(0, 256, (37, 29, 3), dtype=np.uint8),  # stored blocks
        'rgba': rng.integers(0, 256, (9, 11, 4), dtype=np.uint8),
        'labels': labels,
        'grey_noise': rng.integers(0, 256, (50, 3), dtype=np.uint8),
        'uint16': rng.integers(0, 65536, (13, 17), dtype=np.uint16),
        'one_pixel': np.array([[7]], np.uint8),
        'one_rgb_pixel': np.array([[[1, 2, 3]]], np.uint8),
        'constant_tall': np.zeros((300, 1), np.uint8),
    }


@pytest.mark.parametrize('name', sorted(_images()))
def test_png_round_trip(kernel_path: str, name: str) -> None:
    arr = _images()[name]
    fast = encode_png_fast(arr)
    # without numba colour images go to PIL (a numpy Paeth filter is no faster)
    assert (fast is None) == (kernel_path == 'numpy' and arr.ndim == 3)
    data = encode_png(arr)
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    back = _decode(data)
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back.astype(arr.dtype), arr)
    assert encode_png(arr) == data  # deterministic
    if fast is not None:
        assert fast == data  # the dataset writer uses it


@pytest.mark.parametrize('name', ['rgb_smooth', 'labels'])
def test_png_chunks_and_checksums(kernel_path: str, name: str) -> None:
    arr = _images()[name]
    data = encode_png_fast(arr)
    if data is None:
        pytest.skip('colour images go to PIL without numba')
    pos, kinds = 8, []
    while pos < len(data):
        (n,) = struct.unpack('>I', data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + payload)
        kinds.append(kind)
        if kind == b'IDAT':
            raw = zlib.decompress(payload)  # checks the adler32 trailer too
            channels = arr.shape[2] if arr.ndim == 3 else 1
            assert len(raw) == arr.shape[0] * (1 + arr.shape[1] * channels)
        pos += 12 + n
    assert kinds == [b'IHDR', b'IDAT', b'IEND']


def test_unsupported_layouts_fall_back_to_pil() -> None:
    arr = np.arange(40, dtype=np.uint8).reshape(4, 5, 2)  # grey + alpha
    assert encode_png_fast(arr) is None
    assert encode_png_fast(np.zeros((4, 5), np.float32)) is None
    np.testing.assert_array_equal(_decode(encode_png(arr)), arr)


@pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed')
@pytest.mark.parametrize('runs', [True, False])
def test_deflate_round_trip(runs: bool) -> None:
    rng = np.random.default_rng(1)
    cases = [np.zeros(1, np.uint8), np.zeros(2, np.uint8), np.arange(3, dtype=np.uint8),
             np.zeros(70_000, np.uint8), rng.integers(0, 256, 100_000, dtype=np.uint8),
             np.repeat(rng.integers(0, 5, 5000, dtype=np.uint8), rng.integers(1, 400, 5000)),
             rng.integers(0, 3, BLOCK_SYMBOLS * 2 + 1, dtype=np.uint8)]
    for data in cases:
        buf = np.empty(deflate_bound(len(data)), np.uint8)
        n = deflate_rle(data, runs, buf)
        assert zlib.decompress(buf[:n].tobytes(), -15) == data.tobytes()
        if runs and len(data) >= 70_000 and data.max() == 0:
            assert n < 1000  # runs compress


def test_sample_images_are_compact(kernel_path: str, sample_bag) -> None:
    """Camera image and label map of the sample drive: smaller than PIL at zlib level 1."""
    from dsseg_core.frames import FramesConfig
    from dsseg_core.pseudolabel.pipeline import iter_bag_frames

    frame = next(iter(iter_bag_frames(sample_bag, FramesConfig(max_frames=1))))
    image = np.ascontiguousarray(frame.cameras[0].image[..., :3])
    fast = encode_png(image)
    np.testing.assert_array_equal(_decode(fast), image)
    pil = io.BytesIO()
    Image.fromarray(image).save(pil, format='PNG', compress_level=1)
    if kernel_path == 'jit':
        assert len(fast) < len(pil.getvalue())
    else:  # PIL itself
        assert fast == pil.getvalue()
    labels = np.full(image.shape[:2], 255, np.uint8)
    labels[150:, :] = 0
    labels[120:200, 300:500] = 4
    assert len(encode_png_fast(labels)) < 2000

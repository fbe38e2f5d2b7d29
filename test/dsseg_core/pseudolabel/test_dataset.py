"""Dataset writers: points files copied member by member equal np.savez byte for byte."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from dsseg_core.pseudolabel.dataset import read_npy_members, write_points


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 1000
    return {'xyz': rng.normal(size=(n, 3)).astype(np.float32),
            'intensity': rng.random(n).astype(np.float32),
            'labels': rng.integers(-1, 5, n).astype(np.int32),
            'segment': rng.integers(-1, 40, n).astype(np.int32),
            'in_image': rng.random(n) < 0.3,
            'uv': np.asfortranarray(rng.random((300, 2)).astype(np.float32))}


def test_raw_members_give_the_savez_bytes(tmp_path) -> None:
    arrays = _arrays()
    cache = tmp_path / 'cache.npz'
    np.savez(cache, **{('uv_0' if k == 'uv' else k): v for k, v in arrays.items()})
    raw = read_npy_members(cache, ['xyz', 'intensity', 'segment', 'uv_0'])
    assert raw['uv_0'].header() == ((300, 2), True, np.dtype(np.float32))
    np.testing.assert_array_equal(raw['segment'].array(), arrays['segment'])
    mixed = {'xyz': raw['xyz'], 'intensity': raw['intensity'], 'labels': arrays['labels'],
             'segment': raw['segment'], 'in_image': arrays['in_image'], 'uv': raw['uv_0']}
    write_points(tmp_path / 'copied.npz', **mixed)
    write_points(tmp_path / 'direct.npz', **arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    assert (tmp_path / 'copied.npz').read_bytes() == buf.getvalue()
    assert (tmp_path / 'direct.npz').read_bytes() == buf.getvalue()
    # compressed: the raw members are decoded and compressed like arrays
    write_points(tmp_path / 'z.npz', compress=True, **mixed)
    with np.load(tmp_path / 'z.npz') as data:
        for key, value in arrays.items():
            np.testing.assert_array_equal(data[key], value)


def test_corrupt_member_is_detected(tmp_path) -> None:
    cache = tmp_path / 'cache.npz'
    np.savez(cache, xyz=_arrays()['xyz'])
    data = bytearray(cache.read_bytes())
    data[200] ^= 0xFF  # inside xyz.npy's data
    cache.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile):
        read_npy_members(cache, ['xyz'])

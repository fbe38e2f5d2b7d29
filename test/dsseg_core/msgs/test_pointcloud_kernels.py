"""Numba PointCloud2 kernels: gather (cloud_to_points) and labelled-cloud packing vs numpy."""

from __future__ import annotations

import numpy as np
import pytest
from msg_factories import make_msg

import dsseg_core.msgs.pointcloud as pointcloud
from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.msgs.pointcloud import POINTFIELD_DTYPES, CloudArrays, cloud_to_points
from dsseg_core.msgs.pointcloud_kernels import pack_labelled_points

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed')

# (intensity datatype or None, ring datatype or None)
COLUMNS = [(7, 4), (7, None), (None, None), (None, 2), (2, 4), (4, 5), (8, 6), (5, 3),
           (7, 1)]


def _cloud(flavor: str, n: int, intensity: int | None, ring: int | None, *, height: int = 1,
           row_pad: int = 0, nan_every: int = 0, seed: int = 0, extra: bool = False):
    """x, y, z float32 at 0/4/8, then the optional columns, padded to a 4-byte multiple."""
    rng = np.random.default_rng(seed)
    specs = [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1)]
    offset = 12
    cols = {c: rng.normal(scale=20.0, size=n).astype(np.float32) for c in 'xyz'}
    for name, code in (('intensity', intensity), ('ring', ring), ('extra', 7 if extra else None)):
        if code is None:
            continue
        dt = POINTFIELD_DTYPES[code]
        offset = -(-offset // dt.itemsize) * dt.itemsize
        count = 2 if name == 'extra' else 1
        specs.append((name, offset, code, count))
        if dt.kind == 'f':
            cols[name] = rng.random((n, count)).astype(dt) * 100
        else:
            info = np.iinfo(dt)
            cols[name] = rng.integers(info.min, info.max, (n, count), dtype=dt, endpoint=True)
        offset += dt.itemsize * count
    if nan_every:
        cols['x'][::nan_every] = np.nan
        cols['z'][3::nan_every] = np.inf
    point_step = -(-(offset + 3) // 4) * 4
    width = n // height
    row_step = width * point_step + row_pad
    data = bytearray(height * row_step)
    dtype = np.dtype({'names': [s[0] for s in specs],
                      'formats': [(POINTFIELD_DTYPES[s[2]], (s[3],)) if s[3] > 1
                                  else POINTFIELD_DTYPES[s[2]] for s in specs],
                      'offsets': [s[1] for s in specs], 'itemsize': point_step})
    for r in range(height):
        rows = np.ndarray((width,), dtype, data, r * row_step)
        for name, *_ in specs:
            rows[name] = cols[name][r * width:(r + 1) * width].reshape(rows[name].shape)
    return make_msg(flavor, 'PointCloud2', frame_id='lidar', height=height, width=width,
                    fields=specs, is_bigendian=False, point_step=point_step,
                    row_step=row_step, data=bytes(data))


def _both(monkeypatch: pytest.MonkeyPatch, fn) -> tuple[CloudArrays, CloudArrays]:
    monkeypatch.setenv('DSSEG_JIT', '1')
    jit = fn()
    monkeypatch.setenv('DSSEG_JIT', '0')
    ref = fn()
    return jit, ref


def _assert_same(a: CloudArrays, b: CloudArrays) -> None:
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert a.xyz.dtype == b.xyz.dtype == np.float32 and a.xyz.flags.c_contiguous
    for x, y in ((a.intensity, b.intensity), (a.ring, b.ring), (a.source_index, b.source_index)):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
    assert a.extra.keys() == b.extra.keys()
    for name in a.extra:
        assert a.extra[name].dtype == b.extra[name].dtype
        np.testing.assert_array_equal(a.extra[name], b.extra[name])
    assert (a.dropped_invalid, a.height, a.width) == (b.dropped_invalid, b.height, b.width)


@pytest.mark.parametrize(('intensity', 'ring'), COLUMNS)
def test_gather_kernel_equals_numpy(monkeypatch, flavor: str, intensity, ring) -> None:
    msg = _cloud(flavor, 3000, intensity, ring, extra=True)
    for fields in (('x', 'y', 'z'), ('x', 'y', 'z', 'extra'), None):
        jit, ref = _both(monkeypatch, lambda f=fields: cloud_to_points(msg, fields=f))
        _assert_same(jit, ref)


@pytest.mark.parametrize('height,row_pad', [(1, 0), (4, 0), (4, 12), (50, 4)])
def test_gather_kernel_organized_padded_and_nan(monkeypatch, flavor: str, height: int,
                                                row_pad: int) -> None:
    msg = _cloud(flavor, 1000, 7, 4, height=height, row_pad=row_pad, nan_every=7, extra=True)
    jit, ref = _both(monkeypatch, lambda: cloud_to_points(msg, fields=None))
    _assert_same(jit, ref)
    assert ref.dropped_invalid > 100 and ref.source_index is not None


def test_gather_kernel_is_used_and_big_endian_is_not(monkeypatch) -> None:
    calls = []
    kernel = pointcloud.gather_points
    monkeypatch.setattr(pointcloud, 'gather_points', lambda *a: calls.append(1) or kernel(*a))
    monkeypatch.setenv('DSSEG_JIT', '1')
    cloud_to_points(_cloud('plain', 100, 7, 4))
    assert calls == [1]
    big = _cloud('plain', 100, 7, 4)
    big.is_bigendian = True  # same bytes read big-endian: the numpy path
    cloud_to_points(big)
    assert calls == [1]
    monkeypatch.setenv('DSSEG_JIT', '0')
    cloud_to_points(_cloud('plain', 100, 7, 4))
    assert calls == [1]


def test_pack_labelled_points_equals_numpy_stack() -> None:
    rng = np.random.default_rng(0)
    n, num_classes = 5000, 20
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    intensity = rng.random(n).astype(np.float32)
    labels = rng.integers(-1, 25, n).astype(np.int32)  # -1 and ids >= num_classes: unknown
    confidence = rng.random(n).astype(np.float32)
    table = rng.integers(0, 2**24, num_classes + 1).astype(np.uint32)
    bits = labels.view(np.uint32)
    expected = np.stack((*xyz.view(np.uint32).T, intensity.view(np.uint32), bits,
                         confidence.view(np.uint32),
                         table.take(np.minimum(bits, np.uint32(num_classes)))), axis=1)
    out = np.zeros((n, 7), np.uint32)
    assert pack_labelled_points(xyz.view(np.uint32), intensity.view(np.uint32), bits,
                                confidence.view(np.uint32), table, out)
    np.testing.assert_array_equal(out, expected)
    for bad in (np.nan, np.inf, -np.inf):
        xyz[17, 1] = bad
        assert not pack_labelled_points(xyz.view(np.uint32), intensity.view(np.uint32), bits,
                                        confidence.view(np.uint32), table, out)
        xyz[17, 1] = 0.0


def _fixed_cloud(point_step: int, intensity_at: int | None, ring_at: int | None, n: int,
                 shift: int = 0, nan_every: int = 0, seed: int = 0):
    """A plain message with x, y, z float32 at 0/4/8, float32 intensity and uint16 ring at the
    given offsets, other bytes random; ``data`` starts ``shift`` bytes into its buffer."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, n * point_step + shift, dtype=np.uint8)
    rows = raw[shift:].reshape(n, point_step)
    xyz = rng.normal(scale=30.0, size=(n, 3)).astype(np.float32)
    if nan_every:
        xyz[::nan_every, 0] = np.nan
        xyz[5::nan_every, 2] = -np.inf
    rows[:, :12] = xyz.view(np.uint8).reshape(n, 12)
    specs = [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1)]
    if intensity_at is not None:
        inten = rng.random(n).astype(np.float32)
        rows[:, intensity_at:intensity_at + 4] = inten.view(np.uint8).reshape(n, 4)
        specs.append(('intensity', intensity_at, 7, 1))
    if ring_at is not None:
        ring = rng.integers(0, 2**16, n).astype(np.uint16)
        rows[:, ring_at:ring_at + 2] = ring.view(np.uint8).reshape(n, 2)
        specs.append(('ring', ring_at, 4, 1))
    from types import SimpleNamespace

    return SimpleNamespace(height=1, width=n, is_bigendian=False, point_step=point_step,
                           row_step=n * point_step, data=raw[shift:], is_dense=False,
                           fields=[SimpleNamespace(name=a, offset=b, datatype=c, count=d)
                                   for a, b, c, d in specs])


@pytest.mark.parametrize('layout', sorted(pointcloud.FIXED_LAYOUTS, key=str))
@pytest.mark.parametrize('shift', [0, 4, 1])  # aligned, 4-aligned, unaligned buffer
def test_fixed_layout_kernels_equal_numpy(monkeypatch, layout, shift: int) -> None:
    point_step, intensity_at, ring_at = layout
    calls = []
    kernel = pointcloud.FIXED_LAYOUTS[layout]
    monkeypatch.setitem(pointcloud.FIXED_LAYOUTS, layout,
                        lambda *a: calls.append(1) or kernel(*a))
    for nan_every in (0, 13):
        msg = _fixed_cloud(point_step, intensity_at, ring_at, 2000, shift, nan_every)
        jit, ref = _both(monkeypatch, lambda m=msg: cloud_to_points(m))
        _assert_same(jit, ref)
        assert (ref.dropped_invalid > 0) == bool(nan_every)
    assert calls == [1, 1]  # the fixed-layout kernel ran (not the generic one)

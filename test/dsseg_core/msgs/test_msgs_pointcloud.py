"""PointCloud2 ⇄ numpy: layouts, endianness, padding, NaNs, errors, real KITTI scan."""

from __future__ import annotations

import numpy as np
import pytest
from msg_factories import make_msg

from dsseg_core.errors import MessageError
from dsseg_core.msgs.pointcloud import (
    POINTFIELD_DTYPES,
    FieldSpec,
    cloud_to_points,
    cloud_to_structured,
    pack_rgb,
    points_to_cloud_fields,
    require_points,
    unpack_rgb,
)


def encode_cloud(fields: list[tuple[str, int, int, int]], values: dict[str, np.ndarray],
                 point_step: int, height: int = 1, width: int | None = None,
                 row_pad: int = 0, big: bool = False, fill: int = 0xAB) -> tuple[bytes, int]:
    """Independent test-side encoder: pack ``values`` at the given offsets, byte by byte.

    Padding bytes (between fields, after each point, after each row) are set to ``fill`` so a
    decoder that reads them shows up. Returns ``(data, row_step)``.
    """
    n = len(next(iter(values.values())))
    width = n // height if width is None else width
    row_step = width * point_step + row_pad
    out = bytearray([fill]) * (height * row_step)
    order = '>' if big else '<'
    for name, offset, datatype, count in fields:
        dt = POINTFIELD_DTYPES[datatype].newbyteorder(order)
        col = np.asarray(values[name]).reshape(n, count).astype(dt)
        raw = col.tobytes()
        size = dt.itemsize * count
        for i in range(n):  # test code: clarity over speed
            r, c = divmod(i, width)
            start = r * row_step + c * point_step + offset
            out[start:start + size] = raw[i * size:(i + 1) * size]
    return bytes(out), row_step


def cloud_msg(flavor: str, fields, values, point_step, height=1, row_pad=0, big=False):
    data, row_step = encode_cloud(fields, values, point_step, height=height, row_pad=row_pad,
                                  big=big)
    n = len(next(iter(values.values())))
    return make_msg(flavor, 'PointCloud2', frame_id='lidar', stamp_ns=5, height=height,
                    width=n // height, fields=fields, is_bigendian=big,
                    point_step=point_step, row_step=row_step, data=data)


XYZI_RING = [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('intensity', 16, 7, 1),
             ('ring', 20, 4, 1)]


def test_padded_point_step_xyzi_ring(flavor: str, kernel_path: str) -> None:
    rng = np.random.default_rng(0)
    n = 37
    vals = {'x': rng.normal(size=n), 'y': rng.normal(size=n), 'z': rng.normal(size=n),
            'intensity': rng.random(n), 'ring': rng.integers(0, 64, n)}
    msg = cloud_msg(flavor, XYZI_RING, vals, point_step=32)
    out = cloud_to_points(msg)
    assert out.xyz.shape == (n, 3) and out.xyz.dtype == np.float32
    assert out.xyz.flags.c_contiguous
    np.testing.assert_array_equal(out.xyz[:, 0], vals['x'].astype(np.float32))
    np.testing.assert_array_equal(out.xyz[:, 2], vals['z'].astype(np.float32))
    np.testing.assert_array_equal(out.intensity, vals['intensity'].astype(np.float32))
    assert out.ring.dtype == np.int32
    np.testing.assert_array_equal(out.ring, vals['ring'])
    assert out.dropped_invalid == 0 and out.source_index is None
    assert out.extra == {}


@pytest.mark.parametrize('big', [False, True])
def test_every_datatype_count_and_odd_offsets(flavor: str, big: bool, kernel_path: str) -> None:
    """All 8 PointField datatypes, a count=3 field, unaligned offsets, odd point_step."""
    rng = np.random.default_rng(1)
    n = 11
    fields = [('x', 1, 8, 1), ('y', 9, 8, 1), ('z', 17, 8, 1),  # float64, unaligned
              ('i8', 25, 1, 1), ('u8', 26, 2, 1), ('i16', 27, 3, 1), ('u16', 29, 4, 1),
              ('i32', 31, 5, 1), ('u32', 35, 6, 1), ('f32', 39, 7, 1),
              ('normal', 43, 7, 3)]
    point_step = 59  # 4 padding bytes after the last field
    vals = {
        'x': rng.normal(size=n), 'y': rng.normal(size=n), 'z': rng.normal(size=n),
        'i8': rng.integers(-128, 128, n), 'u8': rng.integers(0, 256, n),
        'i16': rng.integers(-2**15, 2**15, n), 'u16': rng.integers(0, 2**16, n),
        'i32': rng.integers(-2**31, 2**31, n), 'u32': rng.integers(0, 2**32, n),
        'f32': rng.normal(size=n), 'normal': rng.normal(size=(n, 3)),
    }
    msg = cloud_msg(flavor, fields, vals, point_step, big=big)
    out = cloud_to_points(msg, fields=None)
    np.testing.assert_array_equal(out.xyz, np.stack([vals[c] for c in 'xyz'], 1)
                                  .astype(np.float32))
    assert out.intensity is None and out.ring is None
    assert set(out.extra) == {'i8', 'u8', 'i16', 'u16', 'i32', 'u32', 'f32', 'normal'}
    for name, code, *_ in [(f[0], f[2]) for f in fields[3:]]:
        col = out.extra[name]
        assert col.dtype == POINTFIELD_DTYPES[code], name  # native byte order
        np.testing.assert_array_equal(col, np.asarray(vals[name]).astype(col.dtype))
    assert out.extra['normal'].shape == (n, 3)

    arr = cloud_to_structured(msg)
    assert arr.shape == (n,) and arr.dtype.itemsize == point_step
    np.testing.assert_array_equal(arr['u32'], vals['u32'])
    np.testing.assert_array_equal(arr['normal'], vals['normal'].astype(np.float32))

    only = cloud_to_points(msg, fields=('x', 'y', 'z', 'u16'))
    assert set(only.extra) == {'u16'}


def test_organized_cloud_with_nans_and_padded_rows(flavor: str, kernel_path: str) -> None:
    h, w = 4, 6
    n = h * w
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    xyz[[3, 10, 17], 0] = np.nan
    xyz[5, 2] = np.inf
    xyz[11, 1] = -np.inf
    vals = {'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2],
            'intensity': np.arange(n, dtype=np.float32)}
    fields = [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('intensity', 12, 7, 1)]
    msg = cloud_msg(flavor, fields, vals, point_step=16, height=h, row_pad=7)
    out = cloud_to_points(msg)
    bad = {3, 10, 17, 5, 11}
    keep = np.array([i for i in range(n) if i not in bad])
    assert out.dropped_invalid == len(bad)
    assert len(out) == n - len(bad)
    assert (out.height, out.width) == (h, w)
    np.testing.assert_array_equal(out.source_index, keep)
    np.testing.assert_array_equal(out.xyz, xyz[keep])
    np.testing.assert_array_equal(out.intensity, keep.astype(np.float32))

    grid = cloud_to_structured(msg, keep_organized=True)
    assert grid.shape == (h, w)
    np.testing.assert_array_equal(grid['intensity'].ravel(), np.arange(n, dtype=np.float32))


def test_big_endian_float32_xyz_and_aliases(flavor: str, kernel_path: str) -> None:
    n = 9
    rng = np.random.default_rng(3)
    vals = {'x': rng.normal(size=n), 'y': rng.normal(size=n), 'z': rng.normal(size=n),
            'reflectance': rng.integers(0, 255, n), 'laser_id': rng.integers(0, 32, n)}
    fields = [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('reflectance', 12, 2, 1),
              ('laser_id', 14, 4, 1)]
    msg = cloud_msg(flavor, fields, vals, point_step=16, big=True)
    out = cloud_to_points(msg)
    np.testing.assert_array_equal(out.xyz, np.stack([vals[c] for c in 'xyz'], 1)
                                  .astype(np.float32))
    assert out.xyz.dtype == np.dtype('float32')  # native, not '>f4'
    np.testing.assert_array_equal(out.intensity, vals['reflectance'].astype(np.float32))
    np.testing.assert_array_equal(out.ring, vals['laser_id'])


def test_structured_is_zero_copy_for_rosbags_messages() -> None:
    vals = {c: np.arange(5, dtype=np.float32) + k for k, c in enumerate('xyz')}
    msg = cloud_msg('rosbags', XYZI_RING[:3], vals, point_step=12)
    arr = cloud_to_structured(msg)
    assert np.shares_memory(arr, msg.data)
    np.testing.assert_array_equal(arr['z'], vals['z'])


def test_builder_round_trip_labelled_cloud(flavor: str) -> None:
    rng = np.random.default_rng(4)
    n = 50
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    arrays = {'xyz': xyz, 'intensity': rng.random(n).astype(np.float32),
              'label': rng.integers(0, 20, n).astype(np.uint8),
              'confidence': rng.random(n).astype(np.float32), 'rgb': rgb,
              'ring': rng.integers(0, 64, n).astype(np.uint16)}
    built = points_to_cloud_fields(arrays)
    names = [f.name for f in built['fields']]
    assert names == ['x', 'y', 'z', 'intensity', 'label', 'confidence', 'rgb', 'ring']
    assert all(isinstance(f, FieldSpec) for f in built['fields'])
    assert [f.offset for f in built['fields'][:3]] == [0, 4, 8]
    for f in built['fields']:  # natural alignment
        assert f.offset % POINTFIELD_DTYPES[f.datatype].itemsize == 0
    assert built['point_step'] % 4 == 0
    assert len(built['data']) == built['row_step'] == n * built['point_step']
    assert built['is_dense'] is True and built['height'] == 1 and built['width'] == n
    assert isinstance(built['data'], bytes)

    msg = make_msg(flavor, 'PointCloud2', height=built['height'], width=built['width'],
                   fields=[tuple(f) for f in built['fields']],
                   is_bigendian=built['is_bigendian'], point_step=built['point_step'],
                   row_step=built['row_step'], data=built['data'])
    out = cloud_to_points(msg, fields=('label', 'confidence', 'rgb'))
    np.testing.assert_array_equal(out.xyz, xyz)
    np.testing.assert_array_equal(out.intensity, arrays['intensity'])
    np.testing.assert_array_equal(out.ring, arrays['ring'])
    np.testing.assert_array_equal(out.extra['label'], arrays['label'])
    assert out.extra['label'].dtype == np.uint8
    np.testing.assert_array_equal(out.extra['confidence'], arrays['confidence'])
    np.testing.assert_array_equal(unpack_rgb(out.extra['rgb']), rgb)


def test_pack_rgb_bits() -> None:
    packed = pack_rgb(np.array([[255, 0, 0], [0, 128, 1]], dtype=np.uint8))
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(packed.view(np.uint32), [0xFF0000, 0x008001])
    with pytest.raises(MessageError):
        pack_rgb(np.zeros((3, 3), np.float32))


def test_builder_organized_and_non_dense() -> None:
    xyz = np.zeros((6, 3), np.float32)
    xyz[2, 1] = np.nan
    built = points_to_cloud_fields({'xyz': xyz, 'label': np.arange(6, dtype=np.uint32)},
                                   height=2)
    assert (built['height'], built['width']) == (2, 3)
    assert built['is_dense'] is False
    assert built['row_step'] == 3 * built['point_step']
    with pytest.raises(MessageError, match='rows'):
        points_to_cloud_fields({'xyz': xyz}, height=4)


def test_builder_rejects_bad_columns() -> None:
    xyz = np.zeros((4, 3), np.float32)
    with pytest.raises(MessageError, match='int64'):
        points_to_cloud_fields({'xyz': xyz, 'label': np.zeros(4, np.int64)})
    with pytest.raises(MessageError, match='3 rows'):
        points_to_cloud_fields({'xyz': xyz, 'intensity': np.zeros(3, np.float32)})
    with pytest.raises(MessageError, match='xyz'):
        points_to_cloud_fields({'intensity': np.zeros(3, np.float32)})


def test_missing_xyz_field_is_an_error(flavor: str, kernel_path: str) -> None:
    vals = {'x': np.zeros(3), 'y': np.zeros(3), 'intensity': np.zeros(3)}
    fields = [('x', 0, 7, 1), ('y', 4, 7, 1), ('intensity', 8, 7, 1)]
    msg = cloud_msg(flavor, fields, vals, point_step=12)
    with pytest.raises(MessageError, match=r'no z field .*x, y, intensity'):
        cloud_to_points(msg)


def test_size_and_layout_errors(flavor: str, kernel_path: str) -> None:
    vals = {c: np.zeros(4) for c in 'xyz'}
    data, _ = encode_cloud(XYZI_RING[:3], vals, 12)
    short = make_msg(flavor, 'PointCloud2', height=1, width=4, fields=XYZI_RING[:3],
                     is_bigendian=False, point_step=12, row_step=48, data=data[:40])
    with pytest.raises(MessageError, match='40 bytes, expected at least 48'):
        cloud_to_points(short)
    outside = make_msg(flavor, 'PointCloud2', height=1, width=4,
                       fields=[*XYZI_RING[:3], ('intensity', 10, 7, 1)],
                       is_bigendian=False, point_step=12, row_step=48, data=data)
    with pytest.raises(MessageError, match='intensity.*point_step=12'):
        cloud_to_points(outside)
    bad_type = make_msg(flavor, 'PointCloud2', height=1, width=4,
                        fields=[*XYZI_RING[:2], ('z', 8, 9, 1)],
                        is_bigendian=False, point_step=12, row_step=48, data=data)
    with pytest.raises(MessageError, match='unknown datatype 9'):
        cloud_to_points(bad_type)
    ok = make_msg(flavor, 'PointCloud2', height=1, width=4, fields=XYZI_RING[:3],
                  is_bigendian=False, point_step=12, row_step=48, data=data)
    with pytest.raises(MessageError, match="no field 'label'"):
        cloud_to_points(ok, fields=('x', 'y', 'z', 'label'))


def test_empty_and_all_nan_clouds(flavor: str, kernel_path: str) -> None:
    empty = make_msg(flavor, 'PointCloud2', height=1, width=0, fields=XYZI_RING,
                     is_bigendian=False, point_step=32, row_step=0, data=b'')
    out = cloud_to_points(empty, fields=None)
    assert out.xyz.shape == (0, 3) and out.dropped_invalid == 0
    assert out.intensity.shape == (0,) and out.ring.dtype == np.int32
    assert out.extra == {}
    assert cloud_to_structured(empty).shape == (0,)
    with pytest.raises(MessageError, match='no valid points'):
        require_points(out, topic='/lidar')

    vals = {c: np.full(5, np.nan) for c in 'xyz'}
    nan_msg = cloud_msg(flavor, XYZI_RING[:3], vals, point_step=12)
    out = cloud_to_points(nan_msg)
    assert len(out) == 0 and out.dropped_invalid == 5
    with pytest.raises(MessageError, match=r'/lidar: no valid points .*5 dropped'):
        require_points(out, topic='/lidar')
    vals = {c: np.ones(5) for c in 'xyz'}
    assert len(require_points(cloud_to_points(cloud_msg(flavor, XYZI_RING[:3], vals, 12)),
                              min_points=5)) == 5


def test_real_kitti_velodyne_scan(kitti_raw_dir, kernel_path: str) -> None:
    path = kitti_raw_dir / 'velodyne_points' / 'data' / '0000000000.bin'
    raw = path.read_bytes()
    n = len(raw) // 16
    msg = make_msg('rosbags', 'PointCloud2', frame_id='velo_link', height=1, width=n,
                   fields=[('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1),
                           ('intensity', 12, 7, 1)],
                   is_bigendian=False, point_step=16, row_step=16 * n, data=raw)
    out = cloud_to_points(msg)
    ref = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    assert len(out) + out.dropped_invalid == n == ref.shape[0]
    assert out.dropped_invalid == 0
    np.testing.assert_array_equal(out.xyz, ref[:, :3])
    np.testing.assert_array_equal(out.intensity, ref[:, 3])
    assert 0.0 <= out.intensity.min() and out.intensity.max() <= 1.0


@pytest.mark.parametrize('big', [False, True])
def test_nan_rows_dropped_from_multi_count_extras(flavor: str, big: bool,
                                                  kernel_path: str) -> None:
    n = 8
    xyz = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    xyz[[1, 6], 1] = np.nan
    vals = {'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2],
            'normal': np.arange(n * 3, dtype=np.float32).reshape(n, 3) * 10,
            'i16': np.arange(n) - 4}
    fields = [('x', 0, 8, 1), ('y', 8, 8, 1), ('z', 16, 8, 1), ('normal', 24, 7, 3),
              ('i16', 36, 3, 1)]
    msg = cloud_msg(flavor, fields, vals, point_step=40, big=big)
    out = cloud_to_points(msg, fields=None)
    keep = [0, 2, 3, 4, 5, 7]
    assert out.dropped_invalid == 2
    np.testing.assert_array_equal(out.xyz, xyz[keep].astype(np.float32))
    assert out.extra['normal'].dtype == np.float32 and out.extra['normal'].shape == (6, 3)
    np.testing.assert_array_equal(out.extra['normal'], vals['normal'][keep])
    np.testing.assert_array_equal(out.extra['i16'], vals['i16'][keep])
    assert out.extra['i16'].dtype == np.int16

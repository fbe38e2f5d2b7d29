"""sensor_msgs/PointCloud2 ⇄ numpy, for any field layout.

Reading works on rosbags dataclasses and rclpy messages alike (duck typing: ``height``,
``width``, ``fields`` with ``name``/``offset``/``datatype``/``count``, ``is_bigendian``,
``point_step``, ``row_step``, ``data``). Every column is read through a strided view of the
message buffer (``np.ndarray(buffer=data, offset=field.offset, strides=(row_step,
point_step))``), so arbitrary offsets, ``point_step`` padding, padded rows, organized clouds
and big-endian data cost one copy per requested column and nothing else.

Unless ``DSSEG_JIT=0``, :func:`cloud_to_points` reads x, y, z, intensity and ring in one pass
over the points with a numba kernel (:mod:`dsseg_core.msgs.pointcloud_kernels`; same arrays)
when x, y, z are native-endian float32.

Writing: :func:`points_to_cloud_fields` builds the fields of a PointCloud2 (x, y, z float32 at
offsets 0/4/8, then the other arrays in the order given) as a plain dict that the bag
converter and the ROS nodes turn into a message of their library.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from dsseg_core.errors import MessageError
from dsseg_core.jit import jit_enabled
from dsseg_core.msgs.buffer import as_uint8
from dsseg_core.msgs.pointcloud_kernels import (
    FIXED_LAYOUTS,
    compact_finite,
    gather_point_rows,
    gather_points,
)

__all__ = [
    'INTENSITY_NAMES',
    'POINTFIELD_DTYPES',
    'RING_NAMES',
    'CloudArrays',
    'FieldSpec',
    'cloud_dtype',
    'cloud_fields',
    'cloud_to_points',
    'cloud_to_structured',
    'datatype_name',
    'pack_rgb',
    'points_to_cloud_fields',
    'require_points',
    'unpack_rgb',
]

log = logging.getLogger(__name__)

#: PointField datatype constant → numpy dtype (byte order applied per message).
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype('i1'),  # INT8
    2: np.dtype('u1'),  # UINT8
    3: np.dtype('i2'),  # INT16
    4: np.dtype('u2'),  # UINT16
    5: np.dtype('i4'),  # INT32
    6: np.dtype('u4'),  # UINT32
    7: np.dtype('f4'),  # FLOAT32
    8: np.dtype('f8'),  # FLOAT64
}
_DATATYPE_OF: dict[tuple[str, int], int] = {
    (dt.kind, dt.itemsize): code for code, dt in POINTFIELD_DTYPES.items()
}
_DATATYPE_NAMES = {1: 'INT8', 2: 'UINT8', 3: 'INT16', 4: 'UINT16', 5: 'INT32', 6: 'UINT32',
                   7: 'FLOAT32', 8: 'FLOAT64'}

#: Field names read as intensity / ring, first match wins.
INTENSITY_NAMES: tuple[str, ...] = ('intensity', 'i', 'reflectance')
RING_NAMES: tuple[str, ...] = ('ring', 'channel', 'laser_id', 'beam')

_NATIVE_BIG = sys.byteorder == 'big'


class FieldSpec(NamedTuple):
    """One PointField: ``name``, byte ``offset`` in a point, ``datatype`` code, ``count``.

    ``FieldSpec._asdict()`` gives the keyword arguments of a PointField constructor.
    """

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass
class CloudArrays:
    """Columns decoded from a PointCloud2 with the invalid (NaN/inf xyz) points removed.

    ``source_index`` gives, for each kept point, its index in the flattened message (row-major
    for organized clouds); it is ``None`` when no point was dropped.
    """

    xyz: np.ndarray  # (N, 3) float32, C-contiguous
    intensity: np.ndarray | None = None  # (N,) float32
    ring: np.ndarray | None = None  # (N,) int32
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # (N,) or (N, count), native
    dropped_invalid: int = 0
    height: int = 1  # of the message (organized clouds have height > 1)
    width: int = 0
    source_index: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


class _Layout(NamedTuple):
    buf: np.ndarray
    height: int
    width: int
    point_step: int
    row_step: int
    byteorder: str  # '<' or '>'
    fields: dict[str, FieldSpec]


def cloud_fields(msg: Any) -> list[FieldSpec]:
    """The message's fields as :class:`FieldSpec` (works for rosbags and rclpy PointFields)."""
    try:
        return [FieldSpec(str(f.name), int(f.offset), int(f.datatype), int(f.count))
                for f in msg.fields]
    except AttributeError as err:
        raise MessageError(
            f'PointCloud2.fields: each field needs name/offset/datatype/count ({err})'
        ) from err


def _field_dtype(spec: FieldSpec, byteorder: str, point_step: int) -> tuple[np.dtype, int]:
    base = POINTFIELD_DTYPES.get(spec.datatype)
    if base is None:
        raise MessageError(
            f'PointCloud2 field {spec.name!r}: unknown datatype {spec.datatype} '
            f'(PointField datatypes are 1..8: INT8, UINT8, INT16, UINT16, INT32, UINT32, '
            f'FLOAT32, FLOAT64)'
        )
    count = max(spec.count, 1)  # some drivers write count=0 for scalars
    end = spec.offset + base.itemsize * count
    if spec.offset < 0 or end > point_step:
        raise MessageError(
            f'PointCloud2 field {spec.name!r}: bytes {spec.offset}..{end} do not fit in '
            f'point_step={point_step}; the message header is inconsistent'
        )
    return base.newbyteorder(byteorder) if base.itemsize > 1 else base, count


def _layout(msg: Any) -> _Layout:
    try:
        height, width = int(msg.height), int(msg.width)
        point_step, row_step = int(msg.point_step), int(msg.row_step)
        big = bool(msg.is_bigendian)
        data = msg.data
    except AttributeError as err:
        raise MessageError(f'not a PointCloud2-like message: {err}') from err
    buf = as_uint8(data, 'PointCloud2.data')
    fields: dict[str, FieldSpec] = {}
    for spec in cloud_fields(msg):
        if not spec.name:
            continue  # unnamed padding field
        if spec.name in fields:
            log.warning('PointCloud2 has field %r twice; using the first one', spec.name)
            continue
        fields[spec.name] = spec
    n = height * width
    if n == 0:
        return _Layout(buf, height, width, point_step, row_step, '>' if big else '<', fields)
    if point_step <= 0:
        raise MessageError(f'PointCloud2.point_step is {point_step} for {n} points')
    if row_step == 0:
        row_step = width * point_step  # unset by some writers
    if row_step < width * point_step:
        raise MessageError(
            f'PointCloud2.row_step={row_step} is smaller than width*point_step='
            f'{width}*{point_step}={width * point_step}'
        )
    need = (height - 1) * row_step + width * point_step
    if buf.size < need:
        raise MessageError(
            f'PointCloud2.data has {buf.size} bytes, expected at least {need} '
            f'(height={height}, width={width}, point_step={point_step}, row_step={row_step})'
        )
    return _Layout(buf, height, width, point_step, row_step, '>' if big else '<', fields)


def cloud_dtype(fields: Iterable[FieldSpec], point_step: int, is_bigendian: bool = False
                ) -> np.dtype:
    """Structured dtype (``itemsize=point_step``) describing one point of a PointCloud2."""
    names, formats, offsets = [], [], []
    byteorder = '>' if is_bigendian else '<'
    for spec in fields:
        if not spec.name or spec.name in names:
            continue
        base, count = _field_dtype(spec, byteorder, point_step)
        names.append(spec.name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(spec.offset)
    return np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                     'itemsize': point_step})


def cloud_to_structured(msg: Any, keep_organized: bool = False) -> np.ndarray:
    """The whole cloud as a structured array, without copying when rows are not padded.

    Shape ``(height*width,)``, or ``(height, width)`` with ``keep_organized=True``. Field
    dtypes keep the message's byte order (numpy handles big-endian fields transparently).
    The array is a view of the message buffer (read-only when ``data`` is ``bytes``).
    """
    lay = _layout(msg)
    n = lay.height * lay.width
    point_step = lay.point_step
    if n == 0:  # header-only messages may leave point_step at 0
        ends = [s.offset + POINTFIELD_DTYPES.get(s.datatype, np.dtype('u1')).itemsize
                * max(s.count, 1) for s in lay.fields.values()]
        point_step = max([point_step, *ends])
    dtype = cloud_dtype(lay.fields.values(), point_step, is_bigendian=lay.byteorder == '>')
    if n == 0:
        return np.empty((lay.height, lay.width) if keep_organized else (0,), dtype=dtype)
    arr = np.ndarray(shape=(lay.height, lay.width), dtype=dtype, buffer=lay.buf,
                     strides=(lay.row_step, lay.point_step))
    return arr if keep_organized else arr.reshape(n)


def _column(lay: _Layout, spec: FieldSpec) -> np.ndarray:
    """Strided view of one field: ``(N,)`` or ``(N, count)``; may be non-native-endian."""
    base, count = _field_dtype(spec, lay.byteorder, lay.point_step)
    shape: tuple[int, ...] = (lay.height, lay.width)
    strides: tuple[int, ...] = (lay.row_step, lay.point_step)
    if count > 1:
        shape += (count,)
        strides += (base.itemsize,)
    view = np.ndarray(shape=shape, dtype=base, buffer=lay.buf, offset=spec.offset,
                      strides=strides)
    n = lay.height * lay.width
    return view.reshape((n,) + shape[2:])  # a view unless rows are padded


def _xyz(lay: _Layout) -> np.ndarray:
    missing = [c for c in 'xyz' if c not in lay.fields]
    if missing:
        raise MessageError(
            f'PointCloud2 has no {"/".join(missing)} field (fields: '
            f'{", ".join(lay.fields) or "none"}); a point cloud needs float x, y, z'
        )
    sx, sy, sz = (lay.fields[c] for c in 'xyz')
    n = lay.height * lay.width
    for spec in (sx, sy, sz):
        if max(spec.count, 1) != 1:
            raise MessageError(f'PointCloud2 field {spec.name!r} has count={spec.count}, '
                               'expected 1')
    xyz = np.empty((n, 3), dtype=np.float32)
    # Three 1-D strided copies: numpy's 1-D strided loops are several times faster than one
    # (N, 3) copy whose inner loop has only 3 elements.
    for i, spec in enumerate((sx, sy, sz)):
        xyz[:, i] = _column(lay, spec)
    return xyz


def _finite_rows(xyz: np.ndarray) -> np.ndarray | None:
    """Boolean mask of rows whose x, y and z are finite; ``None`` when all are."""
    if xyz.size == 0:
        return None
    flat = xyz.reshape(-1)
    # Fast exact test first: min/max propagate NaN and expose +-inf, without a temporary.
    if np.isfinite(flat.min()) and np.isfinite(flat.max()):
        return None
    # Column by column (1-D loops); a (N, 3) reduction along axis 1 is ~30x slower.
    return np.isfinite(xyz[:, 0]) & np.isfinite(xyz[:, 1]) & np.isfinite(xyz[:, 2])


def _compact(arr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``arr[keep]`` along axis 0; 2-D arrays go through a row-sized void view (numpy's
    boolean indexing of (N, k) arrays with small k is ~40x slower than of (N,) arrays)."""
    if arr.ndim == 1:
        return arr[keep]
    arr = np.ascontiguousarray(arr)
    rows = arr.view(np.dtype((np.void, arr.itemsize * arr.shape[1]))).reshape(-1)
    return rows[keep].view(arr.dtype).reshape(-1, arr.shape[1])


def cloud_to_points(msg: Any, fields: Sequence[str] | None = ('x', 'y', 'z', 'intensity')
                    ) -> CloudArrays:
    """Decode a PointCloud2 into :class:`CloudArrays`.

    * ``xyz`` (N, 3) float32 (any numeric x/y/z type is converted); rows with a NaN or inf
      coordinate are removed and counted in ``dropped_invalid`` (organized clouds mark
      missing returns that way).
    * ``intensity`` (float32) from the first of ``INTENSITY_NAMES`` present, ``ring`` (int32)
      from the first of ``RING_NAMES`` present; ``None`` when the cloud has no such field.
    * ``fields`` names further fields wanted in ``extra`` (native dtype, ``(N,)`` or
      ``(N, count)``); x/y/z and the intensity/ring names are ignored there. A requested
      field that the cloud lacks is a :class:`MessageError`. ``fields=None`` puts every other
      field in ``extra``.

    An empty cloud is not an error (N = 0); use :func:`require_points` to insist on points.
    """
    lay = _layout(msg)
    n = lay.height * lay.width
    intensity_name = next((c for c in INTENSITY_NAMES if c in lay.fields), None)
    ring_name = next((c for c in RING_NAMES if c in lay.fields), None)
    reserved = {'x', 'y', 'z', *INTENSITY_NAMES, *RING_NAMES}
    if fields is None:
        extra_names = [c for c in lay.fields if c not in reserved]
    else:
        extra_names = [c for c in dict.fromkeys(fields) if c not in reserved]
        missing = [c for c in extra_names if c not in lay.fields]
        if missing:
            raise MessageError(
                f'PointCloud2 has no field {", ".join(map(repr, missing))} (fields: '
                f'{", ".join(lay.fields)}); remove it from the requested fields'
            )

    if n == 0:
        if lay.fields and any(c not in lay.fields for c in 'xyz'):
            _xyz(lay)  # raises the missing-field error
        return CloudArrays(
            np.empty((0, 3), np.float32),
            intensity=np.empty(0, np.float32) if intensity_name else None,
            ring=np.empty(0, np.int32) if ring_name else None,
            extra={c: np.empty((0, lay.fields[c].count) if lay.fields[c].count > 1 else 0,
                                POINTFIELD_DTYPES.get(lay.fields[c].datatype, np.uint8))
                   for c in extra_names},
            height=lay.height, width=lay.width)
    if jit_enabled():
        fast = _cloud_to_points_jit(lay, intensity_name, ring_name, extra_names)
        if fast is not None:
            return fast
    xyz = _xyz(lay)
    keep = _finite_rows(xyz)
    dropped = 0 if keep is None else int(n - np.count_nonzero(keep))

    def take(col: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
        if keep is not None:
            col = _compact(col, keep)  # copies
            if dtype is not None and col.dtype != dtype:
                col = col.astype(dtype)
            elif not col.dtype.isnative:
                col = col.astype(col.dtype.newbyteorder('='))
            return col
        target = dtype if dtype is not None else col.dtype.newbyteorder('=')
        return np.array(col, dtype=target, order='C', copy=True)

    intensity = ring = None
    if intensity_name is not None:
        col = _column(lay, lay.fields[intensity_name])
        intensity = take(col if col.ndim == 1 else col[:, 0], np.float32)
    if ring_name is not None:
        col = _column(lay, lay.fields[ring_name])
        ring = take(col if col.ndim == 1 else col[:, 0], np.int32)
    extra = {name: take(_column(lay, lay.fields[name])) for name in extra_names}
    source_index = None
    if keep is not None:
        xyz = _compact(xyz, keep)
        source_index = np.flatnonzero(keep)
        log.debug('PointCloud2: dropped %d of %d points with NaN/inf coordinates', dropped, n)
    return CloudArrays(xyz=xyz, intensity=intensity, ring=ring, extra=extra,
                       dropped_invalid=dropped, height=lay.height, width=lay.width,
                       source_index=source_index)


#: Intensity / ring dtypes the gather kernel converts (numba specialises on each).
_KERNEL_INTENSITY_KINDS = 'fiu'
_KERNEL_RING_KINDS = 'iu'
# Stand-ins for absent columns (the kernels do not read them).
_NO_COLUMN = np.zeros((1, 1), np.float32)
_NO_RING = np.zeros((1, 1), np.int32)
_NO_LINE = np.zeros(1, np.float32)
_NO_RING_LINE = np.zeros(1, np.int32)


def _plane(lay: _Layout, spec: FieldSpec) -> np.ndarray:
    """(H, W) strided view of the first element of a field (``count`` > 1 included)."""
    base, _count = _field_dtype(spec, lay.byteorder, lay.point_step)
    return np.ndarray(shape=(lay.height, lay.width), dtype=base, buffer=lay.buf,
                      offset=spec.offset, strides=(lay.row_step, lay.point_step))


@functools.lru_cache(maxsize=64)
def _gather_plan(specs: tuple[FieldSpec | None, ...], point_step: int, byteorder: str
                 ) -> tuple[tuple[np.dtype, int, int] | None, ...] | None:
    """How the gather kernel reads x, y, z, intensity, ring (``specs``, None = absent) of this
    layout: per column ``(dtype, offset // itemsize, point_step // itemsize)`` (a slice of a
    typed view of the buffer; ``offset // itemsize`` is -1 when offsets are not multiples of
    the itemsize), or None when the layout needs the numpy path (x/y/z not float32 or with
    ``count`` > 1, non-native byte order, non-numeric intensity/ring). Raises the numpy path's
    MessageError for fields that do not fit in ``point_step``."""
    plan = []
    for k, spec in enumerate(specs):
        if spec is None:
            plan.append(None)
            continue
        base, count = _field_dtype(spec, byteorder, point_step)
        if k < 3 and (spec.datatype != 7 or count != 1):
            return None
        kinds = 'f' if k < 3 else (_KERNEL_INTENSITY_KINDS if k == 3 else _KERNEL_RING_KINDS)
        if not base.isnative or base.kind not in kinds:
            return None
        size = base.itemsize
        aligned = spec.offset % size == 0 and point_step % size == 0
        plan.append((base, spec.offset // size if aligned else -1, point_step // size))
    return tuple(plan)


def _cloud_to_points_jit(lay: _Layout, intensity_name: str | None, ring_name: str | None,
                         extra_names: list[str]) -> CloudArrays | None:
    """Kernel path of :func:`cloud_to_points` (one pass over the points); None when the layout
    needs the numpy path (non-native byte order, x/y/z not float32, exotic dtypes)."""
    if any(c not in lay.fields for c in 'xyz'):
        return None  # the numpy path raises the missing-field error
    fields = lay.fields
    specs = (fields['x'], fields['y'], fields['z'],
             None if intensity_name is None else fields[intensity_name],
             None if ring_name is None else fields[ring_name])
    plan = _gather_plan(specs, lay.point_step, lay.byteorder)
    if plan is None:
        return None
    n = lay.height * lay.width
    flat = lay.height == 1 or lay.row_step == lay.width * lay.point_step
    buf = lay.buf
    if flat:
        fixed = _fixed_layout(specs, lay.point_step)
        if fixed is not None:
            return _gather_fixed(fixed, lay, intensity_name, ring_name, extra_names)
    views: dict[np.dtype, np.ndarray] = {}
    cols: list[np.ndarray] = []
    for spec, step in zip(specs, plan, strict=True):
        if step is None:
            cols.append(None)
        elif flat and step[1] >= 0:
            # A slice of a typed view of the whole buffer (cheaper than np.ndarray(buffer=)).
            dtype, start, stride = step
            typed = views.get(dtype)
            if typed is None:
                typed = views[dtype] = buf[: buf.size - buf.size % dtype.itemsize].view(dtype)
            cols.append(typed[start::stride][:n])
        else:
            col = _plane(lay, spec)
            cols.append(col.reshape(n) if flat else col)
    x, y, z, icol, rcol = cols
    if icol is None:
        icol = _NO_LINE if flat else _NO_COLUMN
    if rcol is None:
        rcol = _NO_RING_LINE if flat else _NO_RING
    xyz = np.empty((n, 3), np.float32)
    intensity = np.empty(n if intensity_name is not None else 0, np.float32)
    ring = np.empty(n if ring_name is not None else 0, np.int32)
    # Rows that follow each other: 1-D strided columns; padded rows: row by row.
    gather = gather_points if flat else gather_point_rows
    bad = gather(x, y, z, icol, intensity_name is not None, rcol, ring_name is not None, xyz,
                 intensity, ring)
    return _finish(lay, xyz, intensity, ring, bad, intensity_name, ring_name, extra_names)


def _fixed_layout(specs: tuple[FieldSpec | None, ...], point_step: int) -> Callable | None:
    """The fixed-layout gather kernel of x, y, z, intensity, ring ``specs`` (validated by
    :func:`_gather_plan`), if there is one (``FIXED_LAYOUTS``)."""
    sx, sy, sz, si, sr = specs
    if (sx.offset, sy.offset, sz.offset) != (0, 4, 8):
        return None
    if si is not None and si.datatype != 7:
        return None
    if sr is not None and sr.datatype != 4:
        return None
    return FIXED_LAYOUTS.get((point_step, None if si is None else si.offset,
                              None if sr is None else sr.offset))


def _gather_fixed(kernel: Callable, lay: _Layout, intensity_name: str | None,
                  ring_name: str | None, extra_names: list[str]) -> CloudArrays:
    """:func:`_cloud_to_points_jit` through a fixed-layout kernel (rows follow each other)."""
    n = lay.height * lay.width
    data = lay.buf[: n * lay.point_step]
    words = data.view(np.uint32)
    xyz = np.empty((n, 3), np.float32)
    intensity = np.empty(n if intensity_name is not None else 0, np.float32)
    ring = np.empty(n if ring_name is not None else 0, np.int32)
    bad = kernel(words, data.view(np.uint16) if ring_name is not None else words,
                 xyz.reshape(3 * n).view(np.uint32), intensity.view(np.uint32), ring)
    return _finish(lay, xyz, intensity, ring, bad, intensity_name, ring_name, extra_names)


def _finish(lay: _Layout, xyz: np.ndarray, intensity: np.ndarray, ring: np.ndarray, bad: int,
            intensity_name: str | None, ring_name: str | None, extra_names: list[str]
            ) -> CloudArrays:
    """Drop the ``bad`` non-finite points (in place) and read the extra fields."""
    n = lay.height * lay.width
    fields = lay.fields
    source_index = None
    extra = {name: _column(lay, fields[name]) for name in extra_names}
    if bad:
        m, source_index = compact_finite(xyz, intensity, intensity_name is not None, ring,
                                         ring_name is not None, n - bad)
        xyz = xyz[:m]
        intensity = intensity[:m]
        ring = ring[:m]
        if extra:
            keep = np.zeros(n, bool)
            keep[source_index] = True
            extra = {name: _native(_compact(col, keep)) for name, col in extra.items()}
        log.debug('PointCloud2: dropped %d of %d points with NaN/inf coordinates', bad, n)
    else:
        extra = {name: np.array(col, dtype=col.dtype.newbyteorder('='), order='C', copy=True)
                 for name, col in extra.items()}
    return CloudArrays(xyz=xyz, intensity=intensity if intensity_name is not None else None,
                       ring=ring if ring_name is not None else None, extra=extra,
                       dropped_invalid=bad, height=lay.height, width=lay.width,
                       source_index=source_index)


def _native(col: np.ndarray) -> np.ndarray:
    return col if col.dtype.isnative else col.astype(col.dtype.newbyteorder('='))


def require_points(arrays: CloudArrays, min_points: int = 1, topic: str = '') -> CloudArrays:
    """Return ``arrays`` if it has at least ``min_points`` points, else raise MessageError."""
    n = len(arrays)
    if n < min_points:
        where = topic or 'point cloud'
        raise MessageError(
            f'{where}: no valid points ({n} valid, {arrays.dropped_invalid} dropped as '
            f'NaN/inf, {min_points} needed); check that the LiDAR driver publishes finite x/y/z'
        )
    return arrays


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB → (N,) float32 holding ``0x00RRGGBB`` bits (PCL/RViz ``rgb`` field)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 2 or rgb.shape[1] != 3 or rgb.dtype != np.uint8:
        raise MessageError(f'pack_rgb: expected (N, 3) uint8 colours, got {rgb.shape} '
                           f'{rgb.dtype}')
    packed = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) \
        | rgb[:, 2].astype(np.uint32)
    return packed.view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: (N,) float32 (or uint32) → (N, 3) uint8 RGB."""
    bits = np.ascontiguousarray(packed).reshape(-1)
    if bits.dtype.itemsize != 4:
        raise MessageError(f'unpack_rgb: expected a 4-byte rgb field, got {bits.dtype}')
    bits = bits.astype(bits.dtype.newbyteorder('='), copy=False).view(np.uint32)
    out = np.empty((bits.size, 3), dtype=np.uint8)
    out[:, 0] = (bits >> 16) & 0xFF
    out[:, 1] = (bits >> 8) & 0xFF
    out[:, 2] = bits & 0xFF
    return out


def _is_rgb8(value: Any) -> bool:
    arr = np.asarray(value)
    return arr.ndim == 2 and arr.shape[1] == 3 and arr.dtype == np.uint8


def _as_field_array(name: str, value: Any, n: int | None) -> np.ndarray:
    arr = np.asarray(value)
    if name == 'rgb':
        if arr.ndim == 2 and arr.shape[1] == 3 and arr.dtype == np.uint8:
            arr = pack_rgb(arr)
        elif arr.ndim == 1 and arr.dtype in (np.uint32, np.int32):
            arr = np.ascontiguousarray(arr).view(np.float32)
        elif not (arr.ndim == 1 and arr.dtype == np.float32):
            raise MessageError(f'cloud field rgb: expected (N, 3) uint8 or packed (N,) float32, '
                               f'got {arr.shape} {arr.dtype}')
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.ndim not in (1, 2):
        raise MessageError(f'cloud field {name!r}: expected (N,) or (N, count), got {arr.shape}')
    if n is not None and arr.shape[0] != n:
        raise MessageError(f'cloud field {name!r} has {arr.shape[0]} rows, xyz has {n}')
    if (arr.dtype.kind, arr.dtype.itemsize) not in _DATATYPE_OF:
        raise MessageError(
            f'cloud field {name!r}: dtype {arr.dtype} has no PointField datatype; cast it to '
            f'one of int8/uint8/int16/uint16/int32/uint32/float32/float64 '
            f'(labels: uint8 or uint32)'
        )
    return arr


def points_to_cloud_fields(arrays: Mapping[str, Any], height: int = 1) -> dict[str, Any]:
    """Build the fields of a PointCloud2 from columns.

    ``arrays`` holds ``xyz`` (N, 3) (or ``x``, ``y``, ``z``), then any of ``intensity``,
    ``ring``, ``label`` (uint8 or uint32 for PCL/Autoware consumers), ``confidence``
    (float32), ``rgb`` ((N, 3) uint8, packed here, or already-packed float32) and any other
    (N,) / (N, count) numeric column; dtypes are kept, order is x, y, z then the mapping's.
    Every field is aligned to its size; ``point_step`` is rounded to the largest alignment.

    Returns ``dict(height, width, fields: list[FieldSpec], is_bigendian, point_step,
    row_step, data: bytes, is_dense)``; ``is_dense`` is true when every xyz is finite.
    Set ``height > 1`` for an organized cloud (N must be a multiple of it).
    """
    if 'xyz' in arrays:
        xyz = np.asarray(arrays['xyz'])
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise MessageError(f'cloud field xyz: expected (N, 3), got {xyz.shape}')
        columns: dict[str, np.ndarray] = {'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2]}
    elif all(c in arrays for c in 'xyz'):
        columns = {c: np.asarray(arrays[c]).reshape(-1) for c in 'xyz'}
    else:
        raise MessageError('points_to_cloud_fields: pass xyz (N, 3) or x, y, z columns')
    n = columns['x'].shape[0]
    for c in 'xyz':
        if columns[c].shape != (n,):
            raise MessageError(f'cloud field {c!r} has shape {columns[c].shape}, expected ({n},)')
        columns[c] = columns[c].astype(np.float32, copy=False)
    rgb_bytes = None  # (N, 3) uint8 colours, written straight into the packed field
    for name, value in arrays.items():
        if name in ('xyz', 'x', 'y', 'z'):
            continue
        if not name:
            raise MessageError('points_to_cloud_fields: empty field name')
        if name == 'rgb' and _is_rgb8(value):
            rgb_bytes = np.asarray(value)
            if rgb_bytes.shape[0] != n:
                raise MessageError(f'cloud field rgb has {rgb_bytes.shape[0]} rows, xyz has {n}')
            columns[name] = np.empty(0, np.float32)  # placeholder: FLOAT32, count 1
            continue
        columns[name] = _as_field_array(name, value, n)
    if height < 1 or n % height:
        raise MessageError(f'points_to_cloud_fields: {n} points cannot form {height} rows')

    specs: list[FieldSpec] = []
    names, formats, offsets = [], [], []
    offset = 0
    align_max = 1
    for name, arr in columns.items():
        base = arr.dtype.newbyteorder('=')
        count = 1 if arr.ndim == 1 else int(arr.shape[1])
        align = base.itemsize
        align_max = max(align_max, align)
        offset = -(-offset // align) * align
        specs.append(FieldSpec(name, offset, _DATATYPE_OF[(base.kind, base.itemsize)], count))
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
        offset += base.itemsize * count
    point_step = -(-offset // align_max) * align_max
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                      'itemsize': point_step})
    packed = np.zeros(n, dtype=dtype)
    for name, arr in columns.items():
        if name == 'rgb' and rgb_bytes is not None:
            # 0x00RRGGBB as a 4-byte word: bytes B, G, R, 0 on little-endian hosts.
            raw = packed.view(np.uint8).reshape(n, point_step)
            base = offsets[names.index('rgb')]
            order = (2, 1, 0) if not _NATIVE_BIG else (0, 1, 2)
            for k, channel in enumerate(order):
                raw[:, base + k + (1 if _NATIVE_BIG else 0)] = rgb_bytes[:, channel]
            continue
        packed[name] = arr
    width = n // height
    return {
        'height': height,
        'width': width,
        'fields': specs,
        'is_bigendian': _NATIVE_BIG,
        'point_step': point_step,
        'row_step': point_step * width,
        'data': packed.tobytes(),
        'is_dense': all(n == 0 or bool(np.isfinite(columns[c].min()) and
                                       np.isfinite(columns[c].max())) for c in 'xyz'),
    }


def datatype_name(code: int) -> str:
    """``'FLOAT32'`` for 7 etc. (for messages and logs)."""
    return _DATATYPE_NAMES.get(int(code), f'unknown({code})')

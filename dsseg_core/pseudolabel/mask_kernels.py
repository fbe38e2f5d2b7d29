"""Compiled kernels of :mod:`.segment_masks`: disk splat z-buffer and the depth-agreement guard.

The numpy code in :mod:`.segment_masks` is the reference; these kernels compute the same
result pixel for pixel (the tests compare them on the sample drive and on synthetic edge
cases) in one pass over the points and one sweep down the image rows:

* :func:`splat_kernel` — per pixel the nearest disk (depth, point index). The numpy path
  writes the disks offset by offset (offsets sorted by distance, strict ``<``), so among
  points of *equal* depth the one whose centre is at the smaller offset rank wins (two
  points reaching a pixel through the same offset share a centre, and only one point per
  centre survives the reduction). The kernel splats point by point, row span by row span,
  and breaks depth ties by that offset rank, which gives the identical owner. Depth and
  owner are packed in one ``int64`` per pixel (:func:`pack_depth`), so the z-test is one
  load, one compare and one store.
* :func:`guard_kernel` — segment lookup, the sortable (depth mm, segment) key, the
  ``(2g+1)²`` window minimum and the depth-agreement test, straight into the ``int32``
  output map, with a ring buffer of ``2g+1`` key rows instead of image-sized temporaries.
* :func:`count_pixels_kernel`, :func:`drop_segments_kernel`, :func:`label_pixels_kernel` —
  per-segment pixel counts of a segment map, dropping segments from it, and label images /
  point labels through a segment → class table (the pipeline's bookkeeping).

Float32 arithmetic stays float32 (``depth * 1000`` rounds half to even like ``np.round``)
and the agreement threshold is float64, as in numpy. Callers pass fixed dtypes (see the
docstrings) so numba compiles each kernel once, and pass the large arrays in (per-thread
work arrays, :mod:`.work_buffers`: fresh pages are expensive). Pixel loops index with
unsigned integers (numba then skips its negative-index wraparound check).
"""

from __future__ import annotations

import numpy as np

from dsseg_core.jit import njit

__all__ = [
    'EMPTY_PIXEL',
    'count_pixels_kernel',
    'drop_segments_kernel',
    'guard_kernel',
    'label_pixels_kernel',
    'pack_depth',
    'splat_kernel',
    'unpack_zbuffer',
]

# scipy.ndimage filters work on doubles: the empty key INT64_MAX becomes 2**63, which the C
# cast back to int64 turns into INT64_MIN (x86); keys of real depths (< 2**53) are exact.
_KEY_EMPTY_D = float(np.iinfo(np.int64).max)  # == 2**63
_KEY_POISON = np.iinfo(np.int64).min
_KEY_POISON_D = float(_KEY_POISON)
_TWO_63 = 2.0 ** 63

#: Packed z-buffer value of an uncovered pixel: depth +inf, owner -1.
EMPTY_PIXEL = (0x7F800000 << 32) | 0xFFFFFFFF


@njit
def pack_depth(d: float) -> int:
    """float32 depth → signed 32-bit key with the same order (``-0.0`` = ``+0.0``)."""
    f = np.float32(np.float32(d) + np.float32(0.0))
    b = np.int64(f.view(np.int32))
    return b if b >= 0 else b ^ 0x7FFFFFFF


@njit
def _unpack_depth(key: int) -> float:
    b = key if key >= 0 else key ^ 0x7FFFFFFF
    return np.int32(b).view(np.float32)


@njit
def splat_kernel(cx: np.ndarray, cy: np.ndarray, depth: np.ndarray, radius: np.ndarray,
                 pad: int, dxs: np.ndarray, dys: np.ndarray, dists: np.ndarray,
                 nearest: np.ndarray, zbuf: np.ndarray) -> None:
    """Nearest-disk z-buffer into ``zbuf (H, W) int64``: per pixel ``(pack_depth(depth) <<
    32) | owner`` (:data:`EMPTY_PIXEL` where uncovered; see :func:`unpack_zbuffer`).

    ``cx, cy (N,) int64`` centre pixels, ``depth (N,) float64`` (compared as given when two
    points share a centre, as float32 in the z-test; NaN depths never win), ``radius (N,)
    float64``; ``dxs, dys (K,) int64`` and ``dists (K,) float64`` the disk offsets sorted by
    distance (``segment_masks._disk_offsets``; a point covers the offsets with ``dist <=
    radius``); centres farther than ``pad`` pixels outside the image are ignored (their
    disks cannot reach it). ``nearest ((H + 2 pad) * (W + 2 pad),) int32`` is work space.
    """
    n = cx.shape[0]
    height, width = zbuf.shape
    wp = width + 2 * pad
    hp = height + 2 * pad
    # 1. one point per centre pixel: the nearest (ties: lower index; NaN depths last)
    nearest[:] = -1
    for i in range(n):
        x = cx[i] + pad
        y = cy[i] + pad
        if x < 0 or x >= wp or y < 0 or y >= hp:
            continue
        c = y * wp + x
        b = nearest[c]
        if b < 0:
            nearest[c] = i
        else:
            di = depth[i]
            db = depth[b]
            if di < db or (np.isnan(db) and not np.isnan(di)):
                nearest[c] = i
    # 2. the disks as row spans; offsets as a (2R+1)² table of distance and rank
    big_r = 0
    for o in range(dists.shape[0]):
        big_r = max(big_r, abs(dxs[o]), abs(dys[o]))
    side = 2 * big_r + 1
    tab_dist = np.full((side, side), np.inf)
    tab_rank = np.zeros((side, side), dtype=np.int64)
    for o in range(dists.shape[0]):
        tab_dist[dys[o] + big_r, dxs[o] + big_r] = dists[o]
        tab_rank[dys[o] + big_r, dxs[o] + big_r] = o
    zbuf[:] = EMPTY_PIXEL
    half = np.empty(side, dtype=np.int64)
    span_rad = np.nan
    for i in range(n):
        x0 = cx[i]
        y0 = cy[i]
        if x0 + pad < 0 or x0 + pad >= wp or y0 + pad < 0 or y0 + pad >= hp:
            continue
        if nearest[(y0 + pad) * wp + x0 + pad] != i or np.isnan(depth[i]):
            continue
        dk = pack_depth(depth[i])
        packed = (dk << 32) | i
        rad = radius[i]
        if rad != span_rad:  # half-widths of the disk's rows (most radii repeat: clipped)
            span_rad = rad
            for ty in range(side):
                a = big_r
                while a >= 0 and tab_dist[ty, big_r + a] > rad:
                    a -= 1
                half[ty] = a  # -1: the row's nearest offset (dx = 0) is too far
        for ty in range(side):
            y = y0 + ty - big_r
            a = half[ty]
            if y < 0 or y >= height or a < 0:
                continue
            xa = max(x0 - a, 0)
            xb = min(x0 + a, width - 1)
            ties = False
            row = zbuf[y]
            for ux in range(np.uint64(xa), np.uint64(xb + 1)):
                # branch-free z-test; unsigned index: no wraparound check
                cur = row[ux]
                ck = cur >> 32
                ties |= ck == dk
                row[ux] = packed if dk < ck else cur
            if ties:
                # equal depths: the smaller offset rank wins (the owner's from its centre)
                for x in range(xa, xb + 1):
                    cur = zbuf[y, x]
                    j = np.int64(np.int32(cur & 0xFFFFFFFF))
                    if (cur >> 32) == dk and j != i and (
                            tab_rank[ty, x - x0 + big_r]
                            < tab_rank[y - cy[j] + big_r, x - cx[j] + big_r]):
                        zbuf[y, x] = packed


@njit
def unpack_zbuffer(zbuf: np.ndarray, depth: np.ndarray, owner: np.ndarray) -> None:
    """Packed z-buffer → ``depth (H, W) float32`` (inf = uncovered), ``owner (H, W)`` int."""
    h, w = zbuf.shape
    for y in range(h):
        for x in range(w):
            v = zbuf[y, x]
            depth[y, x] = _unpack_depth(v >> 32)
            owner[y, x] = np.int32(v & 0xFFFFFFFF)


@njit
def _key_row(zrow: np.ndarray, key_pt: np.ndarray, row: np.ndarray) -> None:
    """The sortable keys of a z-buffer row (its owners' keys; ``INT64_MAX`` where empty), as
    doubles. (Unsigned indices in the kernels' pixel loops: numba then skips its
    negative-index wraparound.)"""
    for x in range(np.uint64(row.shape[0])):
        i = np.int32(zrow[x] & 0xFFFFFFFF)
        row[x] = key_pt[np.uint64(i)] if i >= 0 else _KEY_EMPTY_D


@njit
def _sliding_min(a: np.ndarray, tmp: np.ndarray, span: int) -> None:
    """In place: ``a[x] = min(a[x : x + span])`` for ``x <= len(a) - span``, by doubling
    (``log2(span) + 1`` passes, ping-ponging with ``tmp`` of the same length so that the
    loops vectorise)."""
    n = np.uint64(a.shape[0])
    src = a
    dst = tmp
    width = 1
    while 2 * width <= span:
        step = np.uint64(width)
        for x in range(n - step):
            dst[x] = min(src[x], src[x + step])
        src, dst = dst, src
        width *= 2
    if width < span:
        shift = np.uint64(span - width)
        for x in range(n - shift):
            dst[x] = min(src[x], src[x + shift])
        src, dst = dst, src
    if src is not a:
        a[:] = src


@njit
def guard_kernel(zbuf: np.ndarray, depth: np.ndarray, segment_id: np.ndarray, guard_px: int,
                 rel_factor: float, abs_tol: float, out: np.ndarray) -> None:
    """``out (H, W) int32``: the segment map (``-1`` = none) from the packed z-buffer.

    ``depth (N,) float32`` (> 0) and ``segment_id (N,) int64`` per point (the splat's
    points); the sortable key ``(depth mm << 24) | (segment + 1)`` of a pixel is its owner's,
    computed once per point. A covered pixel of segment ``s >= 0`` keeps it if
    the nearest key in its ``(2 guard_px + 1)²`` window is of segment ``s`` or its depth
    ``D`` satisfies ``depth <= D * rel_factor + abs_tol`` (``rel_factor = 1 +
    rel_depth_tol``).

    The window minimum reproduces ``scipy.ndimage.minimum_filter(..., mode='nearest')`` on
    the band of rows exactly, including how scipy computes it: a vertical then a horizontal
    1-D pass, each on the keys converted to double and cast back to int64, where the C cast
    turns the empty key (``INT64_MAX`` → 2**63) into ``INT64_MIN`` on x86. A column whose
    vertical window holds no covered pixel therefore yields ``INT64_MIN``, and every pixel
    with such a column in its horizontal window fails the agreement test (the numpy
    reference behaviour, kept so that both paths agree; see docs/benchmarks/pseudolabel.md).
    """
    h, w = zbuf.shape
    out[:] = -1
    key_pt = np.empty(depth.shape[0], dtype=np.float64)
    for i in range(np.uint64(depth.shape[0])):
        mm = np.rint(depth[i] * np.float32(1000.0))  # half to even, like np.round
        if mm > np.float32(2.0 ** 38):
            mm = np.float32(2.0 ** 38)
        key_pt[i] = np.float64((np.int64(mm) << 24) | ((segment_id[i] + 1) & 0xFFFFFF))
    row0 = -1
    for y in range(h):
        for x in range(w):
            if zbuf[y, x] != EMPTY_PIXEL:
                row0 = y
                break
        if row0 >= 0:
            break
    if row0 < 0:
        return
    row1 = row0
    for y in range(h - 1, row0, -1):
        for x in range(w):
            if zbuf[y, x] != EMPTY_PIXEL:
                row1 = y
                break
        if row1 == y:
            break
    g = max(guard_px, 0)
    r0 = max(row0 - g, 0)
    r1 = min(row1 + g + 1, h)
    span = 2 * g + 1
    ring = np.empty((span, w), dtype=np.float64)  # key rows y - g .. y + g
    # per row: vertical window minimum, padded by g (+inf) on both sides, then its sliding
    # horizontal minimum: hmin[x] = min(vertical minima x - g .. x + g, clipped)
    hmin = np.full(w + 2 * g, np.inf)
    tmp = np.empty(w + 2 * g)
    next_row = r0  # next key row to compute into the ring
    uw = np.uint64(w)
    vmin = hmin[g:g + w]  # the vertical minima, between the paddings
    for y in range(row0, row1 + 1):
        lo = max(y - g, r0)
        hi = min(y + g, r1 - 1)
        while g > 0 and next_row <= hi:
            if next_row < row0 or next_row > row1:
                ring[next_row % span, :] = _KEY_EMPTY_D
            else:
                _key_row(zbuf[next_row], key_pt, ring[next_row % span])
            next_row += 1
        if g > 0:
            vmin[:] = ring[lo % span]
            for yy in range(lo + 1, hi + 1):
                kr = ring[yy % span]
                for x in range(uw):
                    v = kr[x]
                    m = vmin[x]
                    vmin[x] = v if v < m else m
            for x in range(uw):
                if vmin[x] >= _TWO_63:
                    vmin[x] = _KEY_POISON_D
            hmin[:g] = np.inf
            hmin[g + w:] = np.inf
            _sliding_min(hmin, tmp, span)
        # the agreement test at the pixels that may keep a segment
        zrow = zbuf[y]
        orow = out[y]
        for x in range(uw):
            v = zrow[x]
            i = np.int32(v & 0xFFFFFFFF)
            if i < 0:
                continue
            s = segment_id[np.uint64(i)]
            if s < 0:
                continue
            if g == 0:
                orow[x] = s
                continue
            m = hmin[x]
            guard = _KEY_POISON if m >= _TWO_63 else np.int64(m)
            if (guard & 0xFFFFFF) - 1 == s:
                orow[x] = s
            else:
                guard_depth = np.float64(guard >> 24) / 1000.0
                if np.float64(depth[np.uint64(i)]) <= guard_depth * rel_factor + abs_tol:
                    orow[x] = s


@njit
def count_pixels_kernel(seg_map: np.ndarray, counts: np.ndarray) -> None:
    """``counts[s] += `` pixels of segment ``s`` in ``seg_map (H, W) int32`` (``-1`` and ids
    ``>= len(counts)`` skipped)."""
    flat = seg_map.reshape(-1)
    ns = counts.shape[0]
    for p in range(np.uint64(flat.shape[0])):
        s = flat[p]
        if 0 <= s < ns:
            counts[np.uint64(s)] += 1


@njit
def drop_segments_kernel(seg_map: np.ndarray, drop: np.ndarray) -> None:
    """In place: pixels of the segments flagged in ``drop (S,) bool`` become ``-1``."""
    flat = seg_map.reshape(-1)
    ns = drop.shape[0]
    for p in range(np.uint64(flat.shape[0])):
        s = flat[p]
        if 0 <= s < ns and drop[np.uint64(s)]:
            flat[p] = -1


@njit
def label_pixels_kernel(seg_map: np.ndarray, lut: np.ndarray, ignore: int, out: np.ndarray,
                        hist: np.ndarray) -> int:
    """Labels from segment ids: ``out = lut[s]`` (``lut[-1]`` for ``s = -1``), ``ignore``
    where that is negative; adds the labelled entries per class to ``hist`` and returns
    their number. ``seg_map`` int32 (a segment map, or the points' segments), ``lut (S + 1,)
    int64``, ``out`` of the same shape, uint8 (label images) or int32 (point labels),
    ``hist (C,) int64`` (classes ``>= C`` are not counted)."""
    src = seg_map.reshape(-1)
    dst = out.reshape(-1)
    ns = lut.shape[0] - 1
    nc = hist.shape[0]
    labelled = 0
    for p in range(np.uint64(src.shape[0])):
        s = src[p]
        lab = lut[np.uint64(s)] if 0 <= s < ns else lut[ns]
        if lab >= 0:
            dst[p] = lab
            labelled += 1
            if lab < nc:
                hist[np.uint64(lab)] += 1
        else:
            dst[p] = ignore
    return labelled

"""Numba kernels of :mod:`dsseg_core.projection`: projection and z-buffer in one pass each.

``project_pinhole_kernel`` / ``project_distorted_kernel`` do what the vectorised
:func:`dsseg_core.projection.project_points` does (extrinsics, depth cut, pinhole pre-cut,
fold-back guard, plumb_bob / rational_polynomial distortion, K, image bounds) point by point,
with the same floating-point operations in the same order and the same dtype (float32 for
float32 clouds, float64 for float64 ones), so both give bit-identical pixels and depths.
``zbuffer_kernel`` builds the nearest-depth image of the band of rows that hold points and takes
the (2r+1)² window minimum at every point; minima are exact, so it equals the separable numpy
filter. The equidistant (fisheye) model stays on the numpy path (its ``arctan`` comes from
different math libraries in numpy and numba).

Scalars and constants come in as arrays of the cloud's dtype (``consts``) so that numba
specialises one kernel per dtype and never mixes float32 with float64. Callers (in
:mod:`dsseg_core.projection`) cast arrays to contiguous fixed dtypes; see
``projection.project_points_kernel``. Pinhole and distorted cameras have separate kernels so
that a rig compiles (once per machine, ~10 s each on a slow core) only what it uses.
"""

from __future__ import annotations

import numpy as np

from dsseg_core.jit import njit

__all__ = [
    'MODEL_CODES',
    'N_CONSTS',
    'pixel_rows_cols',
    'project_distorted_kernel',
    'project_pinhole_kernel',
    'zbuffer_kernel',
    'zbuffer_scratch_size',
]

#: Distortion models the kernels implement (equidistant stays on the numpy path).
MODEL_CODES = {'none': 0, 'plumb_bob': 1, 'rational_polynomial': 2}

# Indexes into ``consts`` (all of the cloud's dtype).
C_MIN_Z, C_FX, C_FY, C_CX, C_CY, C_SKEW, C_SKEW_FX = 0, 1, 2, 3, 4, 5, 6
C_LO_U, C_HI_U, C_LO_V, C_HI_V, C_R2MAX, C_ONE = 7, 8, 9, 10, 11, 12
N_CONSTS = 13

# Points are processed in blocks: the depth cut and the pinhole pre-cut compact candidates
# without branches (always write, advance on success), so clouds in any order cost the same.
_BLOCK = 512


@njit
def _in_front(pts, b0, b1, rot, trans, min_z, cand, cand_z):
    """Indexes (into ``cand``) and camera z (``cand_z``) of the points ``b0 .. b1 - 1`` with
    ``z > min_z`` (z = ``pts[i, 0] * R20 + pts[i, 1] * R21 + pts[i, 2] * R22 + t2``, left to
    right, like the numpy path); returns how many."""
    r20, r21, r22 = rot[2, 0], rot[2, 1], rot[2, 2]
    t2 = trans[2]
    k = 0
    for i in range(b0, b1):
        z = pts[i, 0] * r20 + pts[i, 1] * r21 + pts[i, 2] * r22
        z = z + t2
        cand[k] = i
        cand_z[k] = z
        k += z > min_z
    return k


@njit
def _camera_xy(pts, i, rot, trans):
    """Camera-frame x, y of point ``i`` (same operation order as z)."""
    px = pts[i, 0]
    py = pts[i, 1]
    pz = pts[i, 2]
    x = px * rot[0, 0] + py * rot[0, 1] + pz * rot[0, 2]
    y = px * rot[1, 0] + py * rot[1, 1] + pz * rot[1, 2]
    return x + trans[0], y + trans[1]


@njit
def _pixel(xn, yn, consts, width, height):
    """``(ok, u, v)``: float32 pixel of normalised (x, y) and whether it is inside the image.

    ``u = fx * xn + skew * yn + cx`` also without skew: ``+ 0 * yn`` changes no finite u (and a
    non-finite yn gives a non-finite v, which is outside anyway).
    """
    u = consts[C_FX] * xn + consts[C_SKEW] * yn + consts[C_CX]
    v = consts[C_FY] * yn + consts[C_CY]
    u32 = np.float32(u)
    v32 = np.float32(v)
    return (u32 >= 0) & (u32 < width) & (v32 >= 0) & (v32 < height), u32, v32


@njit
def _outputs(n):
    cap = max(1024, n // 4)
    return np.empty(cap, np.int64), np.empty((cap, 2), np.float32), np.empty(cap, np.float32)


@njit
def project_pinhole_kernel(pts, rot, trans, consts, width, height):
    """Project ``pts`` (N, C >= 3) into an undistorted camera; ``(index int64 (M,), uv float32
    (M, 2), depth float32 (M,))`` exactly like the numpy path of ``project_points``.

    ``rot`` (3, 3), ``trans`` (3,), ``consts`` (N_CONSTS,): all of ``pts``'s dtype. The
    division-free pre-cut (image plus one pixel) runs before the division, as in numpy.
    """
    n = pts.shape[0]
    min_z, one = consts[C_MIN_Z], consts[C_ONE]
    skew_fx = consts[C_SKEW_FX]
    lo_u, hi_u, lo_v, hi_v = consts[C_LO_U], consts[C_HI_U], consts[C_LO_V], consts[C_HI_V]
    index, uv, depth = _outputs(n)
    m = 0
    cand = np.empty(_BLOCK, np.int64)
    cand_z = np.empty(_BLOCK, pts.dtype)
    front = np.empty(_BLOCK, np.int64)
    front_x = np.empty(_BLOCK, pts.dtype)
    front_y = np.empty(_BLOCK, pts.dtype)
    front_z = np.empty(_BLOCK, pts.dtype)
    for b0 in range(0, n, _BLOCK):
        k = _in_front(pts, b0, min(b0 + _BLOCK, n), rot, trans, min_z, cand, cand_z)
        kept = 0
        for j in range(k):
            i = cand[j]
            z = cand_z[j]
            x, y = _camera_xy(pts, i, rot, trans)
            # numpy: xs = x (no skew) or x + (skew / fx) * y; + 0 * y keeps every comparison.
            xs = x + skew_fx * y
            front[kept] = i
            front_z[kept] = z
            front_x[kept] = x
            front_y[kept] = y
            kept += (xs >= lo_u * z) & (xs < hi_u * z) & (y >= lo_v * z) & (y < hi_v * z)
        if m + kept > index.shape[0]:
            index, uv, depth = _grow(index, uv, depth, m, max(2 * index.shape[0], m + kept))
        for j in range(kept):
            z = front_z[j]
            inv_z = one / z
            ok, u, v = _pixel(front_x[j] * inv_z, front_y[j] * inv_z, consts, width, height)
            if ok:
                index[m] = front[j]
                uv[m, 0] = u
                uv[m, 1] = v
                depth[m] = np.float32(z)
                m += 1
    return index[:m].copy(), uv[:m].copy(), depth[:m].copy()


@njit
def project_distorted_kernel(pts, rot, trans, consts, dist, rational, check_radius, width,
                             height):
    """:func:`project_pinhole_kernel` for plumb_bob (``rational`` False) and
    rational_polynomial cameras: ``dist`` = k1, k2, p1, p2, k3, k4, k5, k6 (pts' dtype); the
    fold-back guard ``xn² + yn² <= consts[C_R2MAX]`` applies when ``check_radius``. The
    distortion is ``calibration.distort_normalized``'s, operation by operation."""
    n = pts.shape[0]
    min_z, one, r2max = consts[C_MIN_Z], consts[C_ONE], consts[C_R2MAX]
    k1, k2, p1, p2, k3, k4, k5, k6 = (dist[0], dist[1], dist[2], dist[3], dist[4], dist[5],
                                      dist[6], dist[7])
    p1x2 = p1 + p1  # == 2 * p1 exactly
    p2x2 = p2 + p2
    index, uv, depth = _outputs(n)
    m = 0
    cand = np.empty(_BLOCK, np.int64)
    cand_z = np.empty(_BLOCK, pts.dtype)
    for b0 in range(0, n, _BLOCK):
        k = _in_front(pts, b0, min(b0 + _BLOCK, n), rot, trans, min_z, cand, cand_z)
        if m + k > index.shape[0]:
            index, uv, depth = _grow(index, uv, depth, m, max(2 * index.shape[0], m + k))
        for j in range(k):
            i = cand[j]
            z = cand_z[j]
            x, y = _camera_xy(pts, i, rot, trans)
            inv_z = one / z
            xn = x * inv_z
            yn = y * inv_z
            if check_radius and not (xn * xn + yn * yn <= r2max):
                continue
            x2 = xn * xn
            y2 = yn * yn
            xy = xn * yn
            r2 = x2 + y2
            radial = one + r2 * (k1 + r2 * (k2 + r2 * k3))
            if rational:
                radial = radial / (one + r2 * (k4 + r2 * (k5 + r2 * k6)))
            xd = xn * radial + p1x2 * xy + p2 * (r2 + (x2 + x2))
            yd = yn * radial + p1 * (r2 + (y2 + y2)) + p2x2 * xy
            ok, u, v = _pixel(xd, yd, consts, width, height)
            if ok:
                index[m] = i
                uv[m, 0] = u
                uv[m, 1] = v
                depth[m] = np.float32(z)
                m += 1
    return index[:m].copy(), uv[:m].copy(), depth[:m].copy()


@njit
def _grow(index, uv, depth, m, cap):
    """The first ``m`` rows of the output arrays, copied into arrays of ``cap`` rows."""
    index2 = np.empty(cap, np.int64)
    uv2 = np.empty((cap, 2), np.float32)
    depth2 = np.empty(cap, np.float32)
    index2[:m] = index[:m]
    uv2[:m] = uv[:m]
    depth2[:m] = depth[:m]
    return index2, uv2, depth2


@njit
def _min_nan(a, b):
    """``np.minimum(a, b)`` for scalars: NaN when either is NaN."""
    if a <= b or a != a:
        return a
    return b


@njit
def pixel_rows_cols(uv, width, height):
    """``Projection.pixels()``: truncated (row, col) int64, clipped to the image."""
    m = uv.shape[0]
    rows = np.empty(m, np.int64)
    cols = np.empty(m, np.int64)
    for i in range(m):
        c = np.int64(uv[i, 0])
        r = np.int64(uv[i, 1])
        cols[i] = min(max(c, 0), width - 1)
        rows[i] = min(max(r, 0), height - 1)
    return rows, cols


@njit
def _pairwise_min(src, dst, k):
    """``dst[j] = min(src[j], src[j + k])`` (the tail keeps ``src``); no NaN in ``src``.
    Written over slices so that LLVM vectorises it."""
    n = src.shape[0] - k
    a = src[:n]
    b = src[k:]
    d = dst[:n]
    for j in range(n):
        x = a[j]
        y = b[j]
        d[j] = y if y < x else x
    dst[n:] = src[n:]


@njit
def _zbuffer_direct(grid, rows, cols, rmin, rmax, depth, width, radius, factor, visible):
    """Window minimum read point by point with numpy's NaN-propagating minimum."""
    for i in range(rows.shape[0]):
        r0 = max(rows[i] - radius, rmin) - rmin
        r1 = min(rows[i] + radius, rmax) - rmin
        c0 = max(cols[i] - radius, 0)
        c1 = min(cols[i] + radius, width - 1)
        nearest = np.float32(np.inf)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                nearest = _min_nan(nearest, grid[r, radius + c])
        visible[i] = not (nearest < depth[i] * factor)


def zbuffer_scratch_size(width: int, height: int, radius: int) -> int:
    """Length of the float32 ``scratch`` that :func:`zbuffer_kernel` needs at most."""
    return 2 * height * (width + 2 * radius)


@njit
def zbuffer_kernel(uv, depth, width, height, radius, factor, scratch):
    """(M,) bool visibility of ``zbuffer_visible``: a point is hidden when the nearest depth in
    its (2 ``radius`` + 1)² window is < ``depth * factor`` (``factor = 1 - tolerance``,
    float32). ``uv`` (M, 2) float32, ``depth`` (M,) float32; ``scratch`` float32 of at least
    :func:`zbuffer_scratch_size` (reused between calls: no fresh pages to fault in).

    The nearest-depth image covers the band of rows that hold points, each row padded with
    ``radius`` empty (inf) columns on both sides. Its window minimum is separable: along the
    rows by doubling over the whole band (vectorised passes), then at every point two reads per
    row of its window. Minima are exact, so the result equals the numpy filter. With NaN
    depths the direct (2r+1)² loop with numpy's NaN-propagating minimum is used instead.
    """
    m = uv.shape[0]
    visible = np.ones(m, np.bool_)
    if m == 0:
        return visible
    rows, cols = pixel_rows_cols(uv, width, height)
    rmin = rows[0]
    rmax = rows[0]
    has_nan = False
    for i in range(m):
        rmin = min(rmin, rows[i])
        rmax = max(rmax, rows[i])
        if depth[i] != depth[i]:
            has_nan = True
    band = rmax - rmin + 1
    stride = width + 2 * radius
    size = band * stride
    src = scratch[:size]
    dst = scratch[size:2 * size]
    src[:] = np.inf
    grid = src.reshape((band, stride))
    for i in range(m):
        r = rows[i] - rmin
        c = cols[i] + radius
        grid[r, c] = _min_nan(grid[r, c], depth[i])
    if has_nan:
        _zbuffer_direct(grid, rows, cols, rmin, rmax, depth, width, radius, factor, visible)
        return visible
    # After the passes, src[j] = min(grid[j .. j + k - 1]) (flat, rows padded, so a window
    # never leaves its row); window 2r+1 = two windows of k at c and c + (2r + 1 - k).
    window = 2 * radius + 1
    k = 1
    while 2 * k <= window:
        _pairwise_min(src, dst, k)
        src, dst = dst, src
        k *= 2
    shift = window - k
    for i in range(m):
        r0 = max(rows[i] - radius, rmin) - rmin
        r1 = min(rows[i] + radius, rmax) - rmin
        c = cols[i]
        nearest = np.float32(np.inf)
        for r in range(r0, r1 + 1):
            a = src[r * stride + c]
            b = src[r * stride + c + shift]
            if a < nearest:
                nearest = a
            if b < nearest:
                nearest = b
        visible[i] = not (nearest < depth[i] * factor)
    return visible

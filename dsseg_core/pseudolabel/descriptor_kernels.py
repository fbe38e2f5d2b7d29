"""Compiled kernels of the weight-free descriptors (:mod:`.descriptors.colour`,
:mod:`.descriptors.geometric`).

* :func:`colour_sums_kernel` — the per-segment colour/texture sums of
  :func:`.descriptors.colour.colour_statistics` in one pass over the sampled mask pixels
  (every ``stride``-th pixel in x and y): CIELAB of the pixel and ``L*`` of its right and
  lower neighbours (forward-difference gradients), accumulated in float64 in row-major pixel
  order, i.e. the order of the numpy path's ``np.bincount``. No band-sized ``L*`` image, no
  temporaries. Per pixel the arithmetic is numpy's, float32 for float32: ``Y`` of ``L*`` as
  ``(r·m0 + g·m1) + b·m2`` (numpy's matrix-vector product) and ``X, Y, Z`` of ``rgb_to_lab``
  with fused multiply-adds (numpy hands that matrix product to BLAS, whose float32 kernels
  accumulate with FMA), and the cube root is glibc's ``cbrtf`` algorithm (:func:`cbrt32`),
  so the sums equal numpy's bit for bit on glibc/OpenBLAS systems (checked by the tests);
  elsewhere they differ by float32 rounding (< 1e-6 relative).
* :func:`segment_sums_kernel`, :func:`segment_extents_kernel`, :func:`ground_cells_kernel`
  — the per-point reductions of :func:`.descriptors.geometric.geometric_descriptors`: a
  stable counting sort by segment instead of ``argsort``, sums with numpy's own pairwise
  summation (:func:`reduceat_sum`, so means and covariances equal ``np.add.reduceat``'s bit
  for bit), ground cells on a dense grid with a selection instead of ``lexsort``. The
  eigen-decomposition and the features stay numpy, shared by both paths.

Callers pass fixed dtypes (see the docstrings) so numba compiles each kernel once (the pixel
loops index with unsigned integers: numba then skips its negative-index wraparound).
"""

from __future__ import annotations

import numpy as np

from dsseg_core.jit import HAVE_NUMBA, njit

__all__ = [
    'cbrt32',
    'colour_sums_kernel',
    'fma32',
    'ground_cells_kernel',
    'reduceat_sum',
    'segment_extents_kernel',
    'segment_sums_kernel',
]

if HAVE_NUMBA:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def _fma_f32(typingctx: object, a: types.Type, b: types.Type, c: types.Type
                 ) -> tuple[object, object]:
        """``llvm.fma.f32``: ``a * b + c`` rounded once (one instruction on FMA CPUs)."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context: object, builder: ir.IRBuilder, signature: object,
                    args: list) -> ir.Value:
            fnty = ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 3)
            fn = builder.module.declare_intrinsic('llvm.fma', [ir.FloatType()], fnty)
            return builder.call(fn, args)

        return sig, codegen
else:  # pragma: no cover - kernels are not called without numba
    def _fma_f32(a: float, b: float, c: float) -> float:
        return float(np.float32(np.float64(a) * np.float64(b) + np.float64(c)))


@njit
def fma32(a: float, b: float, c: float) -> float:
    """float32 fused multiply-add ``a * b + c`` (one rounding)."""
    return _fma_f32(np.float32(a), np.float32(b), np.float32(c))


# 2^(k/3), k = -2..2, for the exponent remainder of cbrt32
_CBRT_FACTOR = np.array([1.0 / 1.5874010519681994748, 1.0 / 1.2599210498948731648, 1.0,
                         1.2599210498948731648, 1.5874010519681994748])


@njit
def cbrt32(t: float) -> float:
    """float32 cube root of a positive normal float32 ``t``, by the algorithm of the GNU C
    library's ``cbrtf`` (glibc <= 2.40, sysdeps/ieee754/flt-32/s_cbrtf.c: a quadratic first
    guess on the mantissa, one rational Halley step in double, exponent / 3), so it equals
    ``np.cbrt`` on float32 bit for bit there (error < 1 ulp), at ~4 ns instead of ~20 ns
    for the library call. Zero, subnormal and non-finite ``t`` are returned unchanged."""
    bits = np.int64(np.float32(t).view(np.int32))
    e = (bits >> 23) & 0xFF
    if e == 0 or e == 0xFF or bits < 0:
        return np.float32(t)
    xe = e - 126  # t = xm * 2**xe, xm in [0.5, 1)
    xm = np.float64(np.int32((bits & 0x807FFFFF) | (126 << 23)).view(np.float32))
    u = np.float32(0.492659620528969547 + (0.697570460207922770 - 0.191502161678719066 * xm)
                   * xm)
    t2 = u * u * u
    q = xe // 3  # C's truncating xe / 3 and xe % 3
    r = xe - 3 * q
    if xe < 0 and r != 0:
        q += 1
        r -= 3
    ym = np.float32(np.float64(u) * (np.float64(t2) + 2.0 * xm) / (2.0 * np.float64(t2) + xm)
                    * _CBRT_FACTOR[2 + r])
    return np.int32(np.int64(ym.view(np.int32)) + (q << 23)).view(np.float32)


@njit
def _lab_f(t: float, eps: float, kappa: float) -> float:
    """CIELAB ``f(t)`` in float32 (``eps``, ``kappa`` float32)."""
    if t > eps:
        return cbrt32(t)
    return (kappa * t + np.float32(16.0)) / np.float32(116.0)


@njit
def _luminance(image: np.ndarray, y: int, x: int, lut: np.ndarray, m: np.ndarray) -> float:
    """Relative luminance ``Y`` of one pixel as ``colour._lightness`` computes it (float32,
    numpy's matrix-vector product: no FMA)."""
    r = lut[image[y, x, 0]]
    g = lut[image[y, x, 1]]
    b = lut[image[y, x, 2]]
    return (r * m[1, 0] + g * m[1, 1]) + b * m[1, 2]


@njit
def _lightness_at(image: np.ndarray, y: int, x: int, lut: np.ndarray, m: np.ndarray,
                  eps: float, kappa: float) -> float:
    """``L*`` of one pixel as ``colour._lightness`` computes it (float32)."""
    return np.float32(116.0) * _lab_f(_luminance(image, y, x, lut, m), eps, kappa) \
        - np.float32(16.0)


@njit
def colour_sums_kernel(image: np.ndarray, segment_map: np.ndarray, num_segments: int,
                       stride: int, lut: np.ndarray, m: np.ndarray, mw: np.ndarray,
                       eps: float, kappa: float, total: np.ndarray, total_sq: np.ndarray,
                       count: np.ndarray) -> None:
    """Add the colour/texture sums of the sampled mask pixels to ``total (S, 6)``,
    ``total_sq (S, 6)``, ``count (S,)`` (float64; channels ``L, a, b, |grad|, |gx|,
    |gy|``).

    ``image (H, W, 3) uint8`` sRGB, ``segment_map (H, W) int32`` (``-1`` = none, ids
    ``>= num_segments`` ignored), pixels ``(y, x)`` with ``y % stride == x % stride == 0``;
    ``lut (256,) float32`` sRGB → linear, ``m (3, 3) float32`` the RGB → XYZ matrix (row 1:
    luminance), ``mw (3, 3) float32`` = ``m.T / white`` (``xyz = lin @ mw``), ``eps, kappa``
    float32 CIELAB constants. Gradients are forward differences of ``L*`` (zero in the last
    row / column).
    """
    h, w = segment_map.shape
    for y in range(0, h, stride):
        for x in range(0, w, stride):
            s = segment_map[y, x]
            if s < 0 or s >= num_segments:
                continue
            lum = _luminance(image, y, x, lut, m)
            f_lum = _lab_f(lum, eps, kappa)
            lc = np.float32(116.0) * f_lum - np.float32(16.0)
            gx = np.float32(0.0)
            gy = np.float32(0.0)
            if x + 1 < w:
                gx = abs(_lightness_at(image, y, x + 1, lut, m, eps, kappa) - lc)
            if y + 1 < h:
                gy = abs(_lightness_at(image, y + 1, x, lut, m, eps, kappa) - lc)
            r = lut[image[y, x, 0]]
            g = lut[image[y, x, 1]]
            b = lut[image[y, x, 2]]
            fx = _lab_f(_fma_f32(b, mw[2, 0], _fma_f32(g, mw[1, 0], r * mw[0, 0])),
                        eps, kappa)
            lum_fma = _fma_f32(b, mw[2, 1], _fma_f32(g, mw[1, 1], r * mw[0, 1]))
            fy = f_lum if lum_fma == lum else _lab_f(lum_fma, eps, kappa)
            fz = _lab_f(_fma_f32(b, mw[2, 2], _fma_f32(g, mw[1, 2], r * mw[0, 2])),
                        eps, kappa)
            v0 = np.float64(np.float32(116.0) * fy - np.float32(16.0))
            v1 = np.float64(np.float32(500.0) * (fx - fy))
            v2 = np.float64(np.float32(200.0) * (fy - fz))
            v3 = np.float64(np.hypot(gx, gy))
            v4 = np.float64(gx)
            v5 = np.float64(gy)
            total[s, 0] += v0
            total[s, 1] += v1
            total[s, 2] += v2
            total[s, 3] += v3
            total[s, 4] += v4
            total[s, 5] += v5
            total_sq[s, 0] += v0 * v0
            total_sq[s, 1] += v1 * v1
            total_sq[s, 2] += v2 * v2
            total_sq[s, 3] += v3 * v3
            total_sq[s, 4] += v4 * v4
            total_sq[s, 5] += v5 * v5
            count[s] += 1.0


# ------------------------------------------------------------------------------------------
# Geometric descriptors


@njit
def _pairwise_sum(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's pairwise summation of ``a[lo:lo + n]`` (float64; 8 accumulators in blocks of
    at most 128, halves above), the inner loop of ``np.add.reduce``."""
    if n < 8:
        res = -0.0
        for i in range(np.uint64(lo), np.uint64(lo + n)):
            res += a[i]
        return res
    if n <= 128:
        u = np.uint64(lo)
        r0 = a[u]
        r1 = a[u + np.uint64(1)]
        r2 = a[u + np.uint64(2)]
        r3 = a[u + np.uint64(3)]
        r4 = a[u + np.uint64(4)]
        r5 = a[u + np.uint64(5)]
        r6 = a[u + np.uint64(6)]
        r7 = a[u + np.uint64(7)]
        stop = u + np.uint64(n - n % 8)
        i = u + np.uint64(8)
        while i < stop:
            r0 += a[i]
            r1 += a[i + np.uint64(1)]
            r2 += a[i + np.uint64(2)]
            r3 += a[i + np.uint64(3)]
            r4 += a[i + np.uint64(4)]
            r5 += a[i + np.uint64(5)]
            r6 += a[i + np.uint64(6)]
            r7 += a[i + np.uint64(7)]
            i += np.uint64(8)
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        end = u + np.uint64(n)
        while i < end:
            res += a[i]
            i += np.uint64(1)
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


@njit
def reduceat_sum(a: np.ndarray, lo: int, n: int) -> float:
    """``np.add.reduceat`` of one segment ``a[lo:lo + n]`` (``n >= 1``): the first element
    plus the pairwise sum of the rest, bit for bit."""
    return a[np.uint64(lo)] + _pairwise_sum(a, lo + 1, n - 1)


@njit
def _nan_min(a: float, b: float) -> float:
    """``np.minimum``: NaN propagates."""
    return b if (b < a or np.isnan(b)) else a


@njit
def _nan_max(a: float, b: float) -> float:
    """``np.maximum``: NaN propagates."""
    return b if (b > a or np.isnan(b)) else a


@njit
def segment_sums_kernel(xyz: np.ndarray, segment_id: np.ndarray, num_segments: int,
                        intensity: np.ndarray, work: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                   np.ndarray, np.ndarray]:
    """Per-segment reductions of ``geometric_descriptors``, as its numpy code rounds them.

    ``xyz (N, 3) float64``, ``segment_id (N,) int64`` (ids outside ``[0, num_segments)``
    ignored), ``intensity (N,) float64`` or ``(0,)`` for none. Returns ``present (P,) int64``
    (segment ids with points, ascending), ``starts (P + 1,) int64`` and ``pts (4, M)
    float64`` (x, y, z, intensity of their points grouped by segment, in point order: a
    stable counting sort), ``mean (P, 3)``, ``cov (P, 6)`` (xx, xy, xz, yy, yz, zz: mean of
    the products of the centred coordinates) and ``stats (P, 4)`` (z min, z max, intensity
    mean, mean of squared intensity). Sums are ``np.add.reduceat``'s (:func:`reduceat_sum`).
    ``work (8, N) float64`` is scratch space (``pts`` is a view of it).
    """
    n_all = np.uint64(segment_id.shape[0])
    counts = np.zeros(num_segments, dtype=np.int64)
    for k in range(n_all):  # unsigned indices: no wraparound checks
        s = segment_id[k]
        if 0 <= s < num_segments:
            counts[np.uint64(s)] += 1
    present_n = 0
    for s in range(num_segments):
        if counts[s] > 0:
            present_n += 1
    present = np.empty(present_n, dtype=np.int64)
    starts = np.empty(present_n + 1, dtype=np.int64)
    slot = np.full(num_segments, -1, dtype=np.int64)  # write position per segment
    j = 0
    pos = 0
    for s in range(num_segments):
        if counts[s] > 0:
            present[j] = s
            starts[j] = pos
            slot[s] = pos
            pos += counts[s]
            j += 1
    starts[present_n] = pos
    has_i = intensity.shape[0] > 0
    pts = work[:4, :pos]
    px = pts[0]
    py = pts[1]
    pz = pts[2]
    pi = pts[3]
    for k in range(n_all):
        s = segment_id[k]
        if 0 <= s < num_segments:
            q = np.uint64(slot[np.uint64(s)])
            px[q] = xyz[k, 0]
            py[q] = xyz[k, 1]
            pz[q] = xyz[k, 2]
            pi[q] = intensity[k] if has_i else 0.0
            slot[np.uint64(s)] = q + np.uint64(1)
    mean = np.empty((present_n, 3))
    cov = np.empty((present_n, 6))
    stats = np.empty((present_n, 4))
    dx = work[4]
    dy = work[5]
    dz = work[6]
    prod = work[7]
    for j in range(present_n):
        lo = starts[j]
        n = starts[j + 1] - lo
        nf = np.float64(n)
        mx = reduceat_sum(px, lo, n) / nf
        my = reduceat_sum(py, lo, n) / nf
        mz = reduceat_sum(pz, lo, n) / nf
        mean[j, 0] = mx
        mean[j, 1] = my
        mean[j, 2] = mz
        un = np.uint64(n)
        ulo = np.uint64(lo)
        for k in range(un):
            dx[k] = px[ulo + k] - mx
            dy[k] = py[ulo + k] - my
            dz[k] = pz[ulo + k] - mz
        for e in range(6):
            if e == 0:
                u, v = dx, dx
            elif e == 1:
                u, v = dx, dy
            elif e == 2:
                u, v = dx, dz
            elif e == 3:
                u, v = dy, dy
            elif e == 4:
                u, v = dy, dz
            else:
                u, v = dz, dz
            for k in range(un):
                prod[k] = u[k] * v[k]
            cov[j, e] = reduceat_sum(prod, 0, n) / nf
        zmin = pz[ulo]
        zmax = pz[ulo]
        for k in range(ulo + np.uint64(1), ulo + un):
            z = pz[k]
            zmin = _nan_min(zmin, z)
            zmax = _nan_max(zmax, z)
        stats[j, 0] = zmin
        stats[j, 1] = zmax
        stats[j, 2] = reduceat_sum(pi, lo, n) / nf
        for k in range(un):
            prod[k] = pi[ulo + k] * pi[ulo + k]
        stats[j, 3] = reduceat_sum(prod, 0, n) / nf
    return present, starts, pts, mean, cov, stats


@njit
def segment_extents_kernel(pts: np.ndarray, starts: np.ndarray, mean: np.ndarray,
                           ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """``(P, 2)`` extents along ``(ux, uy)`` and across it (max - min of the projections of
    the centred x, y), per segment of :func:`segment_sums_kernel`'s grouping."""
    p = starts.shape[0] - 1
    out = np.empty((p, 2))
    for j in range(p):
        lo = starts[j]
        hi = starts[j + 1]
        amin = np.inf
        amax = -np.inf
        cmin = np.inf
        cmax = -np.inf
        for k in range(lo, hi):
            d0 = pts[0, k] - mean[j, 0]
            d1 = pts[1, k] - mean[j, 1]
            along = d0 * ux[j] + d1 * uy[j]
            across = -d0 * uy[j] + d1 * ux[j]
            amin = _nan_min(amin, along)
            amax = _nan_max(amax, along)
            cmin = _nan_min(cmin, across)
            cmax = _nan_max(cmax, across)
        out[j, 0] = amax - amin
        out[j, 1] = cmax - cmin
    return out


@njit
def _kth_smallest(a: np.ndarray, k: int) -> float:
    """The ``k``-th smallest value of ``a`` (0-based; ``a`` is reordered), i.e.
    ``np.sort(a)[k]``: Hoare's selection, or a sort when ``a`` holds NaN (sorted last)."""
    n = a.shape[0]
    for i in range(np.uint64(n)):
        if np.isnan(a[i]):
            a.sort()
            return a[k]
    lo = 0
    hi = n - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@njit
def ground_cells_kernel(xyz: np.ndarray, mask: np.ndarray, cell_m: float, max_cells: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground points ``xyz[mask]`` (``(N, 3) float64``, ``(N,) bool``, at least one) binned
    in a ``cell_m`` grid: ``(cell x (C,), cell y (C,), median z (C,))`` int64, int64,
    float64, cells in ``(x, y)`` order (as ``np.unique`` of the ``local_ground_height`` keys
    sorts them), median = the element at ``count // 2`` of the cell's sorted z. Uses a dense
    grid over the cells' bounding box; returns empty arrays when that box holds more than
    ``max_cells`` cells (the caller then uses numpy)."""
    n = 0
    for k in range(np.uint64(mask.shape[0])):
        if mask[k]:
            n += 1
    cx = np.empty(n, dtype=np.int64)
    cy = np.empty(n, dtype=np.int64)
    zs = np.empty(n, dtype=np.float64)
    g_z = np.empty(n, dtype=np.float64)
    j = 0
    for k in range(np.uint64(mask.shape[0])):
        if mask[k]:
            cx[j] = np.int64(np.floor(xyz[k, 0] / cell_m))
            cy[j] = np.int64(np.floor(xyz[k, 1] / cell_m))
            g_z[j] = xyz[k, 2]
            j += 1
    x0 = cx.min()
    y0 = cy.min()
    nx = cx.max() - x0 + 1
    ny = cy.max() - y0 + 1
    if nx * ny > max_cells:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    counts = np.zeros(nx * ny, dtype=np.int64)
    for k in range(n):
        counts[(cx[k] - x0) * ny + (cy[k] - y0)] += 1
    cells = 0
    for g in range(nx * ny):
        if counts[g] > 0:
            cells += 1
    out_x = np.empty(cells, dtype=np.int64)
    out_y = np.empty(cells, dtype=np.int64)
    med = np.empty(cells, dtype=np.float64)
    slot = np.empty(nx * ny, dtype=np.int64)
    pos = 0
    c = 0
    for g in range(nx * ny):
        slot[g] = pos
        if counts[g] > 0:
            out_x[c] = g // ny + x0
            out_y[c] = g % ny + y0
            c += 1
        pos += counts[g]
    for k in range(n):
        g = (cx[k] - x0) * ny + (cy[k] - y0)
        zs[slot[g]] = g_z[k]
        slot[g] += 1
    pos = 0
    c = 0
    for g in range(nx * ny):
        m = counts[g]
        if m > 0:
            med[c] = _kth_smallest(zs[pos:pos + m], m // 2)
            c += 1
            pos += m
    return out_x, out_y, med

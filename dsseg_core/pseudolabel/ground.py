"""Ground segmentation of a LiDAR scan.

Two methods (``GroundConfig.method``):

``range_angle`` (default) — Bogoslavskyi & Stachniss (depth_clustering), vectorised. In every
column of the range image the inclination ``alpha`` of the segment joining a pixel's point to the
next valid point below it (the beam below, skipping at most ``max_row_gap`` empty rows) is
computed and smoothed along the column with a Savitzky-Golay filter. Seeds are the lowest valid
pixel of each column when its smoothed ``alpha < ground_angle_deg``. Ground is what a
breadth-first labelling from the seeds reaches, computed at once as connected components
(``scipy.sparse.csgraph``) of the 4-neighbourhood graph:

* ``propagation='angle_diff'`` (default, the depth_clustering labelling): an edge joins two
  neighbouring pixels whose smoothed angles differ by less than ``angle_tolerance_deg``;
  pixels steeper than ``max_ground_angle_deg`` are never ground (no wall climbing);
* ``propagation='threshold'`` (stricter): every ground pixel has smoothed
  ``alpha < ground_angle_deg`` and vertical edges need a raw angle below
  ``ground_angle_deg + angle_tolerance_deg``.

Horizontal edges (with wrap-around) also need a height step below ``max_step_z`` (a car roof
never joins the road behind it). Points sharing a ground pixel are ground when their height is
within ``pixel_height_tolerance`` of the pixel's point.

Kernel (``dsseg_core.jit``; the numpy code above is the reference and the ``DSSEG_JIT=0``
fallback, with identical results): ``_ground_kernel`` walks the image column by column with
column-sized scratch buffers (previous valid pixel, angles, hole filling and the Savitzky-Golay
correlation in scipy's ``correlate1d`` order of operations), stores the edges that pass as
links to the neighbouring pixels, and floods the components of the seeds over them (the set of
pixels the numpy path's connected components give), then labels the points.

Only decisions leave the stage (candidate, seed, edge), so the kernel takes the angles from a
fast arctangent (``_atan2_deg_fast``, within ~1e-12 degrees of libm's; the margins assume
1e-9) and re-decides a column with libm's exact angles, as the numpy path has them, whenever a
comparison lies within the angles' error bound of its threshold (``_column_decisions``); a
horizontal edge that close takes both columns exactly. Every decision is therefore the numpy
path's, and the mask identical.

``ransac`` — one dominant near-horizontal plane: open3d ``segment_plane`` when importable (and
``ransac_backend`` allows), else a vectorised numpy RANSAC; planes tilted more than
``ransac_max_tilt_deg`` are rejected; inliers within ``ransac_distance`` are ground.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError, DependencyError
from dsseg_core.jit import jit_enabled, njit
from dsseg_core.pseudolabel.range_image import (
    RangeImage,
    RangeImageConfig,
    as_points,
    build_range_image,
)

__all__ = ['GroundConfig', 'ground_from_range_image', 'ransac_ground', 'segment_ground']

log = logging.getLogger(__name__)


class GroundConfig(StageConfig):
    """Ground removal (section ``ground``)."""

    method: Literal['range_angle', 'ransac'] = 'range_angle'
    # range_angle
    ground_angle_deg: float = Field(7.0, gt=0.0, lt=90.0,
                                    description='max inclination of ground (reference 7 deg)')
    angle_tolerance_deg: float = Field(
        5.0, ge=0.0, lt=90.0,
        description="'angle_diff': max difference of smoothed angles between two ground "
                    "neighbours; 'threshold': extra raw angle allowed between vertical "
                    'neighbours')
    propagation: Literal['threshold', 'angle_diff'] = Field(
        'angle_diff',
        description="'threshold': ground pixels all have a smoothed angle < ground_angle_deg; "
                    "'angle_diff': from seeds below ground_angle_deg, ground spreads to "
                    'neighbours whose smoothed angle differs by < angle_tolerance_deg')
    max_ground_angle_deg: float = Field(
        20.0, gt=0.0, lt=90.0,
        description="'angle_diff': no ground pixel is steeper than this (no road is steeper "
                    'than ~20 deg); stops ground creeping up walls through a smooth foot')
    smooth_window: int = Field(5, ge=1, le=51,
                               description='Savitzky-Golay window along a column (odd, 1 = off)')
    max_row_gap: int = Field(2, ge=0, le=16, description='empty rows bridged in a column')
    max_step_z: float = Field(0.3, gt=0.0,
                              description='max height step (m) between horizontal neighbours')
    pixel_height_tolerance: float = Field(
        0.25, gt=0.0,
        description="points sharing a ground pixel are ground if this close in z (m) to the "
                    "pixel's point")
    # ransac
    ransac_backend: Literal['auto', 'open3d', 'numpy'] = 'auto'
    ransac_distance: float = Field(0.2, gt=0.0, description='inlier distance to the plane (m)')
    ransac_iterations: int = Field(200, ge=1, le=100000)
    ransac_max_tilt_deg: float = Field(15.0, gt=0.0, le=90.0)
    ransac_max_range: float = Field(40.0, gt=0.0,
                                    description='only points within this (m) fit the plane')
    seed: int = 0

    @field_validator('smooth_window')
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f'smooth_window must be odd (got {v}); use e.g. 5 or 9')
        return v


def _savgol_coeffs(window: int, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing kernel (value at the centre of a least-squares polynomial);
    avoids importing scipy.signal, which is slow to import."""
    half = window // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    vander = np.vander(x, min(order, window - 1) + 1, increasing=True)
    return np.linalg.pinv(vander)[0][::-1].copy()  # convolve1d flips the kernel


def _column_prev(valid: np.ndarray, max_gap: int) -> np.ndarray:
    """For each pixel of a bottom-first image, the row of the previous valid pixel below it
    (smaller row index) within ``max_gap`` empty rows, or -1."""
    h = valid.shape[0]
    rows = np.broadcast_to(np.arange(h)[:, None], valid.shape)
    last = np.where(valid, rows, -1)
    last = np.maximum.accumulate(last, axis=0)
    prev = np.full(valid.shape, -1, np.int64)
    prev[1:] = last[:-1]
    too_far = (prev >= 0) & (rows - prev > max_gap + 1)
    prev[too_far] = -1
    return prev


_DEG = 180.0 / np.pi  # np.degrees(x) is x * (180 / pi)
_DBL_EPSILON = float(np.finfo(np.float64).eps)


def _correlate_weights(window: int) -> tuple[np.ndarray, int]:
    """The weights ``convolve1d`` hands to scipy's ``correlate1d`` for the Savitzky-Golay
    kernel (reversed), and the branch scipy's C code takes for them: 1 symmetric, -1
    antisymmetric, 0 general (tested with ``DBL_EPSILON`` as scipy does)."""
    w = np.ascontiguousarray(_savgol_coeffs(window)[::-1], dtype=np.float64)
    half = w.size // 2
    if w.size % 2 == 0:
        return w, 0
    if all(abs(w[half + i] - w[half - i]) <= _DBL_EPSILON for i in range(1, half + 1)):
        return w, 1
    if all(abs(w[half + i] + w[half - i]) <= _DBL_EPSILON for i in range(1, half + 1)):
        return w, -1
    return w, 0


@njit
def _correlate_at(x: np.ndarray, h: int, w: np.ndarray, sym: int, i: int) -> float:
    """Element ``i`` of ``scipy.ndimage.correlate1d(x[:h], w, mode='nearest')``, with the
    operations of scipy's C loop (symmetric, antisymmetric or general weights) in the same
    order: bit-identical."""
    size1 = w.shape[0] // 2
    size2 = w.shape[0] - size1 - 1
    if size1 <= i < h - size1:  # interior: no border clamping
        if sym > 0:
            acc = x[i] * w[size1]
            for jj in range(-size1, 0):
                acc += (x[i + jj] + x[i - jj]) * w[size1 + jj]
        elif sym < 0:
            acc = x[i] * w[size1]
            for jj in range(-size1, 0):
                acc += (x[i + jj] - x[i - jj]) * w[size1 + jj]
        else:
            acc = x[i + size2] * w[size1 + size2]
            for jj in range(-size1, size2):
                acc += x[i + jj] * w[size1 + jj]
        return acc
    if sym > 0:
        acc = x[i] * w[size1]
        for jj in range(-size1, 0):
            lo = min(max(i + jj, 0), h - 1)
            hi = min(max(i - jj, 0), h - 1)
            acc += (x[lo] + x[hi]) * w[size1 + jj]
    elif sym < 0:
        acc = x[i] * w[size1]
        for jj in range(-size1, 0):
            lo = min(max(i + jj, 0), h - 1)
            hi = min(max(i - jj, 0), h - 1)
            acc += (x[lo] - x[hi]) * w[size1 + jj]
    else:
        acc = x[min(max(i + size2, 0), h - 1)] * w[size1 + size2]
        for jj in range(-size1, size2):
            acc += x[min(max(i + jj, 0), h - 1)] * w[size1 + jj]
    return acc


_FAST_ATAN_ERR_DEG = 1e-9  # bound on |fast - exact| inclination (degrees), ~1000x the real one
_HALF_PI = np.pi / 2


@njit
def _atan2_deg_fast(y: float, x: float, tab: np.ndarray) -> float:
    """``degrees(atan2(y, x))`` for ``y, x >= 0`` within ~1e-12 degrees of libm's: the ratio
    ``t = min / max`` in [0, 1], ``atan(t) = atan(c) + atan((t - c) / (1 + t c))`` around the
    nearest ``c = k / 8`` (``tab[k] = atan(c)``), the remainder (|u| <= 1/16) by its Taylor
    series to ``u^9`` (truncation < 6e-15 rad), ``pi / 2 - atan(t)`` above the diagonal.
    Zeros and non-finite inputs go to libm."""
    if not (y > 0.0 and x > 0.0) or y == np.inf or x == np.inf:
        return math.atan2(y, x) * _DEG
    swap = y > x
    t = x / y if swap else y / x
    k = int(t * 8.0 + 0.5)
    c = k * 0.125
    u = (t - c) / (1.0 + t * c)
    u2 = u * u
    a = tab[k] + u * (1.0 - u2 * (1.0 / 3.0 - u2 * (0.2 - u2 * (1.0 / 7.0 - u2 * (1.0 / 9.0)))))
    if swap:
        a = _HALF_PI - a
    return a * _DEG


@njit
def _column_angles(zc: np.ndarray, dc: np.ndarray, vc: np.ndarray, o: int, h: int,
                   max_gap: int, smooth: bool, weights: np.ndarray, sym: int, tab: np.ndarray,
                   exact: bool, prev: np.ndarray, alpha: np.ndarray, raw: np.ndarray,
                   filled: np.ndarray) -> None:
    """One column (pixels ``o .. o + h`` of the column-major arrays, bottom first): each valid
    pixel's previous valid pixel below within ``max_gap`` empty rows (``prev``), the
    inclination to it (``raw``; the lowest pixel of a column segment takes the angle of the
    pixel above it, the pixel whose previous pixel it is; NaN where none), and ``alpha``: the
    angles with holes filled from below, smoothed (scipy's ``convolve1d`` arithmetic), NaN
    where ``raw`` is. ``exact``: libm's arctangent (the numpy path's values), else the fast
    one (see ``_atan2_deg_fast``)."""
    last = -1
    first = h
    for rb in range(h):
        q = last if last >= 0 and rb - last <= max_gap + 1 else -1
        prev[rb] = q
        raw[rb] = np.nan
        if vc[o + rb]:
            if q >= 0:
                dz = abs(zc[o + rb] - zc[o + q])
                dd = abs(dc[o + rb] - dc[o + q])
                a = math.atan2(dz, dd) * _DEG if exact else _atan2_deg_fast(dz, dd, tab)
                raw[rb] = a
                if prev[q] < 0:
                    raw[q] = a
                    first = min(first, q)
                first = min(first, rb)
            last = rb
    if not smooth or first == h:
        for rb in range(h):
            alpha[rb] = raw[rb]
        return
    carry = raw[first]  # rows below the first angle take it, as the numpy path
    for rb in range(h):
        if np.isfinite(raw[rb]):
            carry = raw[rb]
        filled[rb] = carry
    size1 = weights.shape[0] // 2
    size2 = weights.shape[0] - size1 - 1
    for rb in range(h):
        if not np.isfinite(raw[rb]):
            alpha[rb] = np.nan
        elif size1 <= rb < h - size1:  # interior rows: scipy's loops, inline
            if sym == 0:
                acc = filled[rb + size2] * weights[size1 + size2]
                for jj in range(-size1, size2):
                    acc += filled[rb + jj] * weights[size1 + jj]
            else:
                acc = filled[rb] * weights[size1]
                for jj in range(-size1, 0):
                    if sym > 0:
                        acc += (filled[rb + jj] + filled[rb - jj]) * weights[size1 + jj]
                    else:
                        acc += (filled[rb + jj] - filled[rb - jj]) * weights[size1 + jj]
            alpha[rb] = acc
        else:
            alpha[rb] = _correlate_at(filled, h, weights, sym, rb)


@njit
def _column_decisions(c: int, o: int, h: int, alpha: np.ndarray, raw: np.ndarray,
                      prev: np.ndarray, vc: np.ndarray, zc: np.ndarray, cand: np.ndarray,
                      down: np.ndarray, up: np.ndarray, right: np.ndarray, seed: np.ndarray,
                      a_cur: np.ndarray, a_prev: np.ndarray, threshold: bool,
                      ground_angle: float, max_ground_angle: float, tolerance: float,
                      raw_limit: float, max_step_z: float, m_raw: float, m_val: float,
                      m_diff: float) -> tuple[bool, bool, bool]:
    """Candidates, the seed, vertical edges in column ``c`` and horizontal edges from column
    ``c - 1`` (whose smoothed angles are ``a_prev``), as the numpy path decides them; the
    column's smoothed angles (90 where none) into ``a_cur``.

    Returns ``(in-column decision within its margin, horizontal-edge decision within its
    margin, a seedable pixel)``: with the fast angles, a comparison closer to its threshold
    than the angles' error bound (``m_raw`` raw angle, ``m_val`` smoothed angle, ``m_diff``
    difference of two) may differ from the exact one; margins 0 check nothing.
    """
    low = -1
    any_seedable = False
    amb_col = False
    amb_h = False
    for rb in range(h):
        a = alpha[rb]
        fin = np.isfinite(a)
        if fin and (abs(a - ground_angle) <= m_val
                    or (not threshold and abs(a - max_ground_angle) <= m_val)):
            amb_col = True
        seedable = fin and a < ground_angle
        any_seedable = any_seedable or seedable
        is_cand = seedable if threshold else fin and a < max_ground_angle
        cand[o + rb] = is_cand
        if not fin:
            a = 90.0
        a_cur[rb] = a
        if low < 0 and vc[o + rb]:
            low = rb
            if seedable:
                seed[c] = o + rb
        if is_cand:
            # vertical edge: to the previous valid pixel below, a candidate too
            q = prev[rb]
            if q >= 0 and cand[o + q]:
                if threshold:
                    lim = raw[rb] if np.isfinite(raw[rb]) else 90.0
                    if abs(lim - raw_limit) <= m_raw:
                        amb_col = True
                    join = lim < raw_limit
                else:
                    diff = abs(a - a_cur[q])
                    if abs(diff - tolerance) <= m_diff:
                        amb_col = True
                    join = diff < tolerance
                if join:
                    down[o + rb] = rb - q
                    up[o + q] = rb - q
            # horizontal edge from the previous column: small height step, close angles
            ql = o - h + rb
            if c > 0 and cand[ql] and abs(zc[ql] - zc[o + rb]) < max_step_z:
                if threshold:
                    right[ql] = True
                else:
                    diff = abs(a_prev[rb] - a)
                    if abs(diff - tolerance) <= m_diff:
                        amb_h = True
                    if diff < tolerance:
                        right[ql] = True
    return amb_col, amb_h, any_seedable


@njit
def _ground_kernel(index: np.ndarray, p: np.ndarray, dxy: np.ndarray, row_of_point: np.ndarray,
                   col_of_point: np.ndarray, max_gap: int, smooth: bool, weights: np.ndarray,
                   sym: int, threshold: bool, ground_angle: float, max_ground_angle: float,
                   tolerance: float, raw_limit: float, max_step_z: float,
                   pixel_tolerance: float, err_deg: float) -> np.ndarray:
    """``ground_from_range_image`` (``range_angle``) for a non-empty image: (N,) bool.
    ``err_deg``: the bound on the fast arctangent's error that sets the decision margins.

    1. Heights and horizontal distances (``dxy``, ``hypot(x, y)`` per point) of the pixels'
       points, gathered into column-major, bottom-first arrays (``q = c * H + rb``, ``rb`` = 0
       the lowest beam) in tiles of 64 columns: reading the image down a column would jump
       by a power-of-two stride, whose cache lines all fall into the same cache set.
    2. Column by column: the angles (``_column_angles``, fast arctangent) and the decisions
       (``_column_decisions``): candidates and seeds (lowest valid pixel of a column, if
       seedable) from the smoothed angle; edges that pass the numpy path's tests stored as
       links: ``down``/``up`` (row distance to the previous / next pixel in the column) and
       ``right`` (same row, next column, wrap-around). A decision within the error margin of
       the fast angles: the column is cleared and decided again with libm's angles (the
       previous column's too, for a horizontal edge).
    3. Ground = the candidates reachable from the seeds: a depth-first flood fill over the
       links (the union of the seeds' connected components, as the numpy path's
       ``connected_components`` gives). A point is ground when its pixel is and its height is
       within ``pixel_tolerance`` of the pixel's point.
    """
    h, w = index.shape
    n = p.shape[0]
    npix = h * w
    flat = index.ravel()
    vc = np.zeros(npix, np.bool_)
    zc = np.empty(npix)
    dc = np.empty(npix)
    for c0 in range(0, w, 64):
        for r in range(h):
            rb = h - 1 - r
            for c in range(c0, min(c0 + 64, w)):
                i = flat[r * w + c]
                if i >= 0:
                    q = c * h + rb
                    vc[q] = True
                    zc[q] = np.float64(p[i, 2])
                    dc[q] = dxy[i]
    cand = np.zeros(npix, np.bool_)
    down = np.zeros(npix, np.int8)
    up = np.zeros(npix, np.int8)
    right = np.zeros(npix, np.bool_)
    seed = np.full(w, -1, np.int64)
    tab = np.empty(9)  # atan(k / 8), the fast arctangent's anchors
    for k in range(9):
        tab[k] = math.atan(k * 0.125)
    prev = np.full(h, -1, np.int64)
    alpha = np.full(h, np.nan)
    raw = np.full(h, np.nan)
    filled = np.zeros(h)
    a_cur = np.zeros(h)
    a_prev = np.zeros(h)
    a_first = np.zeros(h)
    # scratch for recomputing a neighbouring column exactly
    prev2 = np.full(h, -1, np.int64)
    alpha2 = np.full(h, np.nan)
    raw2 = np.full(h, np.nan)
    # decision margins (degrees) of the fast angles: raw, smoothed, difference of two smoothed
    w_sum = 1.0
    if smooth:
        w_sum = 0.0
        for k in range(weights.shape[0]):
            w_sum += abs(weights[k])
    m_raw = 2.0 * err_deg
    m_val = 2.0 * err_deg * (w_sum + 1.0)
    m_diff = 2.0 * m_val
    any_seedable = False
    for c in range(w):
        o = c * h
        _column_angles(zc, dc, vc, o, h, max_gap, smooth, weights, sym, tab, False, prev,
                       alpha, raw, filled)
        amb_col, amb_h, seedable = _column_decisions(
            c, o, h, alpha, raw, prev, vc, zc, cand, down, up, right, seed, a_cur, a_prev,
            threshold, ground_angle, max_ground_angle, tolerance, raw_limit, max_step_z,
            m_raw, m_val, m_diff)
        if amb_col or amb_h:
            # a decision too close to call with the fast angles: decide with the exact ones
            for rb in range(h):
                cand[o + rb] = False
                down[o + rb] = 0
                up[o + rb] = 0
                if c > 0:
                    right[o - h + rb] = False
            seed[c] = -1
            _column_angles(zc, dc, vc, o, h, max_gap, smooth, weights, sym, tab, True, prev,
                           alpha, raw, filled)
            if amb_h and c > 0:
                _column_angles(zc, dc, vc, o - h, h, max_gap, smooth, weights, sym, tab, True,
                               prev2, alpha2, raw2, filled)
                for rb in range(h):
                    a_prev[rb] = alpha2[rb] if np.isfinite(alpha2[rb]) else 90.0
            _, _, seedable = _column_decisions(
                c, o, h, alpha, raw, prev, vc, zc, cand, down, up, right, seed, a_cur, a_prev,
                threshold, ground_angle, max_ground_angle, tolerance, raw_limit, max_step_z,
                0.0, 0.0, 0.0)
        any_seedable = any_seedable or seedable
        if c == 0:
            for rb in range(h):
                a_first[rb] = a_cur[rb]
        a_prev, a_cur = a_cur, a_prev  # this column's angles are the next one's previous
    # wrap-around: the last column and the first (exact angles of both when too close)
    o = (w - 1) * h
    exact_wrap = False
    for rb in range(h):
        if (not threshold and cand[o + rb] and cand[rb] and abs(zc[o + rb] - zc[rb]) < max_step_z
                and abs(abs(a_prev[rb] - a_first[rb]) - tolerance) <= m_diff):
            exact_wrap = True
    if exact_wrap:
        for col, buf in ((w - 1, a_prev), (0, a_first)):
            _column_angles(zc, dc, vc, col * h, h, max_gap, smooth, weights, sym, tab, True,
                           prev2, alpha2, raw2, filled)
            for rb in range(h):
                buf[rb] = alpha2[rb] if np.isfinite(alpha2[rb]) else 90.0
    for rb in range(h):
        if cand[o + rb] and cand[rb] and abs(zc[o + rb] - zc[rb]) < max_step_z and (
                threshold or abs(a_prev[rb] - a_first[rb]) < tolerance):
            right[o + rb] = True
    out = np.zeros(n, np.bool_)
    if not any_seedable:
        return out
    ground = np.zeros(npix, np.bool_)
    stack = np.empty(npix, np.int64)
    top = 0
    for c in range(w):
        q = seed[c]
        if q < 0 or not cand[q] or ground[q]:
            continue
        ground[q] = True
        stack[0] = q
        top = 1
        while top > 0:
            top -= 1
            q = stack[top]
            for k in range(4):
                if k == 0:
                    nb = q - down[q] if down[q] > 0 else -1
                elif k == 1:
                    nb = q + up[q] if up[q] > 0 else -1
                elif k == 2:  # same row of the next column (wrap-around: column-major ids)
                    nb = (q + h if q + h < npix else q + h - npix) if right[q] else -1
                else:
                    nb = q - h if q >= h else q - h + npix
                    if not right[nb]:
                        nb = -1
                if nb >= 0 and not ground[nb]:
                    ground[nb] = True
                    stack[top] = nb
                    top += 1
    for i in range(n):
        r = row_of_point[i]
        if r < 0:
            continue
        q = np.int64(col_of_point[i]) * h + (h - 1 - r)
        if ground[q]:
            out[i] = abs(np.float64(p[i, 2]) - zc[q]) <= pixel_tolerance
    return out


def _ground_jit(xyz: np.ndarray, ri: RangeImage, cfg: GroundConfig,
                err_deg: float = _FAST_ATAN_ERR_DEG) -> np.ndarray:
    """The kernel path of ``ground_from_range_image`` (a non-empty image); ``err_deg`` the
    fast arctangent's error bound (a larger one re-decides more columns exactly)."""
    n = xyz.shape[0]
    smooth = cfg.smooth_window > 1 and ri.rows >= cfg.smooth_window
    weights, sym = _correlate_weights(cfg.smooth_window if smooth else 1)
    pts = as_points(xyz)
    dxy = ri.point_dxy
    if dxy.shape != (n,) or dxy.dtype != np.float64:
        dxy = np.hypot(pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64))
    return _ground_kernel(
        np.ascontiguousarray(ri.index, dtype=np.int32), pts, np.ascontiguousarray(dxy),
        np.ascontiguousarray(ri.row_of_point, dtype=np.int32),
        np.ascontiguousarray(ri.col_of_point, dtype=np.int32), int(cfg.max_row_gap), smooth,
        weights, sym, cfg.propagation == 'threshold', float(cfg.ground_angle_deg),
        float(cfg.max_ground_angle_deg), float(cfg.angle_tolerance_deg),
        float(cfg.ground_angle_deg + cfg.angle_tolerance_deg), float(cfg.max_step_z),
        float(cfg.pixel_height_tolerance), float(err_deg))


def ground_from_range_image(xyz: np.ndarray, ri: RangeImage,
                            cfg: GroundConfig | None = None) -> np.ndarray:
    """The ``range_angle`` method on a prebuilt range image -> (N,) bool."""
    from scipy.ndimage import convolve1d
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cfg = cfg or GroundConfig()
    n = xyz.shape[0]
    out = np.zeros(n, bool)
    if n == 0 or ri.rows == 0 or not (ri.index >= 0).any():
        return out
    if jit_enabled():
        return _ground_jit(xyz, ri, cfg)
    # bottom-first image: row 0 = lowest beam
    index = ri.index[::-1]
    valid = index >= 0
    h, w = index.shape
    safe = np.maximum(index, 0)
    p = xyz[:, :3].astype(np.float64)
    z = np.where(valid, p[safe, 2], 0.0)
    d = np.where(valid, np.hypot(p[safe, 0], p[safe, 1]), 0.0)

    prev = _column_prev(valid, cfg.max_row_gap)
    cols = np.broadcast_to(np.arange(w)[None, :], (h, w))
    has_prev = valid & (prev >= 0)
    pz = z[np.maximum(prev, 0), cols]
    pd = d[np.maximum(prev, 0), cols]
    alpha = np.full((h, w), np.nan)
    alpha[has_prev] = np.degrees(np.arctan2(np.abs(z - pz), np.abs(d - pd)))[has_prev]
    # the lowest point of a column segment takes the angle of the pixel above it
    nxt = _column_prev(valid[::-1], cfg.max_row_gap)[::-1]
    nxt = np.where(nxt >= 0, h - 1 - nxt, -1)
    starts = valid & ~has_prev & (nxt >= 0)
    alpha[starts] = alpha[nxt[starts], cols[starts]]
    raw = alpha.copy()
    # smooth along columns: fill holes by carrying the value from below, then Savitzky-Golay
    if cfg.smooth_window > 1 and h >= cfg.smooth_window:
        filled = alpha.copy()
        have = np.isfinite(filled)
        rows_idx = np.where(have, np.arange(h)[:, None], -1)
        src = np.maximum.accumulate(rows_idx, axis=0)
        filled = np.where(src >= 0, filled[np.maximum(src, 0), cols], np.nan)
        first = np.where(have.any(axis=0), np.argmax(have, axis=0), 0)
        filled = np.where(np.isnan(filled), alpha[first, np.arange(w)][None, :], filled)
        filled = np.nan_to_num(filled, nan=90.0)
        smooth = convolve1d(filled, _savgol_coeffs(cfg.smooth_window), axis=0,
                            mode='nearest')
        alpha = np.where(np.isfinite(alpha), smooth, np.nan)
    seedable = np.isfinite(alpha) & (alpha < cfg.ground_angle_deg)
    if not seedable.any():
        return out
    if cfg.propagation == 'threshold':
        cand = seedable
    else:  # angle_diff: edges decide, but nothing steeper than any drivable surface
        cand = np.isfinite(alpha) & (alpha < cfg.max_ground_angle_deg)
    a_s = np.nan_to_num(alpha, nan=90.0)

    pix = np.arange(h * w).reshape(h, w)
    # vertical edges: pixel -> previous valid pixel below, both candidates
    v_ok = cand & has_prev
    v_ok[v_ok] &= cand[prev[v_ok], cols[v_ok]]
    if cfg.propagation == 'threshold':  # raw angle small
        v_ok &= np.nan_to_num(raw, nan=90.0) < cfg.ground_angle_deg + cfg.angle_tolerance_deg
    else:  # smoothed angles of the two pixels close
        v_ok[v_ok] &= (np.abs(a_s[v_ok] - a_s[prev[v_ok], cols[v_ok]])
                       < cfg.angle_tolerance_deg)
    va = pix[v_ok]
    vb = prev[v_ok] * w + cols[v_ok]
    # horizontal edges with wrap-around, small height step
    right = np.roll(cand, -1, axis=1)
    zr = np.roll(z, -1, axis=1)
    h_ok = cand & right & (np.abs(z - zr) < cfg.max_step_z)
    if cfg.propagation == 'angle_diff':
        h_ok &= np.abs(a_s - np.roll(a_s, -1, axis=1)) < cfg.angle_tolerance_deg
    ha = pix[h_ok]
    hb = np.roll(pix, -1, axis=1)[h_ok]
    a = np.concatenate([va, ha])
    b = np.concatenate([vb, hb])
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(h * w, h * w)).tocsr()
    _, comp = connected_components(graph, directed=False)
    # seeds: lowest valid pixel of each column, if a candidate
    has_valid = valid.any(axis=0)
    low = np.argmax(valid, axis=0)
    seed_cols = np.flatnonzero(has_valid & seedable[low, np.arange(w)])
    ground_comps = np.unique(comp[low[seed_cols] * w + seed_cols])
    is_ground_comp = np.zeros(comp.max() + 1, bool)
    is_ground_comp[ground_comps] = True
    ground_pix = (cand.ravel() & is_ground_comp[comp]).reshape(h, w)[::-1]  # back to top-first
    z_img = z[::-1]

    r, c = ri.row_of_point, ri.col_of_point
    has = r >= 0
    idx = np.flatnonzero(has)
    gp = ground_pix[r[idx], c[idx]]
    dz = np.abs(p[idx, 2] - z_img[r[idx], c[idx]])
    out[idx] = gp & (dz <= cfg.pixel_height_tolerance)
    return out


def _numpy_ransac(p: np.ndarray, cfg: GroundConfig) -> tuple[np.ndarray, float] | None:
    """Best near-horizontal plane (unit normal with nz > 0, offset) or None."""
    rng = np.random.default_rng(cfg.seed)
    m = p.shape[0]
    if m < 3:
        return None
    score_pts = p if m <= 8000 else p[rng.choice(m, 8000, replace=False)]
    tri = rng.integers(0, m, size=(cfg.ransac_iterations, 3))
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    normal = np.cross(b - a, c - a)
    norm = np.linalg.norm(normal, axis=1)
    good = norm > 1e-9
    normal[good] /= norm[good, None]
    normal[normal[:, 2] < 0] *= -1
    good &= normal[:, 2] >= np.cos(np.radians(cfg.ransac_max_tilt_deg))
    if not good.any():
        return None
    normal, a = normal[good], a[good]
    offset = -np.einsum('ij,ij->i', normal, a)
    dist = np.abs(score_pts @ normal.T + offset[None, :])
    best = int(np.argmax((dist < cfg.ransac_distance).sum(axis=0)))
    n_best, o_best = normal[best], offset[best]
    # least-squares refinement on the inliers among all points
    inl = np.abs(p @ n_best + o_best) < cfg.ransac_distance
    if inl.sum() >= 3:
        q = p[inl]
        centre = q.mean(axis=0)
        _, _, vt = np.linalg.svd(q - centre, full_matrices=False)
        n_ref = vt[-1] * (1 if vt[-1, 2] >= 0 else -1)
        if n_ref[2] >= np.cos(np.radians(cfg.ransac_max_tilt_deg)):
            n_best, o_best = n_ref, -float(n_ref @ centre)
    return n_best, float(o_best)


def _open3d_ransac(p: np.ndarray, cfg: GroundConfig) -> tuple[np.ndarray, float] | None:
    import open3d as o3d

    o3d.utility.random.seed(cfg.seed)
    pts = p
    for _ in range(3):
        if pts.shape[0] < 3:
            return None
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        model, inliers = pcd.segment_plane(cfg.ransac_distance, 3, cfg.ransac_iterations)
        normal = np.asarray(model[:3], np.float64)
        off = float(model[3])
        norm = np.linalg.norm(normal)
        if norm < 1e-9:
            return None
        normal, off = normal / norm, off / norm
        if normal[2] < 0:
            normal, off = -normal, -off
        if normal[2] >= np.cos(np.radians(cfg.ransac_max_tilt_deg)):
            return normal, off
        keep = np.ones(pts.shape[0], bool)
        keep[np.asarray(inliers, np.int64)] = False
        pts = pts[keep]  # a wall: drop it and try again
    return None


def ransac_ground(xyz: np.ndarray, cfg: GroundConfig | None = None) -> np.ndarray:
    """The ``ransac`` method -> (N,) bool."""
    cfg = cfg or GroundConfig()
    n = xyz.shape[0]
    out = np.zeros(n, bool)
    if n < 3:
        return out
    p = xyz[:, :3].astype(np.float64)
    finite = np.isfinite(p).all(axis=1)
    near = finite & (np.hypot(p[:, 0], p[:, 1]) <= cfg.ransac_max_range)
    fit_pts = p[near]
    backend = cfg.ransac_backend
    if backend == 'auto':
        try:
            import open3d  # noqa: F401

            backend = 'open3d'
        except ImportError:
            backend = 'numpy'
    if backend == 'open3d':
        try:
            plane = _open3d_ransac(fit_pts, cfg)
        except ImportError as err:
            raise DependencyError(
                "ground.ransac_backend is 'open3d' but open3d is not installed; "
                "pip install open3d or set ransac_backend: numpy") from err
    else:
        plane = _numpy_ransac(fit_pts, cfg)
    if plane is None:
        log.info('ransac ground: no near-horizontal plane found in %d points', fit_pts.shape[0])
        return out
    normal, off = plane
    dist = np.where(finite, np.where(finite[:, None], p, 0.0) @ normal + off, np.inf)
    out[:] = np.abs(dist) < cfg.ransac_distance
    return out


def segment_ground(xyz: np.ndarray, ring: np.ndarray | None = None,
                   cfg: GroundConfig | None = None, *,
                   range_image: RangeImage | None = None,
                   range_image_cfg: RangeImageConfig | None = None) -> np.ndarray:
    """Ground mask (N,) bool of a scan ``xyz`` (N,3), LiDAR frame, z up.

    ``range_image`` reuses an image already built for the same scan (``range_angle``).
    Empty or tiny scans give an all-False mask.
    """
    cfg = cfg or GroundConfig()
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ConfigError(f'segment_ground: xyz must be (N, 3), got shape {xyz.shape}')
    if xyz.shape[0] == 0:
        return np.zeros(0, bool)
    if cfg.method == 'ransac':
        return ransac_ground(xyz, cfg)
    if range_image is None:
        range_image = build_range_image(xyz, ring, range_image_cfg)
    elif range_image.num_points != xyz.shape[0]:
        raise ConfigError(
            f'segment_ground: range image is of {range_image.num_points} points, scan has '
            f'{xyz.shape[0]}; build it from the same scan')
    return ground_from_range_image(xyz, range_image, cfg)

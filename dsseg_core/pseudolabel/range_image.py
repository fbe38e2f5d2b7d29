"""Range image of a LiDAR scan, built from the scan itself.

Rows are laser beams, row 0 = highest beam (image convention, the lowest beam is the last
row). The beam of each point comes from, in order of preference (``row_method='auto'``):

1. ``ring`` — the cloud's ring/beam field (nuScenes, Ouster, Velodyne drivers);
2. ``scan_order`` — points stored beam by beam in firing order, as in KITTI / SemanticKITTI
   ``.bin`` files: the unwrapped azimuth completes one turn per beam, so the beam index is the
   number of full turns past the scanner's start azimuth (estimated as the one that keeps each
   turn's elevations tightest). Accepted only if it yields a plausible beam count and beams
   whose median elevations are monotonic. A scan cut mid-rotation can give one or two extra
   partial turns; with ``num_rows`` set they are merged into their closest-elevation
   neighbour, so the image height is fixed (set it when a model needs a constant height);
3. ``elevation`` — beam elevation angles estimated from the data: a fine histogram of point
   elevations, its peaks (one per beam) refined by 1-D k-means; every point goes to the nearest
   beam. Works for 16- to 128-beam sensors, organized or not, in any point order.

Columns come from the azimuth: column 0 looks backwards (azimuth +-180 deg), the front
(azimuth 0, +x) is the middle column, left (+y) is on the left of the image. Several points in
one pixel: the pixel keeps the nearest (``index``, ties: the first point); the others keep
their row/column.

Two implementations (``dsseg_core.jit``): numba kernels (default) and the vectorised numpy code
they replaced, kept as the reference and fallback (``DSSEG_JIT=0``). Both give the same image:

* ``_geometry_kernel``: one pass over the points for range, azimuth, horizontal distance,
  validity (numpy: ~10 temporaries), reading float32 scans without a float64 copy
  (``as_points``);
* ``_scan_order_kernel``: the azimuth unwrapping and the start-azimuth search of
  ``scan_order_rows``: one pass for the median step's sign and the unwrapped azimuth of the
  subsample (both senses of rotation), one per candidate start over the ~4000 subsampled
  points, its per-turn sums kept in point order and summed in numpy's pairwise order
  (``_pairwise_sum``) so that the chosen start is the same, and one for the turns;
  ``_mod`` and ``_turn_of`` give numpy's float remainder and floor division without its
  ``fmod`` and division where the result cannot differ;
* ``_ring_rows_kernel``: beams ranked by median elevation, selected from a bucket sort of the
  subsample (numpy: ``lexsort``); elevations only of the subsampled points;
* ``_image_kernel``: columns and the nearest point per pixel in one pass, no sort (numpy: one
  ``argsort`` of a pixel-major, range-minor key; both keep the nearest, ties to the first).

The elevation-binning fallback (histogram peaks + k-means) stays numpy. The image carries each
point's horizontal distance (``point_dxy``) for the ground stage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError
from dsseg_core.jit import jit_enabled, njit

__all__ = [
    'RangeImage',
    'RangeImageConfig',
    'build_range_image',
    'estimate_beam_elevations',
    'rasterise',
    'scan_order_rows',
]

log = logging.getLogger(__name__)

MAX_ROWS = 512


class RangeImageConfig(StageConfig):
    """How a scan is turned into a range image (section ``range_image``)."""

    width: int = Field(2048, ge=8, le=16384,
                       description='columns; ~2048 for HDL-64/128-beam, 1024 for 32-beam')
    row_method: Literal['auto', 'ring', 'scan_order', 'elevation'] = 'auto'
    num_rows: int | None = Field(
        None, ge=1, le=MAX_ROWS,
        description='number of beams if known (elevation binning then fits exactly this many);'
                    ' None = from the ring field / scan order / elevation histogram')
    min_range: float = Field(1.0, ge=0.0, description='points nearer than this (m) are dropped')
    max_range: float = Field(250.0, gt=0.0, description='points farther than this are dropped')
    elevation_bin_deg: float = Field(0.04, gt=0.0, le=1.0,
                                     description='histogram resolution of beam estimation')
    min_beam_separation_deg: float = Field(0.15, gt=0.0,
                                           description='closest two beams can be (elevation)')
    scan_order_turn_tolerance_deg: float = Field(
        10.0, ge=0.0, le=90.0,
        description='backward azimuth steps up to this are jitter, not a new turn')


@dataclass
class RangeImage:
    """A scan as an ``rows x cols`` image of point indices.

    ``index[r, c]`` is the index (into the scan) of the nearest point in that pixel, -1 if empty;
    ``range`` its distance (0 where empty). ``row_of_point`` / ``col_of_point`` give every
    point's pixel (-1 for points dropped by the range limits or an unknown beam).
    ``point_range`` / ``point_dxy`` are every point's range (float32) and horizontal distance
    ``hypot(x, y)`` (float64, for the ground stage; empty when no point is in range).
    """

    rows: int
    cols: int
    index: np.ndarray  # (H, W) int32
    range: np.ndarray  # (H, W) float32
    row_of_point: np.ndarray  # (N,) int32
    col_of_point: np.ndarray  # (N,) int32
    row_source: str = 'none'  # 'ring' | 'scan_order' | 'elevation' | 'none'
    beam_elevation_deg: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    point_range: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    point_dxy: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: pixel holds a point."""
        return self.index >= 0

    @property
    def num_points(self) -> int:
        return int(self.row_of_point.shape[0])

    def pixel_of_point(self) -> np.ndarray:
        """(N,) int64 flat pixel id ``row * cols + col``, -1 for dropped points."""
        ok = self.row_of_point >= 0
        out = np.full(self.num_points, -1, dtype=np.int64)
        out[ok] = self.row_of_point[ok].astype(np.int64) * self.cols + self.col_of_point[ok]
        return out


def as_points(xyz: np.ndarray) -> np.ndarray:
    """The ``(N, 3)`` coordinates of a scan as the kernels take them: C-contiguous float32 (no
    copy of a float32 scan: the kernels widen each value to float64 as the numpy path's
    ``astype`` does, exactly) or float64 (any other dtype is cast). Two compiled signatures
    per kernel instead of one, to spare a copy of every scan."""
    xyz = np.asarray(xyz)[:, :3]
    if xyz.dtype != np.float32:
        return np.ascontiguousarray(xyz, dtype=np.float64)
    return np.ascontiguousarray(xyz)


def _empty(n: int, cols: int, rows: int = 0) -> RangeImage:
    return RangeImage(
        rows=rows, cols=cols,
        index=np.full((rows, cols), -1, np.int32), range=np.zeros((rows, cols), np.float32),
        row_of_point=np.full(n, -1, np.int32), col_of_point=np.full(n, -1, np.int32),
        point_range=np.zeros(n, np.float32),
    )


_TWO_PI = 2 * np.pi
_INV_TWO_PI = 1.0 / _TWO_PI
_DEG = 180.0 / np.pi  # np.degrees(x) is x * (180 / pi)
_SLACK = np.radians(1.0)
_COARSE_STARTS = np.radians(np.arange(0.0, 360.0, 10.0))
_FINE_OFFSETS = np.radians(np.arange(-10.0, 10.01, 1.0))


def scan_order_rows(xyz: np.ndarray, turn_tolerance_deg: float = 10.0) -> np.ndarray:
    """Beam index of each point from the firing order (KITTI-style beam-by-beam storage).

    The azimuth is unwrapped forward (in the scanner's sense of rotation, taken from the
    median step); each full turn is one beam. Returns (N,) int64 turn index starting at 0.
    """
    if jit_enabled() and xyz.shape[0] >= 2:
        pts = as_points(xyz)
        az = _azimuth_kernel(pts)
        if np.isfinite(az).all():  # non-finite points: the numpy path decides what they do
            return _scan_order_turns(pts, az, turn_tolerance_deg,
                                     lambda: xyz[:, :3].astype(np.float64))
    return _scan_order_rows_numpy(xyz, turn_tolerance_deg)


def _scan_order_turns(pts: np.ndarray, az: np.ndarray, turn_tolerance_deg: float,
                      numpy_points: Callable[[], np.ndarray]) -> np.ndarray:
    """Kernel path of ``scan_order_rows`` for points ``pts`` (non-finite ones count as the
    origin) and their azimuths; ``numpy_points()`` gives the float64 points the numpy path
    needs when the kernel hands over."""
    turns, status = _scan_order_kernel(pts, az, float(np.radians(turn_tolerance_deg)),
                                       _SLACK, _COARSE_STARTS, _FINE_OFFSETS)
    if status != 0:  # turns before the first beam: the numpy path raises as it always did
        return _scan_order_rows_numpy(numpy_points(), turn_tolerance_deg)
    return turns


@njit
def _mod(x: float, y: float) -> float:
    """``x % y`` for ``y > 0`` with numpy's (and Python's) result, without the ``fmod`` call in
    the usual cases: ``x`` in [0, y) is itself (+0.0 for a zero), in [y, 2y) it is ``x - y``
    (exact, Sterbenz), in (-y, 0) it is ``fmod(x, y) + y = x + y`` (rounded as numpy does)."""
    if 0.0 <= x < y:
        return x + 0.0
    if y <= x < 2.0 * y:
        return x - y
    if -y < x < 0.0:
        return x + y
    return x % y


@njit
def _azimuth_kernel(p: np.ndarray) -> np.ndarray:
    az = np.empty(p.shape[0])
    for i in range(p.shape[0]):
        az[i] = math.atan2(np.float64(p[i, 1]), np.float64(p[i, 0]))
    return az


@njit
def _pairwise_block(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's summation of at most 128 values: 8 accumulators, then the rest in order."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0 = a[lo]
    r1 = a[lo + 1]
    r2 = a[lo + 2]
    r3 = a[lo + 3]
    r4 = a[lo + 4]
    r5 = a[lo + 5]
    r6 = a[lo + 6]
    r7 = a[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit
def _pairwise_sum(a: np.ndarray) -> float:
    """Sum of ``a`` in the order of numpy's ``np.sum`` (pairwise summation: blocks of up to
    128 values summed by ``_pairwise_block``, longer ranges split in two at a multiple of 8,
    the halves added), so that sums are bit-identical to the numpy path. The recursion runs
    on an explicit stack (numba's cache cannot load recursive functions)."""
    n = a.shape[0]
    if n <= 128:
        return _pairwise_block(a, 0, n)
    st_lo = np.empty(64, np.int64)
    st_n = np.empty(64, np.int64)
    st_state = np.empty(64, np.int64)  # 0: start, 1: left half pending, 2: right half pending
    st_left = np.empty(64)
    st_lo[0] = 0
    st_n[0] = n
    st_state[0] = 0
    sp = 1
    val = 0.0
    while True:
        f = sp - 1
        cn = st_n[f]
        cl = st_lo[f]
        if cn <= 128:
            val = _pairwise_block(a, cl, cn)
            sp -= 1
        else:
            n2 = cn // 2
            n2 -= n2 % 8
            if st_state[f] == 0:
                st_state[f] = 1
                st_lo[sp] = cl
                st_n[sp] = n2
                st_state[sp] = 0
                sp += 1
                continue
            if st_state[f] == 1:
                st_left[f] = val
                st_state[f] = 2
                st_lo[sp] = cl + n2
                st_n[sp] = cn - n2
                st_state[sp] = 0
                sp += 1
                continue
            val = st_left[f] + val
            sp -= 1
        if sp == 0:
            return val


@njit
def _turn_of(u: float, start: float, slack: float) -> int:
    """``floor((u - start + slack) / (2 pi))`` exactly as numpy computes it. A multiplication by
    ``1 / (2 pi)`` decides unless its quotient lies within 1e-9 of an integer (it is within
    ~3e-16 relative of the divided one, so only there can the floors differ): there, and for
    huge quotients, the division does."""
    x = u - start + slack
    q = x * _INV_TWO_PI
    k = np.floor(q)
    f = q - k
    if f < 1e-9 or f > 1.0 - 1e-9 or abs(q) > 1e6:
        return np.int64(np.floor(x / _TWO_PI))
    return np.int64(k)


@njit
def _turn_spread(u_sub: np.ndarray, el_sub: np.ndarray, start: float, slack: float,
                 u_min: float, u_max: float) -> float:
    """Elevation spread within turns when beams start at ``start`` (numpy: ``spread``).

    The turn is a non-decreasing function of the unwrapped azimuth (every rounding is
    monotonic), so the first and last turns are those of ``u_min`` and ``u_max``. Per-turn
    count and sums are accumulated in registers while consecutive points share a turn, and
    written back when it changes: each turn's sum is still taken in point order, as
    ``np.bincount`` takes it."""
    m = u_sub.shape[0]
    tmin = _turn_of(u_min, start, slack)
    nb = _turn_of(u_max, start, slack) - tmin + 1
    cnt = np.zeros(nb, np.int64)
    s1 = np.zeros(nb)
    s2 = np.zeros(nb)
    b = _turn_of(u_sub[0], start, slack) - tmin
    c = cnt[b]
    a1 = s1[b]
    a2 = s2[b]
    for j in range(m):
        bj = _turn_of(u_sub[j], start, slack) - tmin
        if bj != b:
            cnt[b] = c
            s1[b] = a1
            s2[b] = a2
            b = bj
            c = cnt[b]
            a1 = s1[b]
            a2 = s2[b]
        e = el_sub[j]
        c += 1
        a1 += e
        a2 += e * e
    cnt[b] = c
    s1[b] = a1
    s2[b] = a2
    terms = np.empty(nb)
    for k in range(nb):
        terms[k] = s2[k] - s1[k] * s1[k] / max(cnt[k], 1)
    return _pairwise_sum(terms)


@njit
def _unwrap_step(az: np.ndarray, i: int, mirror: bool, back: float) -> float:
    """Forward azimuth step from point ``i`` to ``i + 1`` (numpy: ``fwd``)."""
    s = _mod(az[i + 1] - az[i] + np.pi, _TWO_PI) - np.pi
    if mirror:
        s = -s
    f = _mod(s, _TWO_PI)
    if f > back:  # small backward jitter stays small
        f -= _TWO_PI
    return f


@njit
def _scan_order_kernel(p: np.ndarray, az: np.ndarray, tol: float, slack: float,
                       coarse: np.ndarray, fine_offsets: np.ndarray) -> tuple[np.ndarray, int]:
    """``scan_order_rows`` in a few passes over the points plus one over the subsample per
    candidate start. The unwrapped azimuth is a running sum, recomputed in each pass that needs
    it (the same additions in the same order as numpy's ``cumsum``) instead of stored.

    Returns ``(turns, status)``; status 1 when a point lies before the first beam's start
    (the numpy path's ``bincount`` raises there; the caller reruns it).
    """
    n = az.shape[0]
    turns = np.zeros(n, np.int64)
    if n < 2:
        return turns, 0
    # one pass: the sign of the median wrapped step (clockwise scanner: negative) from the
    # count of negative steps and, when they are exactly half, the two middle values; and the
    # unwrapped azimuth of the subsample and of the last point for both senses of rotation
    sub = max(1, n // 4000)
    m = (n + sub - 1) // sub
    back = _TWO_PI - tol
    u0_f = _mod(az[0], _TWO_PI) + 0.0  # unwrapped[0], counterclockwise
    u0_m = _mod(-az[0], _TWO_PI) + 0.0  # clockwise (mirrored)
    u_sub_f = np.empty(m)
    u_sub_m = np.empty(m)
    u_sub_f[0] = u0_f
    u_sub_m[0] = u0_m
    acc_f = 0.0
    acc_m = 0.0
    n_neg = 0
    max_neg = -np.inf
    min_pos = np.inf
    for i in range(n - 1):
        s = _mod(az[i + 1] - az[i] + np.pi, _TWO_PI) - np.pi
        if s < 0:
            n_neg += 1
            max_neg = max(max_neg, s)
        else:
            min_pos = min(min_pos, s)
        f = _mod(s, _TWO_PI)
        if f > back:  # small backward jitter stays small
            f -= _TWO_PI
        acc_f += f
        f = _mod(-s, _TWO_PI)
        if f > back:
            f -= _TWO_PI
        acc_m += f
        if (i + 1) % sub == 0:
            u_sub_f[(i + 1) // sub] = u0_f + acc_f
            u_sub_m[(i + 1) // sub] = u0_m + acc_m
    half = (n - 1) // 2
    if (n - 1) % 2:
        mirror = n_neg > half
    else:  # numpy: the mean of the two middle values, (a + b) / 2
        mirror = n_neg > half or (n_neg == half and (max_neg + min_pos) / 2.0 < 0)
    u0 = u0_m if mirror else u0_f
    u = u0 + (acc_m if mirror else acc_f)
    u_sub = u_sub_m if mirror else u_sub_f
    start = u0
    last = np.int64(np.floor((u - start + slack) / _TWO_PI))
    if last < 1:
        turns[0] = np.int64(np.floor((u0 - start + slack) / _TWO_PI))
        acc = 0.0
        for i in range(n - 1):
            acc += _unwrap_step(az, i, mirror, back)
            turns[i + 1] = np.int64(np.floor((u0 + acc - start + slack) / _TWO_PI))
        return turns, 0
    # start azimuth minimising the elevation spread within turns: 10 deg grid, then 1 deg
    el_sub = np.empty(m)
    for j in range(m):
        i = j * sub
        x = np.float64(p[i, 0])
        y = np.float64(p[i, 1])
        z = np.float64(p[i, 2])
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            x = 0.0
            y = 0.0
            z = 0.0
        el_sub[j] = math.atan2(z, math.hypot(x, y))
    u_min = u_sub.min()
    u_max = u_sub.max()
    best = coarse[0]
    best_val = 0.0
    for k in range(coarse.shape[0]):
        v = _turn_spread(u_sub, el_sub, coarse[k], slack, u_min, u_max)
        if k == 0 or v < best_val:
            best_val = v
            best = coarse[k]
    start = best + fine_offsets[0]
    for k in range(fine_offsets.shape[0]):
        a = best + fine_offsets[k]
        v = _turn_spread(u_sub, el_sub, a, slack, u_min, u_max)
        if k == 0 or v < best_val:
            best_val = v
            start = a
    t0 = np.int64(np.floor((u0 - start + slack) / _TWO_PI))
    tmax = np.int64(0)
    acc = 0.0
    for i in range(n):
        if i > 0:
            acc += _unwrap_step(az, i - 1, mirror, back)
        t = _turn_of(u0 + acc, start, slack) - t0
        if t < 0:
            return turns, 1
        turns[i] = t
        tmax = max(tmax, t)
    # a few points of a beam's tail (or head) past the start azimuth: not a beam of their own
    size = tmax + 1
    if size > 2:
        cnt = np.zeros(size, np.int64)
        for i in range(n):
            cnt[turns[i]] += 1
        srt = np.sort(cnt)
        mid = size // 2
        med = float(srt[mid]) if size % 2 else (float(srt[mid - 1]) + float(srt[mid])) / 2.0
        tiny = 0.1 * med
        if cnt[size - 1] < tiny:
            for i in range(n):
                if turns[i] == size - 1:
                    turns[i] = size - 2
        if cnt[0] < tiny:
            for i in range(n):
                turns[i] = max(turns[i] - 1, 0)
    return turns, 0


def _scan_order_rows_numpy(xyz: np.ndarray, turn_tolerance_deg: float = 10.0) -> np.ndarray:
    """Reference (numpy) path of ``scan_order_rows``."""
    n = xyz.shape[0]
    if n < 2:
        return np.zeros(n, np.int64)
    az = np.arctan2(xyz[:, 1].astype(np.float64), xyz[:, 0].astype(np.float64))
    step = np.diff(az)
    step = (step + np.pi) % (2 * np.pi) - np.pi  # wrapped to [-pi, pi)
    if np.median(step) < 0:  # clockwise scanner: mirror
        az = -az
        step = -step
    fwd = step % (2 * np.pi)  # always forward in [0, 2pi)
    tol = np.radians(turn_tolerance_deg)
    fwd[fwd > 2 * np.pi - tol] -= 2 * np.pi  # small backward jitter stays small
    slack = np.radians(1.0)
    unwrapped = (az[0] % (2 * np.pi)) + np.concatenate([[0.0], np.cumsum(fwd)])

    def turns_from(start: float) -> np.ndarray:
        # a beam starts when the azimuth passes the scanner's start azimuth (with slack so
        # that jitter at a beam start does not split it)
        return np.floor((unwrapped - start + slack) / (2 * np.pi)).astype(np.int64)

    turns = turns_from(unwrapped[0])
    if turns[-1] >= 1:
        # Beams that miss the scanner's start direction begin later, so the first point's
        # azimuth need not be the start. Pick the start azimuth that makes every turn one beam:
        # the one minimising the elevation spread within turns (coarse 10 deg grid, then 1 deg).
        sub = slice(None, None, max(1, n // 4000))
        el = np.arctan2(xyz[sub, 2].astype(np.float64),
                        np.hypot(xyz[sub, 0].astype(np.float64), xyz[sub, 1].astype(np.float64)))
        u_sub = unwrapped[sub]

        def spread(start: float) -> float:
            t = np.floor((u_sub - start + slack) / (2 * np.pi)).astype(np.int64)
            t -= t.min()
            cnt = np.bincount(t)
            s1 = np.bincount(t, weights=el)
            s2 = np.bincount(t, weights=el * el)
            return float(np.sum(s2 - s1 * s1 / np.maximum(cnt, 1)))

        coarse = np.radians(np.arange(0.0, 360.0, 10.0))
        best = coarse[int(np.argmin([spread(a) for a in coarse]))]
        fine = best + np.radians(np.arange(-10.0, 10.01, 1.0))
        start = fine[int(np.argmin([spread(a) for a in fine]))]
        turns = turns_from(start)
        turns -= turns[0]
        # a few points of a beam's tail (or head) past the start azimuth: not a beam of their own
        cnt = np.bincount(turns)
        if cnt.size > 2:
            tiny = 0.1 * np.median(cnt)
            if cnt[-1] < tiny:
                turns[turns == cnt.size - 1] = cnt.size - 2
            if cnt[0] < tiny:
                turns = np.maximum(turns - 1, 0)
    return turns


def _kmeans_1d(values: np.ndarray, centers: np.ndarray, weights: np.ndarray | None = None,
               iters: int = 15) -> np.ndarray:
    """Weighted Lloyd's k-means in 1-D (assignment by midpoints of sorted centres)."""
    centers = np.sort(centers.astype(np.float64))
    w = np.ones_like(values) if weights is None else weights
    for _ in range(iters):
        if centers.size < 2:
            return np.array([np.average(values, weights=w)]) if values.size else centers
        mids = (centers[1:] + centers[:-1]) / 2
        lab = np.searchsorted(mids, values)
        cnt = np.bincount(lab, weights=w, minlength=centers.size)
        s = np.bincount(lab, weights=values * w, minlength=centers.size)
        new = np.sort(np.where(cnt > 0, s / np.maximum(cnt, 1e-12), centers))
        if np.allclose(new, centers, atol=1e-4):
            return new
        centers = new
    return centers


def _peaks(signal: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a 1-D signal at least ``distance`` bins apart (strongest kept first),
    with their prominence w.r.t. the lower of the two minima within ``3 * distance`` bins."""
    from scipy.ndimage import maximum_filter1d, minimum_filter1d

    size = 2 * distance + 1
    is_max = (signal == maximum_filter1d(signal, size, mode='constant')) & (signal > 0)
    # plateaus: keep the first bin of equal neighbours
    is_max[1:] &= ~(is_max[:-1] & (signal[1:] == signal[:-1]))
    peaks = np.flatnonzero(is_max)
    win = 3 * distance + 1
    left = minimum_filter1d(signal, win, origin=(win - 1) // 2, mode='nearest')
    right = minimum_filter1d(signal, win, origin=-((win - 1) // 2), mode='nearest')
    prom = signal[peaks] - np.maximum(left[peaks], right[peaks])
    return peaks, prom


def estimate_beam_elevations(
    elevation_deg: np.ndarray,
    num_beams: int | None = None,
    bin_deg: float = 0.04,
    min_separation_deg: float = 0.15,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Estimate the beams' elevation angles (degrees, descending) from point elevations.

    A fine histogram (optionally weighted, e.g. by range: far points show a beam's elevation
    with less parallax from the lasers' offsets) is smoothed; its local maxima at least
    ``min_separation_deg`` apart that stand out of their surroundings are beam candidates
    (the ``num_beams`` most prominent when the beam count is given); 1-D k-means refines them.
    """
    from scipy.ndimage import gaussian_filter1d

    el = np.asarray(elevation_deg, dtype=np.float64)
    w = np.ones_like(el) if weights is None else np.asarray(weights, np.float64)
    fin = np.isfinite(el) & np.isfinite(w)
    el, w = el[fin], w[fin]
    if el.size == 0:
        return np.zeros(0, np.float32)
    lo, hi = float(el.min()), float(el.max())
    if hi - lo < bin_deg * 2:
        return np.array([np.median(el)], np.float32)
    nbins = int(np.ceil((hi - lo) / bin_deg)) + 3
    hist, edges = np.histogram(el, bins=nbins, range=(lo - bin_deg, hi + 2 * bin_deg),
                               weights=w)
    smooth = gaussian_filter1d(hist.astype(np.float64), sigma=1.0)
    centres_of_bins = (edges[1:] + edges[:-1]) / 2
    distance = max(1, int(round(min_separation_deg / bin_deg)))
    peaks, prom = _peaks(smooth, distance)
    if peaks.size == 0:
        peaks, prom = np.array([int(np.argmax(smooth))]), np.array([1.0])
    if num_beams is not None:
        keep = np.argsort(prom)[::-1][:num_beams]
        centers = centres_of_bins[peaks[keep]]
        if centers.size < num_beams:  # too few peaks: start from quantiles instead
            centers = np.quantile(el, (np.arange(num_beams) + 0.5) / num_beams)
    else:
        # a beam stands out of its surroundings by a fair share of a typical beam's height
        top = np.sort(prom)[::-1][: max(1, min(prom.size, 32))]
        keep = prom >= 0.05 * np.median(top)
        peaks, prom = peaks[keep], prom[keep]
        # a beam's parallax (near points) makes side peaks: drop the weaker of two peaks that
        # are closer than half the typical beam spacing
        for _ in range(4):
            if peaks.size < 3:
                break
            gap = np.diff(centres_of_bins[peaks])
            close = np.flatnonzero(gap < 0.5 * np.median(gap))
            if close.size == 0:
                break
            weaker = np.where(prom[close] < prom[close + 1], close, close + 1)
            drop = np.zeros(peaks.size, bool)
            drop[weaker] = True
            peaks, prom = peaks[~drop], prom[~drop]
        centers = centres_of_bins[peaks]
        if centers.size > MAX_ROWS:
            centers = centres_of_bins[peaks[np.argsort(prom)[::-1][:MAX_ROWS]]]
    centers = _kmeans_1d(el, centers, w)
    return np.sort(centers)[::-1].astype(np.float32)


def rasterise(row: np.ndarray, col: np.ndarray, rng: np.ndarray, rows: int, cols: int,
              mask: np.ndarray | None = None) -> np.ndarray:
    """(rows, cols) int32 image of point indices keeping the nearest point per pixel.

    ``row``/``col`` (N,) with -1 for dropped points; ``mask`` (N,) bool restricts the points.
    Of points at the same range the first keeps the pixel.
    """
    if jit_enabled():
        use = np.ones(0, bool) if mask is None else np.ascontiguousarray(mask, dtype=bool)
        return _rasterise_kernel(np.ascontiguousarray(row, dtype=np.int32),
                                 np.ascontiguousarray(col, dtype=np.int32),
                                 np.ascontiguousarray(rng, dtype=np.float64),
                                 int(rows), int(cols), use)
    index = np.full((rows, cols), -1, np.int32)
    ok = row >= 0
    if mask is not None:
        ok &= mask
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return index
    pix = row[idx].astype(np.int64) * cols + col[idx]
    r = rng[idx].astype(np.float64)
    # one float key (pixel major, range minor): a single argsort is ~3x faster than lexsort
    order = np.argsort(pix * (float(r.max()) + 1.0) + r, kind='stable')
    pix_sorted = pix[order]
    first = np.ones(order.size, bool)
    first[1:] = pix_sorted[1:] != pix_sorted[:-1]
    index.ravel()[pix_sorted[first]] = idx[order[first]]
    return index


@njit
def _rasterise_kernel(row: np.ndarray, col: np.ndarray, rng: np.ndarray, rows: int, cols: int,
                      mask: np.ndarray) -> np.ndarray:
    """One pass over the points: a pixel keeps the nearest of its points, the first of equal
    ones (the numpy path's stable sort by pixel, then range, keeps the same point)."""
    index = np.full((rows, cols), -1, np.int32)
    use_mask = mask.shape[0] > 0
    flat = index.ravel()
    for i in range(row.shape[0]):
        r = row[i]
        if r < 0 or (use_mask and not mask[i]):
            continue
        pix = np.int64(r) * cols + col[i]
        cur = flat[pix]
        if cur < 0 or rng[i] < rng[cur]:
            flat[pix] = i
    return index


@njit
def _ring_rows_kernel(ring: np.ndarray, ok: np.ndarray, p: np.ndarray, dxy: np.ndarray,
                      row: np.ndarray) -> tuple[int, np.ndarray]:
    """``_rows_from_ring`` for ring ids below 2**20: ``(status, median elevation per present
    id)``, the rows written to ``row`` (N,) (which may be ``ring`` itself: each ring id is
    read before its row is written); status 0 done, 1 no point has a ring (``row`` all -1),
    2 ids too large (``row`` untouched).

    Points with ``ok`` and a ring id >= 0 count. Elevations (``atan2(z, dxy)`` in degrees, as
    the numpy path computes them) only of the ~20k subsampled points; the medians are
    selected from a bucket sort of the subsample by ring (numpy: ``lexsort``), a ring the
    subsample misses takes its mean elevation; rows rank the rings by descending median,
    equal medians in id order (numpy: a stable ``argsort``)."""
    n = ring.shape[0]
    m = 0
    top = -1
    for i in range(n):
        if ok[i] and ring[i] >= 0:
            m += 1
            top = max(top, ring[i])
    if m == 0:
        row[:] = -1
        return 1, np.zeros(0)
    if top >= 1 << 20:
        return 2, np.zeros(0)
    nid = top + 1
    count = np.zeros(nid, np.int64)
    step = max(1, m // 20000)
    ns = (m + step - 1) // step
    inv_s = np.empty(ns, np.int64)  # ring ids of the subsample, compacted below
    el_s = np.empty(ns)
    j = 0  # good points so far
    s = 0
    due = 0  # the next subsampled good point
    for i in range(n):
        if ok[i] and ring[i] >= 0:
            count[ring[i]] += 1
            if j == due:
                inv_s[s] = ring[i]
                el_s[s] = math.atan2(np.float64(p[i, 2]), dxy[i]) * _DEG
                s += 1
                due += step
            j += 1
    lut = np.full(nid, -1, np.int64)
    k = 0
    for r in range(nid):
        if count[r] > 0:
            lut[r] = k
            k += 1
    for t in range(ns):
        inv_s[t] = lut[inv_s[t]]
    counts = np.zeros(k, np.int64)
    for t in range(ns):
        counts[inv_s[t]] += 1
    starts = np.zeros(k + 1, np.int64)
    for g in range(k):
        starts[g + 1] = starts[g] + counts[g]
    fill = starts[:k].copy()
    bucket = np.empty(ns)
    for t in range(ns):
        g = inv_s[t]
        bucket[fill[g]] = el_s[t]
        fill[g] += 1
    med = np.empty(k)
    missing = False
    for g in range(k):
        if counts[g] > 0:
            mid = counts[g] // 2  # the upper median: numpy takes it from the sorted group
            med[g] = np.partition(bucket[starts[g]:starts[g + 1]], mid)[mid]
        else:
            med[g] = np.nan
            missing = True
    if missing:  # a ring missed by the subsample: its mean elevation over all its points
        tot = np.zeros(k)
        cnt = np.zeros(k, np.int64)
        for i in range(n):
            if ok[i] and ring[i] >= 0:
                g = lut[ring[i]]
                if counts[g] == 0:
                    tot[g] += math.atan2(np.float64(p[i, 2]), dxy[i]) * _DEG
                    cnt[g] += 1
        for g in range(k):
            if counts[g] == 0:
                med[g] = tot[g] / max(cnt[g], 1)
    rank = np.zeros(k, np.int64)
    for a in range(k):
        na = -med[a]
        for b in range(k):
            nb = -med[b]
            if nb < na or (nb == na and b < a):
                rank[a] += 1
    for i in range(n):
        row[i] = rank[lut[ring[i]]] if ok[i] and ring[i] >= 0 else -1
    return 0, med


def _rows_from_ring(ring: np.ndarray, ok: np.ndarray, num_rows: int | None, pts: np.ndarray,
                    dxy: np.ndarray, numpy_geometry: Callable[[], dict[str, np.ndarray]],
                    out: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Map ring ids to rows ordered by their median elevation (top first).

    Returns ``(row (N,), beam elevations descending, rows, median elevation per present ring
    id in id order)``. Medians come from at most ~20k points (enough to rank beams).
    The kernel computes the elevations of the points ``pts`` it samples (``dxy``: their
    horizontal distances); the numpy path takes them from ``numpy_geometry()['el']``.
    ``out`` (int64, may be ``ring`` itself) receives the kernel's rows.
    """
    if jit_enabled():
        ring64 = np.ascontiguousarray(ring, dtype=np.int64)
        if out is None or out.dtype != np.int64 or not out.flags.c_contiguous:
            out = np.empty(ring64.shape[0], np.int64)
        status, med = _ring_rows_kernel(ring64, np.ascontiguousarray(ok, dtype=bool), pts,
                                        np.ascontiguousarray(dxy, dtype=np.float64), out)
        row = out
        if status == 1:
            return row, np.zeros(0, np.float32), num_rows or 0, np.zeros(0)
        if status == 0:
            rows = max(med.size, num_rows or 0)
            return row, np.sort(med)[::-1].astype(np.float32), rows, med
    ring = np.asarray(ring).astype(np.int64)
    row = np.full(ring.shape[0], -1, np.int64)
    good = ok & (ring >= 0)
    if not good.any():
        return row, np.zeros(0, np.float32), num_rows or 0, np.zeros(0)
    el = numpy_geometry()['el']
    r_good = ring[good]
    if r_good.max() < 1 << 20:  # small ids (the usual case): a lookup table, no sort
        present = np.bincount(r_good) > 0
        ids = np.flatnonzero(present)
        lut = np.cumsum(present) - 1
        inv = lut[r_good]
    else:
        ids, inv = np.unique(r_good, return_inverse=True)
    # median elevation per ring on a subsample: sort by (ring, elevation), take the middle
    step = max(1, inv.size // 20000)
    inv_s, el_s = inv[::step], el[good][::step]
    counts = np.bincount(inv_s, minlength=ids.size)
    order = np.lexsort((el_s, inv_s))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    med = np.where(counts > 0, el_s[order][np.minimum(starts + counts // 2, inv_s.size - 1)],
                   np.nan)
    if np.isnan(med).any():  # a ring missed by the subsample: use its mean
        s = np.bincount(inv, weights=el[good], minlength=ids.size)
        c = np.bincount(inv, minlength=ids.size)
        med = np.where(np.isnan(med), s / np.maximum(c, 1), med)
    rank = np.empty(ids.size, np.int64)
    rank[np.argsort(-med, kind='stable')] = np.arange(ids.size)
    row[good] = rank[inv]
    rows = max(ids.size, num_rows or 0)
    return row, np.sort(med)[::-1].astype(np.float32), rows, med


def _merge_closest_rows(row: np.ndarray, beams: np.ndarray, num_rows: int
                        ) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge rows until ``num_rows`` remain: each time the two adjacent rows with the closest
    median elevation (a beam split by the rotation cut) become one. Rows are ordered by
    elevation (``beams`` descending)."""
    row = row.copy()
    beams = np.asarray(beams, np.float64).copy()
    while beams.size > num_rows:  # a few iterations at most (<= 2 extra turns)
        r = int(np.argmin(np.abs(np.diff(beams))))  # merge rows r and r + 1
        counts = np.bincount(row[row >= 0], minlength=beams.size)
        keep = r if counts[r] >= counts[r + 1] else r + 1
        beams[r] = beams[keep]
        beams = np.delete(beams, r + 1)
        row = np.where(row > r, row - 1, row)
    return row, beams.astype(np.float32), int(beams.size)


@njit
def _geometry_kernel(p: np.ndarray, min_range: float, max_range: float):
    """Per point, one pass: ``(azimuth (N,), kept (N,) bool: finite and within the range
    limits, range (N,) float32, horizontal distance (N,), whether any point is kept)``,
    computed in float64 as the numpy path does (range ``sqrt(hypot(x, y)^2 + z^2)``; a
    non-finite point counts as the origin).
    """
    n = p.shape[0]
    az = np.empty(n)
    dxy = np.empty(n)
    ok = np.zeros(n, np.bool_)
    point_range = np.empty(n, np.float32)
    any_ok = False
    for i in range(n):
        x = np.float64(p[i, 0])
        y = np.float64(p[i, 1])
        z = np.float64(p[i, 2])
        finite = math.isfinite(x) and math.isfinite(y) and math.isfinite(z)
        if not finite:
            x = 0.0
            y = 0.0
            z = 0.0
        h = math.hypot(x, y)
        r = math.sqrt(h * h + z * z)
        az[i] = math.atan2(y, x)
        dxy[i] = h
        point_range[i] = np.float32(r)
        if finite and r >= min_range and r <= max_range and r > 0:
            ok[i] = True
            any_ok = True
    return az, ok, point_range, dxy, any_ok


@njit
def _image_kernel(az: np.ndarray, row: np.ndarray, ok: np.ndarray, point_range: np.ndarray,
                  rows: int, width: int):
    """Rows limited to the image, columns from the azimuth, and the nearest point per pixel
    (first of equal ranges), in one pass: ``(row (N,) int32, col (N,) int32, index (H, W)
    int32, range image (H, W) float32)``."""
    n = az.shape[0]
    row32 = np.full(n, -1, np.int32)
    col32 = np.full(n, -1, np.int32)
    index = np.full((rows, width), -1, np.int32)
    rimg = np.zeros((rows, width), np.float32)
    flat = index.ravel()
    flat_r = rimg.ravel()
    for i in range(n):
        r = row[i]
        if not ok[i] or r >= rows or r < 0:
            continue
        c = np.int64(np.floor((np.pi - az[i]) / _TWO_PI * width)) % width
        row32[i] = r
        col32[i] = c
        pix = r * width + c
        cur = flat[pix]
        if cur < 0 or point_range[i] < point_range[cur]:
            flat[pix] = i
            flat_r[pix] = point_range[i]
    return row32, col32, index, rimg


def build_range_image(xyz: np.ndarray, ring: np.ndarray | None = None,
                      cfg: RangeImageConfig | None = None) -> RangeImage:
    """Project a scan (N,3) into a range image; see the module docstring for the rows."""
    cfg = cfg or RangeImageConfig()
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ConfigError(f'build_range_image: xyz must be (N, 3), got shape {xyz.shape}')
    n = xyz.shape[0]
    if ring is not None and np.asarray(ring).shape[0] != n:
        raise ConfigError(
            f'build_range_image: ring has {np.asarray(ring).shape[0]} entries for {n} points; '
            'pass the ring field of the same cloud or ring=None')
    if cfg.row_method == 'ring' and ring is None:
        raise ConfigError("range_image.row_method is 'ring' but the cloud has no ring field; "
                          "use row_method: auto (or 'elevation')")
    if n == 0:
        return _empty(0, cfg.width)
    jit = jit_enabled()
    geo: dict[str, np.ndarray] = {}

    def numpy_geometry() -> dict[str, np.ndarray]:
        """float64 points (non-finite zeroed), horizontal distance, range, elevation (deg):
        the numpy path, and the kernel path's fallbacks, compute them once."""
        if not geo:
            p = xyz[:, :3].astype(np.float64)
            finite = np.isfinite(p).all(axis=1)
            p = np.where(finite[:, None], p, 0.0)
            dxy = np.hypot(p[:, 0], p[:, 1])
            rng = np.sqrt(dxy * dxy + p[:, 2] ** 2)
            el = np.degrees(np.arctan2(p[:, 2], dxy))
            geo.update(p=p, finite=finite, dxy=dxy, rng=rng, el=el)
        return geo

    az: np.ndarray | None = None
    if jit:
        pts = as_points(xyz)
        az, ok, point_range, dxy, any_ok = _geometry_kernel(pts, float(cfg.min_range),
                                                            float(cfg.max_range))
    else:
        g = numpy_geometry()
        pts = g['p']
        rng = g['rng']
        ok = g['finite'] & (rng >= cfg.min_range) & (rng <= cfg.max_range) & (rng > 0)
        point_range = rng.astype(np.float32)
        dxy = g['dxy']
        any_ok = bool(ok.any())
    if not any_ok:
        out = _empty(n, cfg.width)
        out.point_range = point_range
        return out

    row: np.ndarray | None = None
    source = 'none'
    beams = np.zeros(0, np.float32)
    rows = 0
    method = cfg.row_method
    if method in ('auto', 'ring') and ring is not None:
        row, beams, rows, _ = _rows_from_ring(ring, ok, cfg.num_rows, pts, dxy, numpy_geometry)
        source = 'ring'
    if source == 'none' and method in ('auto', 'scan_order'):
        if az is not None and n >= 2:
            turns = _scan_order_turns(pts, az, cfg.scan_order_turn_tolerance_deg,
                                      lambda: numpy_geometry()['p'])
        else:
            turns = scan_order_rows(numpy_geometry()['p'], cfg.scan_order_turn_tolerance_deg)
        n_turns = int(turns[-1]) + 1
        plausible = 8 <= n_turns <= MAX_ROWS and n >= n_turns * 16
        if cfg.num_rows is not None:
            # partial first/last rotations may add a turn or two (KITTI raw)
            plausible = plausible and cfg.num_rows <= n_turns <= cfg.num_rows + 2
        if plausible or method == 'scan_order':
            # (the kernel path writes the rows over the turns, which are not needed after)
            cand, beams_c, rows_c, med = _rows_from_ring(turns, ok, cfg.num_rows, pts, dxy,
                                                         numpy_geometry, out=turns)
            # accept if beams come in elevation order (ascending or descending turn by turn)
            order_ok = True
            if method == 'auto':
                d = np.diff(med)
                mono = max(np.mean(d < 0), np.mean(d > 0)) if d.size else 0.0
                order_ok = mono >= 0.9
            if order_ok or method == 'scan_order':
                row, beams, rows, source = cand, beams_c, rows_c, 'scan_order'
                if cfg.num_rows is not None and rows > cfg.num_rows:
                    row, beams, rows = _merge_closest_rows(row, beams, cfg.num_rows)
            else:
                log.debug('scan order gives %d turns with non-monotonic elevations; '
                          'using elevation binning', n_turns)
    if source == 'none' or row is None:
        g = numpy_geometry()
        el, rng = g['el'], g['rng']
        beams = estimate_beam_elevations(el[ok], cfg.num_rows, cfg.elevation_bin_deg,
                                         cfg.min_beam_separation_deg,
                                         weights=np.minimum(rng[ok], 30.0))
        rows = int(beams.size)
        asc = beams[::-1].astype(np.float64)
        mids = (asc[1:] + asc[:-1]) / 2
        r_asc = np.searchsorted(mids, el)
        row = np.where(ok, rows - 1 - r_asc, -1)
        source = 'elevation'
    if cfg.num_rows is not None:
        rows = max(rows, cfg.num_rows)
    if jit:
        row32, col32, index, rimg = _image_kernel(
            az, np.ascontiguousarray(row, dtype=np.int64), ok, point_range, int(rows),
            int(cfg.width))
        return RangeImage(rows=rows, cols=cfg.width, index=index, range=rimg,
                          row_of_point=row32, col_of_point=col32, row_source=source,
                          beam_elevation_deg=np.asarray(beams, np.float32),
                          point_range=point_range, point_dxy=dxy)
    row = np.where(ok & (row < rows), row, -1)

    p = numpy_geometry()['p']
    az = np.arctan2(p[:, 1], p[:, 0])
    col = np.floor((np.pi - az) / (2 * np.pi) * cfg.width).astype(np.int64) % cfg.width
    col = np.where(row >= 0, col, -1)
    row32 = row.astype(np.int32)
    col32 = col.astype(np.int32)
    index = rasterise(row32, col32, point_range, rows, cfg.width)
    rimg = np.where(index >= 0, point_range[np.maximum(index, 0)], 0.0).astype(np.float32)
    return RangeImage(rows=rows, cols=cfg.width, index=index, range=rimg,
                      row_of_point=row32, col_of_point=col32, row_source=source,
                      beam_elevation_deg=np.asarray(beams, np.float32), point_range=point_range,
                      point_dxy=dxy)

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
one pixel: the pixel keeps the nearest (``index``); the others keep their row/column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError

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


def _empty(n: int, cols: int, rows: int = 0) -> RangeImage:
    return RangeImage(
        rows=rows, cols=cols,
        index=np.full((rows, cols), -1, np.int32), range=np.zeros((rows, cols), np.float32),
        row_of_point=np.full(n, -1, np.int32), col_of_point=np.full(n, -1, np.int32),
        point_range=np.zeros(n, np.float32),
    )


def scan_order_rows(xyz: np.ndarray, turn_tolerance_deg: float = 10.0) -> np.ndarray:
    """Beam index of each point from the firing order (KITTI-style beam-by-beam storage).

    The azimuth is unwrapped forward (in the scanner's sense of rotation, taken from the
    median step); each full turn is one beam. Returns (N,) int64 turn index starting at 0.
    """
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
    """
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


def _rows_from_ring(ring: np.ndarray, el: np.ndarray, ok: np.ndarray, num_rows: int | None
                    ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Map ring ids to rows ordered by their median elevation (top first).

    Returns ``(row (N,), beam elevations descending, rows, median elevation per present ring
    id in id order)``. Medians come from at most ~20k points (enough to rank beams).
    """
    ring = np.asarray(ring).astype(np.int64)
    row = np.full(ring.shape[0], -1, np.int64)
    good = ok & (ring >= 0)
    if not good.any():
        return row, np.zeros(0, np.float32), num_rows or 0, np.zeros(0)
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
    p = xyz[:, :3].astype(np.float64)
    finite = np.isfinite(p).all(axis=1)
    p = np.where(finite[:, None], p, 0.0)
    dxy = np.hypot(p[:, 0], p[:, 1])
    rng = np.sqrt(dxy * dxy + p[:, 2] ** 2)
    ok = finite & (rng >= cfg.min_range) & (rng <= cfg.max_range) & (rng > 0)
    el = np.degrees(np.arctan2(p[:, 2], dxy))
    point_range = rng.astype(np.float32)
    if not ok.any():
        out = _empty(n, cfg.width)
        out.point_range = point_range
        return out

    row = np.full(n, -1, np.int64)
    source = 'none'
    beams = np.zeros(0, np.float32)
    rows = 0
    method = cfg.row_method
    if method in ('auto', 'ring') and ring is not None:
        row, beams, rows, _ = _rows_from_ring(ring, el, ok, cfg.num_rows)
        source = 'ring'
    if source == 'none' and method in ('auto', 'scan_order'):
        turns = scan_order_rows(p, cfg.scan_order_turn_tolerance_deg)
        n_turns = int(turns[-1]) + 1
        plausible = 8 <= n_turns <= MAX_ROWS and n >= n_turns * 16
        if cfg.num_rows is not None:
            # partial first/last rotations may add a turn or two (KITTI raw)
            plausible = plausible and cfg.num_rows <= n_turns <= cfg.num_rows + 2
        if plausible or method == 'scan_order':
            cand, beams_c, rows_c, med = _rows_from_ring(turns, el, ok, cfg.num_rows)
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
    if source == 'none':
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
    row = np.where(ok & (row < rows), row, -1)

    az = np.arctan2(p[:, 1], p[:, 0])
    col = np.floor((np.pi - az) / (2 * np.pi) * cfg.width).astype(np.int64) % cfg.width
    col = np.where(row >= 0, col, -1)
    row32 = row.astype(np.int32)
    col32 = col.astype(np.int32)
    index = rasterise(row32, col32, point_range, rows, cfg.width)
    rimg = np.where(index >= 0, point_range[np.maximum(index, 0)], 0.0).astype(np.float32)
    return RangeImage(rows=rows, cols=cfg.width, index=index, range=rimg,
                      row_of_point=row32, col_of_point=col32, row_source=source,
                      beam_elevation_deg=np.asarray(beams, np.float32), point_range=point_range)

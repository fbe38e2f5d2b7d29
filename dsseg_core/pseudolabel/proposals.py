"""Class-agnostic LiDAR object proposals: the non-ground scan split into segments.

``range_image`` (default) — Bogoslavskyi & Stachniss, vectorised: two neighbouring pixels
(4-neighbourhood, horizontal wrap-around, bridging up to ``max_col_gap`` / ``max_row_gap`` empty
pixels) of the non-ground range image belong to the same object when

    beta = atan2(d2 * sin(a), d1 - d2 * cos(a)) > neighbour_angle_deg

(``d1 >= d2`` their ranges, ``a`` the angle between their rays). Segments are the connected
components of that graph (``scipy.sparse.csgraph``). Points that share a pixel inherit its
segment if their range is within ``pixel_depth_tolerance`` of the pixel's point; the others,
and any unsegmented non-ground point, take the segment of the nearest segmented point within
``fill_radius`` (0 disables the fill), searched among the points of nearby pixels only.

Kernels (``dsseg_core.jit``; the numpy code is the reference and the ``DSSEG_JIT=0`` fallback,
with identical results): ``_candidates_kernel`` (finite, non-ground, within the range limits;
one pass), ``_segments_kernel`` (the nearest candidate per pixel, each valid pixel tested
against its next valid neighbour to the right and below and joined in a union-find forest
numbered like scipy's ``connected_components``, then the points labelled), ``_fill_kernel``
(the pixels around left-over points, whose segmented points are searched in a grid of
``fill_radius`` cells with the KD-tree's distance arithmetic instead of a KD-tree; the rare
points with two nearest segments at exactly the same distance still ask the KD-tree) and
``_filter_kernel`` (segment sizes and renumbering with a count per id instead of a sort).

``dbscan`` — Euclidean clustering of the non-ground points (open3d ``cluster_dbscan`` when
importable, else scikit-learn ``DBSCAN``).

Segments with fewer than ``min_points`` or more than ``max_points`` points, ground, and points
beyond ``max_range`` get -1. Segment ids are 0..K-1 (int32).

Default choices (not tuned on any evaluation scan): neighbour angle 10 deg, 20..100000 points
(depth_clustering's reference values; 20 points is about the smallest segment a camera
projection can still describe; the upper bound only guards against a whole scan merging),
``max_range`` 50 m (beyond it HDL-64 beams are > 0.35 m apart vertically and segments get thin
and unreliable, and image projections tiny).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError, DependencyError
from dsseg_core.jit import jit_enabled, njit
from dsseg_core.pseudolabel.components import uf_find, uf_labels, uf_union
from dsseg_core.pseudolabel.ground import GroundConfig, segment_ground
from dsseg_core.pseudolabel.range_image import (
    RangeImage,
    RangeImageConfig,
    as_points,
    build_range_image,
    rasterise,
)

__all__ = [
    'ProposalConfig',
    'ProposalResult',
    'ProposalsConfig',
    'compute_proposals',
    'filter_segments',
    'segment_proposals',
]

log = logging.getLogger(__name__)


class ProposalConfig(StageConfig):
    """Segmentation of the non-ground points (section ``proposals``)."""

    method: Literal['range_image', 'dbscan'] = 'range_image'
    neighbour_angle_deg: float = Field(10.0, gt=0.0, lt=90.0,
                                       description='beta threshold (reference 10 deg)')
    max_col_gap: int = Field(1, ge=0, le=16, description='empty columns bridged')
    max_row_gap: int = Field(1, ge=0, le=16, description='empty rows bridged')
    pixel_depth_tolerance: float = Field(
        1.0, gt=0.0, description="points sharing a pixel inherit its segment if within this "
                                 "range (m) of the pixel's point")
    fill_radius: float = Field(0.5, ge=0.0,
                               description='kNN fill of left-over points (m); 0 = off')
    min_points: int = Field(20, ge=1, description='smaller segments are dropped')
    max_points: int = Field(100000, ge=1, description='larger segments are dropped')
    min_range: float = Field(0.0, ge=0.0, description='nearer points are not segmented (m)')
    max_range: float = Field(50.0, gt=0.0, description='farther points are not segmented (m)')
    dbscan_eps: float = Field(0.5, gt=0.0, description='DBSCAN neighbourhood radius (m)')
    dbscan_min_points: int = Field(10, ge=1)
    dbscan_backend: Literal['auto', 'open3d', 'sklearn'] = 'auto'

    @model_validator(mode='after')
    def _sizes(self) -> ProposalConfig:
        if self.max_points < self.min_points:
            raise ValueError(f'max_points ({self.max_points}) < min_points ({self.min_points})')
        if self.max_range <= self.min_range:
            raise ValueError(f'max_range ({self.max_range}) <= min_range ({self.min_range})')
        return self


class ProposalsConfig(StageConfig):
    """Ground + range image + proposals (the LiDAR half of pseudo-labelling).

    Section ``lidar_proposals`` in a stand-alone file; nested by the pseudo-label config.
    """

    ground: GroundConfig = Field(default_factory=GroundConfig)
    range_image: RangeImageConfig = Field(default_factory=RangeImageConfig)
    proposals: ProposalConfig = Field(default_factory=ProposalConfig)


@dataclass
class ProposalResult:
    """Output of :func:`compute_proposals`."""

    ground: np.ndarray  # (N,) bool
    segments: np.ndarray  # (N,) int32, -1 = none
    range_image: RangeImage | None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def num_segments(self) -> int:
        return int(self.segments.max()) + 1 if self.segments.size else 0


@njit
def _filter_kernel(labels: np.ndarray, top: int, min_points: int, max_points: int
                   ) -> np.ndarray:
    """``filter_segments`` for ids in ``[0, top]``: a count per id, kept ids renumbered in
    ascending order (numpy: ``np.unique``)."""
    counts = np.zeros(top + 1, np.int64)
    for i in range(labels.shape[0]):
        if labels[i] >= 0:
            counts[labels[i]] += 1
    new_id = np.full(top + 1, -1, np.int64)
    k = 0
    for j in range(top + 1):
        if counts[j] >= min_points and counts[j] <= max_points:
            new_id[j] = k
            k += 1
    out = np.full(labels.shape[0], -1, np.int32)
    for i in range(labels.shape[0]):
        if labels[i] >= 0:
            out[i] = new_id[labels[i]]
    return out


def filter_segments(labels: np.ndarray, min_points: int, max_points: int) -> np.ndarray:
    """Drop segments outside ``[min_points, max_points]`` and renumber to 0..K-1 (int32)."""
    labels = np.asarray(labels)
    if jit_enabled() and labels.ndim == 1 and labels.dtype.kind in 'iu' and labels.size:
        top = int(labels.max())
        if top < 4 * labels.shape[0] + (1 << 20):  # a count per id stays small
            return _filter_kernel(np.ascontiguousarray(labels, dtype=np.int64), max(top, 0),
                                  int(min_points), int(max_points))
    out = np.full(labels.shape[0], -1, np.int32)
    has = labels >= 0
    if not has.any():
        return out
    ids, inv, counts = np.unique(labels[has], return_inverse=True, return_counts=True)
    keep = (counts >= min_points) & (counts <= max_points)
    new_id = np.full(ids.size, -1, np.int64)
    new_id[keep] = np.arange(int(keep.sum()))
    out[has] = new_id[inv]
    return out


def _neighbour_edges(index: np.ndarray, unit: np.ndarray, rng: np.ndarray,
                     axis: int, max_gap: int, wrap: bool, thr_rad: float):
    """Edges (a, b) between each valid pixel and the next valid pixel along ``axis`` within
    ``max_gap`` empty pixels, kept when the beta criterion holds."""
    valid = index >= 0
    h, w = index.shape
    pix = np.arange(h * w).reshape(h, w)
    found = np.zeros_like(valid)
    a_list, b_list = [], []
    for k in range(1, max_gap + 2):  # small fixed loop over offsets, vectorised over pixels
        if wrap:
            nb_valid = np.roll(valid, -k, axis=axis)
            nb_pix = np.roll(pix, -k, axis=axis)
        else:
            nb_valid = np.zeros_like(valid)
            nb_pix = np.zeros_like(pix)
            sl_src = [slice(None)] * 2
            sl_dst = [slice(None)] * 2
            sl_src[axis] = slice(k, None)
            sl_dst[axis] = slice(None, -k if k else None)
            nb_valid[tuple(sl_dst)] = valid[tuple(sl_src)]
            nb_pix[tuple(sl_dst)] = pix[tuple(sl_src)]
        take = valid & ~found & nb_valid
        found |= take
        a_list.append(pix[take])
        b_list.append(nb_pix[take])
    a = np.concatenate(a_list)
    b = np.concatenate(b_list)
    if a.size == 0:
        return a, b
    ia = index.ravel()[a]
    ib = index.ravel()[b]
    ua, ub = unit[ia], unit[ib]
    cos_a = np.clip(ua[:, 0] * ub[:, 0] + ua[:, 1] * ub[:, 1] + ua[:, 2] * ub[:, 2], -1.0, 1.0)
    sin_a = np.sqrt(1.0 - cos_a * cos_a)
    ra, rb = rng[ia], rng[ib]
    d1 = np.maximum(ra, rb)
    d2 = np.minimum(ra, rb)
    # beta = atan2(d2 sin a, d1 - d2 cos a) > thr  <=>  d2 sin(a + thr) > d1 sin(thr)
    # (a + thr < pi always holds between neighbouring pixels); no trigonometric calls
    keep = d2 * (sin_a * np.cos(thr_rad) + cos_a * np.sin(thr_rad)) > d1 * np.sin(thr_rad)
    return a[keep], b[keep]


@njit
def _candidates_kernel(p: np.ndarray, ground: np.ndarray, min_range: float, max_range: float
                       ) -> tuple[np.ndarray, int]:
    """Points to segment (finite, not ground, range within the limits) and their count; the
    range as ``np.linalg.norm`` computes it, ``sqrt((x*x + y*y) + z*z)``."""
    n = p.shape[0]
    cand = np.zeros(n, np.bool_)
    count = 0
    for i in range(n):
        x = np.float64(p[i, 0])
        y = np.float64(p[i, 1])
        z = np.float64(p[i, 2])
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)) or ground[i]:
            continue
        r = math.sqrt(x * x + y * y + z * z)
        if r <= max_range and r >= min_range:
            cand[i] = True
            count += 1
    return cand, count


@njit
def _beta_joins(ray: np.ndarray, sa: int, sb: int, ca: int, cb: int, cos_t: float,
                sin_t: float) -> bool:
    """The beta criterion between the pixels in columns ``ca`` / ``cb`` of the ray buffer
    rows ``sa`` / ``sb`` (unit ray x, y, z and range), as the numpy path evaluates it:
    ``d2 sin(angle + thr) > d1 sin(thr)``."""
    cos_a = (ray[sa, 0, ca] * ray[sb, 0, cb] + ray[sa, 1, ca] * ray[sb, 1, cb]
             + ray[sa, 2, ca] * ray[sb, 2, cb])
    cos_a = min(max(cos_a, -1.0), 1.0)
    sin_a = math.sqrt(1.0 - cos_a * cos_a)
    d1 = max(ray[sa, 3, ca], ray[sb, 3, cb])
    d2 = min(ray[sa, 3, ca], ray[sb, 3, cb])
    return d2 * (sin_a * cos_t + cos_a * sin_t) > d1 * sin_t


@njit
def _fill_rays(ray: np.ndarray, slot: int, index: np.ndarray, r: int, cols: int,
               p: np.ndarray, point_range: np.ndarray) -> None:
    """Unit rays and ranges of row ``r``'s pixel points into ray buffer row ``slot``."""
    for c in range(cols):
        i = index[r * cols + c]
        if i >= 0:
            rg = np.float64(point_range[i])
            m = max(rg, 1e-9)
            ray[slot, 0, c] = np.float64(p[i, 0]) / m
            ray[slot, 1, c] = np.float64(p[i, 1]) / m
            ray[slot, 2, c] = np.float64(p[i, 2]) / m
            ray[slot, 3, c] = rg


@njit
def _segments_kernel(p: np.ndarray, cand: np.ndarray, row: np.ndarray, col: np.ndarray,
                     point_range: np.ndarray, rows: int, cols: int, max_col_gap: int,
                     max_row_gap: int, cos_t: float, sin_t: float, depth_tol: float
                     ) -> np.ndarray:
    """``_range_image_segments``: (N,) int64 component id per point, -1 unsegmented.

    The nearest candidate per pixel (first of equal ranges); row by row, every valid pixel is
    joined to its next valid pixel to the right (wrap-around) within ``max_col_gap`` empty
    columns and below within ``max_row_gap`` empty rows when the beta criterion holds (unit
    rays and ranges of the rows in reach kept in a small ring buffer of rows); components are
    numbered in order of their smallest pixel (scipy's numbering, over all pixels); a
    candidate takes its pixel's component when its range is within ``depth_tol`` of the
    pixel's point.
    """
    n = p.shape[0]
    npix = rows * cols
    index = np.full(npix, -1, np.int32)
    for i in range(n):
        r = row[i]
        if r < 0 or not cand[i]:
            continue
        pix = np.int64(r) * cols + col[i]
        cur = index[pix]
        if cur < 0 or point_range[i] < point_range[cur]:
            index[pix] = i
    nbuf = max_row_gap + 2
    ray = np.empty((nbuf, 4, cols))
    for r in range(min(nbuf - 1, rows)):
        _fill_rays(ray, r % nbuf, index, r, cols, p, point_range)
    parent = np.arange(npix).astype(np.int32)
    for r in range(rows):
        if r + nbuf - 1 < rows:  # the row that comes into reach of the vertical edges
            _fill_rays(ray, (r + nbuf - 1) % nbuf, index, r + nbuf - 1, cols, p, point_range)
        sa = r % nbuf
        base = r * cols
        root = -1  # root of the current pixel when the edge from its left neighbour joined
        for c in range(cols):
            a = base + c
            if index[a] < 0:
                root = -1
                continue
            if root < 0:
                root = uf_find(parent, a)
            joined = False
            cb = c
            for _ in range(max_col_gap + 1):
                cb += 1
                while cb >= cols:  # wrap-around
                    cb -= cols
                if index[base + cb] >= 0:
                    if _beta_joins(ray, sa, sa, c, cb, cos_t, sin_t):
                        # union(a, b) with a's root known; the smaller root becomes the root
                        rb = uf_find(parent, base + cb)
                        if rb > root:
                            parent[rb] = root
                        elif rb < root:
                            parent[root] = rb
                            root = rb
                        joined = cb == c + 1
                    break
            sb = sa
            for k in range(1, max_row_gap + 2):
                if r + k >= rows:
                    break
                sb += 1
                if sb >= nbuf:
                    sb = 0
                b = a + k * cols
                if index[b] >= 0:
                    if _beta_joins(ray, sa, sb, c, c, cos_t, sin_t):
                        if parent[b] == b:  # untouched (rows below come later): hang it on
                            parent[b] = root
                        else:
                            uf_union(parent, a, b)
                            root = uf_find(parent, a)
                    break
            if not joined:  # the next pixel's root is not known
                root = -1
    _, comp = uf_labels(parent)
    labels = np.full(n, -1, np.int64)
    for i in range(n):
        r = row[i]
        if r < 0 or not cand[i]:
            continue
        pix = np.int64(r) * cols + col[i]
        rep = index[pix]
        if abs(np.float64(point_range[i]) - np.float64(point_range[rep])) <= depth_tol:
            labels[i] = comp[pix]
    return labels


def _range_image_segments(xyz: np.ndarray, cand: np.ndarray, ri: RangeImage,
                          cfg: ProposalConfig) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = xyz.shape[0]
    labels = np.full(n, -1, np.int64)
    if ri.rows == 0:
        return labels
    if jit_enabled():
        thr = np.radians(cfg.neighbour_angle_deg)
        return _segments_kernel(
            as_points(xyz), np.ascontiguousarray(cand, dtype=bool),
            np.ascontiguousarray(ri.row_of_point, dtype=np.int32),
            np.ascontiguousarray(ri.col_of_point, dtype=np.int32),
            np.ascontiguousarray(ri.point_range, dtype=np.float32), int(ri.rows), int(ri.cols),
            int(cfg.max_col_gap), int(cfg.max_row_gap), float(np.cos(thr)),
            float(np.sin(thr)), float(cfg.pixel_depth_tolerance))
    rng = ri.point_range.astype(np.float64)
    index = rasterise(ri.row_of_point, ri.col_of_point, rng, ri.rows, ri.cols, mask=cand)
    if not (index >= 0).any():
        return labels
    p = xyz[:, :3].astype(np.float64)
    unit = p / np.maximum(rng, 1e-9)[:, None]
    thr = np.radians(cfg.neighbour_angle_deg)
    ha, hb = _neighbour_edges(index, unit, rng, 1, cfg.max_col_gap, True, thr)
    va, vb = _neighbour_edges(index, unit, rng, 0, cfg.max_row_gap, False, thr)
    a = np.concatenate([ha, va])
    b = np.concatenate([hb, vb])
    npix = ri.rows * ri.cols
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(npix, npix)).tocsr()
    _, comp = connected_components(graph, directed=False)
    idx = np.flatnonzero(cand & (ri.row_of_point >= 0))
    pix = ri.row_of_point[idx].astype(np.int64) * ri.cols + ri.col_of_point[idx]
    rep = index.ravel()[pix]
    close = np.abs(rng[idx] - rng[rep]) <= cfg.pixel_depth_tolerance
    labels[idx[close]] = comp[pix[close]]
    return labels


@njit
def _cell_bucket(ix: int, iy: int, iz: int, mask: int) -> int:
    """Hash bucket of a grid cell (a classic spatial hash; cells may share a bucket)."""
    return ((ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791)) & mask


@njit
def _fill_kernel(p: np.ndarray, labels: np.ndarray, todo: np.ndarray, row: np.ndarray,
                 col: np.ndarray, rows: int, cols: int, window: int, radius: float
                 ) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
    """``_fill_nearest`` with a range image: ``(labels after the fill (a copy), done, tied,
    sources)``; ``done`` is False (nothing filled) when a point lies beyond 2**18 cells of the
    origin (a tiny ``radius``: the cell hash could overflow): the caller takes the numpy path.

    Sources: the segmented points whose pixel lies within ``window`` rows (clipped) and
    columns (wrap-around) of a left-over point's pixel, or that have no pixel. Each left-over
    point takes the label of its nearest source with a squared distance below ``radius**2``,
    the distance summed as scipy's ``cKDTree`` does (``((dx*dx + dy*dy) + dz*dz)``, the same
    strict test), found in a grid of cells a little larger than ``radius`` (cell of a
    coordinate: ``floor(x / cell)``, computed with a multiplication: points closer than
    ``radius`` still fall in the same or the adjacent cell): the 27 cells around the point's
    hold every candidate. Cells are hashed into buckets; a bucket shared by other cells only
    adds candidates that are farther away.

    Nearest sources at exactly the same distance with different labels (duplicate points,
    lattices): ``cKDTree`` keeps the first its tree walk meets, which only the same tree
    knows. Such points are returned in ``tied`` (left unfilled) with the sources in point
    order, for the caller to ask a ``cKDTree`` built as the numpy path builds it.
    """
    n = labels.shape[0]
    out = labels.copy()
    near = np.zeros(rows * cols, np.bool_)
    n_dst = 0
    for i in range(n):
        if todo[i] and labels[i] < 0:
            n_dst += 1
            r = row[i]
            if r >= 0:
                for rr in range(max(r - window, 0), min(r + window + 1, rows)):
                    for dc in range(-window, window + 1):
                        near[rr * cols + (col[i] + dc) % cols] = True
    none = np.zeros(0, np.int64)
    if n_dst == 0:
        return out, True, none, none
    n_src = 0
    inv_cell = 1.0 / (radius * (1.0 + 1e-6))  # cells a little larger than the radius
    limit = float(1 << 18) / inv_cell
    for i in range(n):
        is_src = labels[i] >= 0 and (row[i] < 0 or near[row[i] * cols + col[i]])
        if is_src or (todo[i] and labels[i] < 0):
            for a in range(3):
                if not abs(np.float64(p[i, a])) < limit:
                    return out, False, none, none
        if is_src:
            n_src += 1
    if n_src == 0:
        return out, True, none, none
    # the sources bucketed by the hash of their cell (a counting sort)
    nb = 1024
    while nb < 2 * n_src:
        nb *= 2
    mask = nb - 1
    src = np.empty(n_src, np.int64)
    bucket = np.empty(n_src, np.int64)
    starts = np.zeros(nb + 1, np.int64)
    k = 0
    for i in range(n):
        if labels[i] >= 0 and (row[i] < 0 or near[row[i] * cols + col[i]]):
            src[k] = i
            b = _cell_bucket(int(np.floor(np.float64(p[i, 0]) * inv_cell)),
                             int(np.floor(np.float64(p[i, 1]) * inv_cell)),
                             int(np.floor(np.float64(p[i, 2]) * inv_cell)), mask)
            bucket[k] = b
            starts[b + 1] += 1
            k += 1
    for b in range(nb):
        starts[b + 1] += starts[b]
    fill = starts[:nb].copy()
    by_cell = np.empty(n_src, np.int64)
    for k in range(n_src):
        by_cell[fill[bucket[k]]] = src[k]
        fill[bucket[k]] += 1
    bound = radius * radius
    tied = np.empty(n_dst, np.int64)
    n_tied = 0
    for i in range(n):
        if not (todo[i] and labels[i] < 0):
            continue
        qx = np.float64(p[i, 0])
        qy = np.float64(p[i, 1])
        qz = np.float64(p[i, 2])
        ix = int(np.floor(qx * inv_cell))
        iy = int(np.floor(qy * inv_cell))
        iz = int(np.floor(qz * inv_cell))
        best = -1
        best_d = bound
        tie = False
        for cell in range(27):
            b = _cell_bucket(ix + cell // 9 - 1, iy + (cell // 3) % 3 - 1, iz + cell % 3 - 1,
                             mask)
            for t in range(starts[b], starts[b + 1]):  # (other cells' points: just farther)
                j = by_cell[t]
                d0 = np.float64(p[j, 0]) - qx
                d1 = np.float64(p[j, 1]) - qy
                d2 = np.float64(p[j, 2]) - qz
                d = d0 * d0 + d1 * d1 + d2 * d2
                if d < best_d:
                    best_d = d
                    best = j
                    tie = False
                elif d == best_d and best >= 0 and labels[j] != labels[best]:
                    tie = True
        if tie:
            tied[n_tied] = i
            n_tied += 1
        elif best >= 0:
            out[i] = labels[best]
    return out, True, tied[:n_tied], src


def _fill_nearest(xyz: np.ndarray, labels: np.ndarray, todo: np.ndarray, radius: float,
                  ri: RangeImage | None = None, window: int = 3) -> np.ndarray:
    """Give unsegmented ``todo`` points the segment of the nearest segmented point within
    ``radius``. With a range image, only segmented points in pixels within ``window`` of a
    left-over point's pixel are searched (a small KD-tree instead of one over the scan)."""
    from scipy.spatial import cKDTree

    if jit_enabled() and ri is not None and ri.rows and radius > 0:
        pts = as_points(xyz)
        filled, done, tied, src = _fill_kernel(
            pts, np.ascontiguousarray(labels, dtype=np.int64),
            np.ascontiguousarray(todo, dtype=bool),
            np.ascontiguousarray(ri.row_of_point, dtype=np.int32),
            np.ascontiguousarray(ri.col_of_point, dtype=np.int32), int(ri.rows), int(ri.cols),
            int(window), float(radius))
        if done:
            if tied.size:  # equal nearest distances, different segments: the tree decides
                tree = cKDTree(np.asarray(pts[src], np.float64))
                _, nn = tree.query(np.asarray(pts[tied], np.float64), k=1,
                                   distance_upper_bound=radius)
                filled[tied] = labels[src[nn]]
            return filled
    dst = np.flatnonzero(todo & (labels < 0))
    if radius <= 0 or dst.size == 0 or not (labels >= 0).any():
        return labels
    src_mask = labels >= 0
    if ri is not None and ri.rows:
        near = np.zeros((ri.rows, ri.cols), bool)
        has = ri.row_of_point[dst] >= 0
        near[ri.row_of_point[dst[has]], ri.col_of_point[dst[has]]] = True
        grown = near.copy()
        for dr in range(-window, window + 1):
            shifted = np.roll(near, dr, axis=0)
            if dr > 0:
                shifted[:dr] = False
            elif dr < 0:
                shifted[dr:] = False
            for dc in range(-window, window + 1):
                grown |= np.roll(shifted, dc, axis=1)
        ok = ri.row_of_point >= 0
        in_win = np.zeros(labels.shape[0], bool)
        in_win[ok] = grown[ri.row_of_point[ok], ri.col_of_point[ok]]
        src_mask &= in_win | ~ok
    src = np.flatnonzero(src_mask)
    if src.size == 0:
        return labels
    tree = cKDTree(xyz[src, :3])
    dist, nn = tree.query(xyz[dst, :3], k=1, distance_upper_bound=radius)
    hit = np.isfinite(dist)
    labels = labels.copy()
    labels[dst[hit]] = labels[src[nn[hit]]]
    return labels


def _dbscan(p: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    backend = cfg.dbscan_backend
    if backend in ('auto', 'open3d'):
        try:
            import open3d as o3d
        except ImportError as err:
            if backend == 'open3d':
                raise DependencyError(
                    "proposals.dbscan_backend is 'open3d' but open3d is not installed; "
                    'pip install open3d or set dbscan_backend: sklearn') from err
        else:
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
            return np.asarray(pcd.cluster_dbscan(cfg.dbscan_eps, cfg.dbscan_min_points,
                                                 print_progress=False), np.int64)
    try:
        from sklearn.cluster import DBSCAN
    except ImportError as err:
        raise DependencyError('proposals.method dbscan needs open3d or scikit-learn; '
                              'pip install scikit-learn') from err
    return DBSCAN(eps=cfg.dbscan_eps, min_samples=cfg.dbscan_min_points).fit_predict(p)


def segment_proposals(xyz: np.ndarray, ground_mask: np.ndarray | None,
                      ring: np.ndarray | None = None, cfg: ProposalConfig | None = None, *,
                      range_image: RangeImage | None = None,
                      range_image_cfg: RangeImageConfig | None = None) -> np.ndarray:
    """Segment id per point, (N,) int32; -1 = ground / unsegmented / too small / too far.

    ``range_image`` reuses an image already built for the same scan.
    """
    cfg = cfg or ProposalConfig()
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ConfigError(f'segment_proposals: xyz must be (N, 3), got shape {xyz.shape}')
    n = xyz.shape[0]
    if ground_mask is None:
        ground_mask = np.zeros(n, bool)
    ground_mask = np.asarray(ground_mask, bool)
    if ground_mask.shape != (n,):
        raise ConfigError(f'segment_proposals: ground_mask has shape {ground_mask.shape}, '
                          f'expected ({n},) like the scan')
    if n == 0:
        return np.zeros(0, np.int32)
    if jit_enabled():
        p = as_points(xyz)
        cand, count = _candidates_kernel(p, np.ascontiguousarray(ground_mask),
                                         float(cfg.min_range), float(cfg.max_range))
    else:
        p = xyz[:, :3].astype(np.float64)
        finite = np.isfinite(p).all(axis=1)
        rng = np.linalg.norm(np.where(finite[:, None], p, 0.0), axis=1)
        cand = finite & ~ground_mask & (rng <= cfg.max_range) & (rng >= cfg.min_range)
        count = int(cand.sum())
    if count < cfg.min_points:
        return np.full(n, -1, np.int32)
    if cfg.method == 'dbscan':
        labels = np.full(n, -1, np.int64)
        labels[cand] = _dbscan(np.asarray(p[cand], np.float64), cfg)
    else:
        if range_image is None:
            range_image = build_range_image(xyz, ring, range_image_cfg)
        elif range_image.num_points != n:
            raise ConfigError(
                f'segment_proposals: range image is of {range_image.num_points} points, scan '
                f'has {n}; build it from the same scan')
        labels = _range_image_segments(p, cand, range_image, cfg)
        labels = _fill_nearest(p, labels, cand, cfg.fill_radius, range_image)
    return filter_segments(labels, cfg.min_points, cfg.max_points)


def compute_proposals(xyz: np.ndarray, ring: np.ndarray | None = None,
                      cfg: ProposalsConfig | None = None) -> ProposalResult:
    """Ground + proposals of one scan, building the range image once; with timings (ms)."""
    cfg = cfg or ProposalsConfig()
    xyz = np.asarray(xyz)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ri = None
    need_ri = cfg.ground.method == 'range_angle' or cfg.proposals.method == 'range_image'
    if need_ri and xyz.shape[0]:
        ri = build_range_image(xyz, ring, cfg.range_image)
    t1 = time.perf_counter()
    ground = segment_ground(xyz, ring, cfg.ground, range_image=ri,
                            range_image_cfg=cfg.range_image)
    t2 = time.perf_counter()
    segments = segment_proposals(xyz, ground, ring, cfg.proposals, range_image=ri,
                                 range_image_cfg=cfg.range_image)
    t3 = time.perf_counter()
    timings['range_image'] = (t1 - t0) * 1e3
    timings['ground'] = (t2 - t1) * 1e3
    timings['segments'] = (t3 - t2) * 1e3
    timings['total'] = (t3 - t0) * 1e3
    return ProposalResult(ground=ground, segments=segments, range_image=ri, timings_ms=timings)

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
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError, DependencyError
from dsseg_core.pseudolabel.ground import GroundConfig, segment_ground
from dsseg_core.pseudolabel.range_image import (
    RangeImage,
    RangeImageConfig,
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


def filter_segments(labels: np.ndarray, min_points: int, max_points: int) -> np.ndarray:
    """Drop segments outside ``[min_points, max_points]`` and renumber to 0..K-1 (int32)."""
    labels = np.asarray(labels)
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


def _range_image_segments(xyz: np.ndarray, cand: np.ndarray, ri: RangeImage,
                          cfg: ProposalConfig) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = xyz.shape[0]
    labels = np.full(n, -1, np.int64)
    if ri.rows == 0:
        return labels
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


def _fill_nearest(xyz: np.ndarray, labels: np.ndarray, todo: np.ndarray, radius: float,
                  ri: RangeImage | None = None, window: int = 3) -> np.ndarray:
    """Give unsegmented ``todo`` points the segment of the nearest segmented point within
    ``radius``. With a range image, only segmented points in pixels within ``window`` of a
    left-over point's pixel are searched (a small KD-tree instead of one over the scan)."""
    from scipy.spatial import cKDTree

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
    p = xyz[:, :3].astype(np.float64)
    finite = np.isfinite(p).all(axis=1)
    rng = np.linalg.norm(np.where(finite[:, None], p, 0.0), axis=1)
    cand = finite & ~ground_mask & (rng <= cfg.max_range) & (rng >= cfg.min_range)
    if cand.sum() < cfg.min_points:
        return np.full(n, -1, np.int32)
    if cfg.method == 'dbscan':
        labels = np.full(n, -1, np.int64)
        labels[cand] = _dbscan(p[cand], cfg)
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

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

``ransac`` — one dominant near-horizontal plane: open3d ``segment_plane`` when importable (and
``ransac_backend`` allows), else a vectorised numpy RANSAC; planes tilted more than
``ransac_max_tilt_deg`` are rejected; inliers within ``ransac_distance`` are ground.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError, DependencyError
from dsseg_core.pseudolabel.range_image import RangeImage, RangeImageConfig, build_range_image

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

"""Weight-free LiDAR geometry descriptors of segments (one row per segment id).

All statistics are per-segment reductions over sorted points (``np.*.reduceat`` /
``np.bincount``), no per-point Python loop. Features (names in :data:`GEOMETRIC_FEATURES`):

* height of the segment's bottom, centroid and top above the local ground. The local ground
  height is the median ``z`` of the ground points in a ``ground_cell_m`` grid cell around the
  segment's centroid; cells without ground points use the nearest cell that has some (KD-tree);
  with no ground points at all, the 5th percentile of all ``z`` stands in;
* extents: vertical extent, horizontal extent along the main horizontal axis and across it;
* eigenvalue shape features of the 3x3 covariance (λ1 ≥ λ2 ≥ λ3): linearity (λ1-λ2)/λ1,
  planarity (λ2-λ3)/λ1, scattering λ3/λ1;
* verticality: ``1 - |n_z|`` of the normal (smallest eigenvector) and ``|e1_z|`` of the main
  axis (poles/trunks ≈ 1, facades: normal horizontal, road: normal vertical);
* density: ``log(1 + n)`` and ``log`` points per m³ of the bounding box;
* range of the centroid (``log``), and intensity mean / std (0 when no intensity).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from dsseg_core.config import StageConfig
from dsseg_core.jit import jit_enabled
from dsseg_core.pseudolabel.descriptor_kernels import (
    ground_cells_kernel,
    segment_extents_kernel,
    segment_sums_kernel,
)
from dsseg_core.pseudolabel.work_buffers import work_array

__all__ = ['GEOMETRIC_FEATURES', 'GeometricConfig', 'geometric_descriptors', 'local_ground_height']

GEOMETRIC_FEATURES = (
    'bottom_above_ground', 'centroid_above_ground', 'top_above_ground',
    'extent_z', 'extent_main', 'extent_cross',
    'linearity', 'planarity', 'scattering',
    'normal_verticality', 'axis_verticality',
    'log_points', 'log_density', 'log_range',
    'intensity_mean', 'intensity_std',
)


class GeometricConfig(StageConfig):
    """Settings of the LiDAR geometry descriptor."""

    ground_cell_m: float = Field(4.0, gt=0, description='grid cell of the local ground height')


def local_ground_height(
    query_xy: np.ndarray, ground_xyz: np.ndarray, all_z: np.ndarray, cell_m: float
) -> np.ndarray:
    """Local ground ``z`` at each ``query_xy`` from ground points binned in a ``cell_m`` grid."""
    return _ground_height(query_xy, np.asarray(ground_xyz), None, all_z, cell_m)


def _ground_height(query_xy: np.ndarray, xyz: np.ndarray, mask: np.ndarray | None,
                   all_z: np.ndarray, cell_m: float) -> np.ndarray:
    """:func:`local_ground_height` with the ground points ``xyz[mask]`` (all if ``None``)."""
    query_xy = np.asarray(query_xy, dtype=np.float64).reshape(-1, 2)
    if len(query_xy) == 0:
        return np.zeros(0, dtype=np.float64)
    n_ground = len(xyz) if mask is None else int(np.count_nonzero(mask))
    if n_ground == 0:
        fallback = float(np.percentile(all_z, 5)) if len(all_z) else 0.0
        return np.full(len(query_xy), fallback)
    med = None
    if jit_enabled() and xyz.dtype == np.float64:
        # dense grid over the cells' bounding box (numpy below when that is too large)
        gx, gy, med = ground_cells_kernel(
            np.ascontiguousarray(xyz), np.ones(len(xyz), bool) if mask is None else mask,
            float(cell_m), max(4 * n_ground, 1 << 16))
        uniq = np.stack([gx, gy], axis=1)
        if len(med) == 0:
            med = None
    if med is None:
        ground_xyz = xyz if mask is None else xyz[mask]
        cells = np.floor(ground_xyz[:, :2] / cell_m).astype(np.int64)
        key = (cells[:, 0] + (1 << 20)) * (1 << 21) + (cells[:, 1] + (1 << 20))
        ukey, inv = np.unique(key, return_inverse=True)
        uniq = np.stack([ukey // (1 << 21) - (1 << 20), ukey % (1 << 21) - (1 << 20)], axis=1)
        inv = inv.ravel()
        # median z per cell: sort by (cell, z) and take the middle element of each run
        order = np.lexsort((ground_xyz[:, 2], inv))
        counts = np.bincount(inv, minlength=len(uniq))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        med = ground_xyz[order[starts + counts // 2], 2].astype(np.float64)
    from scipy.spatial import cKDTree

    centres = (uniq + 0.5) * cell_m
    _, nearest = cKDTree(centres).query(query_xy, k=1)
    return med[nearest]


def geometric_descriptors(
    xyz: np.ndarray,
    segment_id: np.ndarray,
    num_segments: int,
    ground_mask: np.ndarray | None = None,
    intensity: np.ndarray | None = None,
    cfg: GeometricConfig | None = None,
) -> np.ndarray:
    """``(num_segments, len(GEOMETRIC_FEATURES)) float32``; rows of empty segments are NaN.

    ``segment_id (N,)`` int in ``[0, num_segments)`` or ``-1`` (ignored); ``ground_mask (N,)``
    marks the ground points used for the local ground height.
    """
    cfg = cfg or GeometricConfig()
    nfeat = len(GEOMETRIC_FEATURES)
    out = np.full((num_segments, nfeat), np.nan, dtype=np.float32)
    use_jit = jit_enabled()
    xyz = np.asarray(xyz).reshape(-1, 3)
    if use_jit and xyz.dtype != np.float64 and len(xyz):
        # float64 copy in a per-thread work array (a fresh 2.7 MB array costs page faults)
        x64 = work_array('geometric_xyz', xyz.shape, np.float64)
        x64[:] = xyz
        xyz = x64
    xyz = np.asarray(xyz, dtype=np.float64)
    segment_id = np.asarray(segment_id).ravel()
    if num_segments == 0 or len(xyz) == 0:
        return out
    if use_jit:
        inten_arr = (np.ascontiguousarray(np.asarray(intensity, dtype=np.float64).ravel())
                     if intensity is not None else np.zeros(0))
        present, starts, pts, mean, cov6, stats = segment_sums_kernel(
            np.ascontiguousarray(xyz), np.ascontiguousarray(segment_id, dtype=np.int64),
            int(num_segments), inten_arr, work_array('geometric_sums', (8, len(xyz)),
                                                     np.float64))
        if len(present) == 0:
            return out
        n = np.diff(starts).astype(np.float64)
        cov = cov6[:, [[0, 1, 2], [1, 3, 4], [2, 4, 5]]]
        zmin, zmax = stats[:, 0], stats[:, 1]
        isum = stats[:, 2:4] if intensity is not None else None
    else:
        sel = (segment_id >= 0) & (segment_id < num_segments)
        if not sel.any():
            return out
        order = np.argsort(segment_id[sel], kind='stable')
        sid = segment_id[sel][order]
        p = xyz[sel][order]
        present, starts = np.unique(sid, return_index=True)
        n = np.diff(np.append(starts, len(sid))).astype(np.float64)
        mean = np.add.reduceat(p, starts, axis=0) / n[:, None]
        rep = np.repeat(np.arange(len(present)), n.astype(np.int64))
        d = p - mean[rep]
        cov = np.empty((len(present), 3, 3))
        for i in range(3):
            for j in range(i, 3):
                c = np.add.reduceat(d[:, i] * d[:, j], starts) / n
                cov[:, i, j] = c
                cov[:, j, i] = c
        zmin = np.minimum.reduceat(p[:, 2], starts)
        zmax = np.maximum.reduceat(p[:, 2], starts)
        isum = None
        if intensity is not None:
            inten = np.asarray(intensity, dtype=np.float64).ravel()[sel][order]
            isum = np.stack([np.add.reduceat(inten, starts) / n,
                             np.add.reduceat(inten * inten, starts) / n], axis=1)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    evals = np.clip(evals, 0.0, None)
    l3, l2, l1 = evals[:, 0], evals[:, 1], evals[:, 2]
    safe_l1 = np.where(l1 > 1e-12, l1, 1.0)
    linearity = np.where(l1 > 1e-12, (l1 - l2) / safe_l1, 0.0)
    planarity = np.where(l1 > 1e-12, (l2 - l3) / safe_l1, 0.0)
    scattering = np.where(l1 > 1e-12, l3 / safe_l1, 0.0)
    normal_vert = 1.0 - np.abs(evecs[:, 2, 0])
    axis_vert = np.abs(evecs[:, 2, 2])

    # Horizontal extents along the main horizontal direction (2-D PCA of x, y).
    cxx, cxy, cyy = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    theta = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    ux, uy = np.cos(theta), np.sin(theta)
    if use_jit:
        ext = segment_extents_kernel(pts, starts, mean, ux, uy)
        ext_main, ext_cross = ext[:, 0], ext[:, 1]
    else:
        along = d[:, 0] * ux[rep] + d[:, 1] * uy[rep]
        across = -d[:, 0] * uy[rep] + d[:, 1] * ux[rep]
        ext_main = np.maximum.reduceat(along, starts) - np.minimum.reduceat(along, starts)
        ext_cross = np.maximum.reduceat(across, starts) - np.minimum.reduceat(across, starts)
    ext_z = zmax - zmin

    mask = None if ground_mask is None else np.asarray(ground_mask, dtype=bool).ravel()
    if mask is not None and mask.any():
        gz = _ground_height(mean[:, :2], xyz, mask, xyz[:, 2], cfg.ground_cell_m)
    else:
        gz = _ground_height(mean[:, :2], np.zeros((0, 3)), None, xyz[:, 2], cfg.ground_cell_m)

    volume = np.maximum(ext_main, 0.05) * np.maximum(ext_cross, 0.05) * np.maximum(ext_z, 0.05)
    rng = np.linalg.norm(mean, axis=1)
    if isum is not None:
        imean, isq = isum[:, 0], isum[:, 1]
        istd = np.sqrt(np.clip(isq - imean * imean, 0.0, None))
    else:
        imean = np.zeros(len(present))
        istd = np.zeros(len(present))
    feats = np.stack([
        zmin - gz, mean[:, 2] - gz, zmax - gz,
        ext_z, ext_main, ext_cross,
        linearity, planarity, scattering,
        normal_vert, axis_vert,
        np.log1p(n), np.log(n / volume), np.log(np.maximum(rng, 0.1)),
        imean, istd,
    ], axis=1)
    out[present] = feats.astype(np.float32)
    return out

"""Geometry-aware smoothing of per-point labels (UOV's Approximate Flat Interaction, simplified).

Labels transferred from images are noisy near object silhouettes (calibration, time offset,
blurry 2D mask edges) and missing where no camera sees. This module propagates labels between
neighbouring points, but only along locally flat or linear structure, so that a label spreads
over a wall, a road or a pole and does not jump from a car onto the wall behind it.

Algorithm (``method='geometric'``), all vectorised:

1. Optional voxel downsampling (``voxel_size``): per voxel, the centroid and the
   confidence-weighted class histogram of its labelled points.
2. k nearest voxel centroids (``scipy.spatial.cKDTree``), within ``max_distance``.
3. Local PCA over each voxel's neighbourhood: eigenvalues l1 >= l2 >= l3, main direction e1,
   normal e3. A voxel is *linear* when (l1 - l2) / l1 >= ``linearity``, *planar* when
   (l2 - l3) / l1 >= ``planarity``, *scattered* otherwise (vegetation).
4. An edge i -> j (offset d) is kept only when d is compatible with the structure of *both*
   ends: along e1 for linear (|cos(d, e1)| >= ``linear_cos``), inside the plane for planar
   (|cos(d, e3)| <= ``planar_cos``), anything for scattered when ``scatter_propagates``.
   Edges between ground and non-ground voxels are cut.
5. ``iterations`` rounds of P <- normalise(self_weight * P0 + sum_kept_edges P[j]).
6. Ground voxels (RANSAC plane or a given mask) only keep ground classes.
7. Back to all points through their voxel; a point keeps its own label when the voxel's
   probability of that label is within ``keep_margin`` of the winner (the main protection of
   boundaries inside mixed voxels), or optionally when it lies farther than
   ``point_plane_tolerance`` from its planar voxel's plane. Ground points only keep ground
   classes (point level).

Only points within ``(iterations + 2) x max_distance`` of a labelled point are processed
(``active_region``; the others cannot get a label, the result is the same): with one front
camera this skips most of a 360 degree scan.

Measured on SemanticKITTI (docs/results/points3d.md): at equal accuracy it creates far fewer
boundary leaks than the kNN vote, but like any smoothing it leaks more than the raw labels.

Unless ``DSSEG_JIT=0``, the active region, the voxels, the eigenvectors, the edge gate and
the adjacency matrix are numba kernels (:mod:`dsseg_core.points3d.smoothing_kernels`) with the
numpy code as reference: same labels and confidences, bit for bit (tested on real scans). The
k-d tree query, the RANSAC plane and the propagation stay scipy/numpy.

``method='knn'`` is the baseline: a plain (confidence-weighted) majority vote over the k
nearest points, no geometry. ``method='none'`` returns the input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError
from dsseg_core.jit import jit_enabled
from dsseg_core.points3d.smoothing_kernels import (
    active_cells_kernel,
    adjacency_csr_kernel,
    edge_gate_kernel,
    sym3_vectors_kernel,
    voxel_kernel,
)

__all__ = [
    'LeakStats',
    'SmoothingConfig',
    'SmoothingResult',
    'boundary_leak',
    'fit_ground_ransac',
    'knn_vote',
    'smooth_labels',
    'voxel_downsample',
]

log = logging.getLogger(__name__)

#: Coarse grids of the active region larger than this are not built (all points are used).
_MAX_ACTIVE_CELLS = 20_000_000
_NO_GROUND = np.zeros(1, bool)


class SmoothingConfig(StageConfig):
    """Section ``smoothing``."""

    method: Literal['geometric', 'knn', 'none'] = 'geometric'
    voxel_size: float = Field(0.3, ge=0.0, description='metres; 0 = no downsampling')
    k: int = Field(8, ge=2, le=64, description='neighbours per (voxel) point')
    max_distance: float = Field(0.6, gt=0.0, description='neighbours farther are ignored (m)')
    iterations: int = Field(2, ge=1, le=20)
    self_weight: float = Field(1.0, ge=0.0, description='weight of a voxel own votes')
    linearity: float = Field(0.6, ge=0.0, le=1.0)
    planarity: float = Field(0.35, ge=0.0, le=1.0)
    linear_cos: float = Field(0.9, ge=0.0, le=1.0,
                              description='|cos(offset, main direction)| needed on lines')
    planar_cos: float = Field(0.3, ge=0.0, le=1.0,
                              description='max |cos(offset, normal)| on planes')
    scatter_propagates: bool = True
    active_region: bool = Field(True, description='skip voxels no label can reach '
                                                  '(iterations x max_distance); same result')
    keep_margin: float = Field(0.3, ge=0.0, le=1.0,
                               description='keep a point label whose voxel probability is '
                                           'within this margin of the winner')
    point_plane_tolerance: float = Field(
        0.0, ge=0.0, description='a labelled point farther than this (m) from its planar '
                                 "voxel's plane keeps its own label (0 = off)")
    min_confidence: float = Field(0.0, ge=0.0, le=1.0,
                                  description='input labels below this confidence are ignored')
    ground: Literal['none', 'ransac', 'given'] = 'ransac'
    ground_classes: list[int] = Field(default_factory=lambda: [0])
    ground_default: int | None = Field(
        0, description='label of ground points with no ground-class vote (None = unknown)')
    ground_threshold: float = Field(0.2, gt=0.0, description='RANSAC inlier distance (m)')
    ground_max_tilt_deg: float = Field(15.0, gt=0.0, le=90.0)
    ransac_iterations: int = Field(100, ge=1)
    seed: int = 0


@dataclass
class SmoothingResult:
    """Smoothed labels for every input point."""

    labels: np.ndarray  # (N,) int32, -1 unknown
    confidence: np.ndarray  # (N,) float32 in [0, 1]
    ground_mask: np.ndarray | None  # (N,) bool when ground was used
    num_changed: int  # points whose label differs from the input (unknown -> known counts)


@dataclass
class LeakStats:
    """Boundary leak of a labelling against ground truth (see :func:`boundary_leak`)."""

    boundary_edges: int
    interior_edges: int
    leak_rate: float  # boundary edges whose two labels agree (label crossed the boundary)
    interior_disagreement: float  # interior edges whose two labels differ (noise)
    accuracy: float  # labelled points equal to GT (after mapping labels -> GT ids 1:1)
    coverage: float  # fraction of GT-valid points with a label


def _check_inputs(xyz: np.ndarray, labels: np.ndarray,
                  confidence: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xyz = np.asarray(xyz)
    labels = np.asarray(labels)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ConfigError(f'smoothing: xyz must be (N, 3), got {xyz.shape}')
    if labels.shape != (xyz.shape[0],):
        raise ConfigError(
            f'smoothing: labels must be ({xyz.shape[0]},) like xyz, got {labels.shape}')
    if confidence is None:
        confidence = np.ones(len(labels), np.float32)
    confidence = np.asarray(confidence, np.float32)
    if confidence.shape != labels.shape:
        raise ConfigError(
            f'smoothing: confidence must be {labels.shape} like labels, got {confidence.shape}')
    return xyz.astype(np.float32, copy=False), labels.astype(np.int32, copy=False), confidence


def _kernel_points(xyz: np.ndarray) -> np.ndarray | None:
    """``xyz`` as the kernels take it ((N, 3) float32, C order), or None when it has no point
    or a NaN/inf (cells of non-finite points are undefined: the numpy path handles them)."""
    if not jit_enabled() or xyz.dtype != np.float32 or len(xyz) == 0:
        return None
    xyz = np.ascontiguousarray(xyz)
    if not (np.isfinite(xyz.min()) and np.isfinite(xyz.max())):
        return None
    return xyz


def voxel_downsample(xyz: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index of every point and the voxel centroids: ``(inverse (N,), centroids (V,3))``.

    Voxels are numbered by increasing cell key (as ``np.unique`` does); a numba kernel (hash
    table, one pass) gives the same arrays for float32 points unless ``DSSEG_JIT=0``.
    """
    if voxel_size <= 0:
        return np.arange(len(xyz)), xyz.astype(np.float64)
    pts = _kernel_points(xyz)
    if pts is not None:
        return voxel_kernel(pts, np.float32(voxel_size))
    cell = np.floor(xyz / voxel_size).astype(np.int64)
    cell -= cell.min(axis=0)
    dims = cell.max(axis=0) + 1
    key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    _, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.ravel()
    count = np.bincount(inverse).astype(np.float64)
    centroids = np.stack([np.bincount(inverse, xyz[:, d]) for d in range(3)], axis=1)
    return inverse, centroids / count[:, None]


def fit_ground_ransac(xyz: np.ndarray, threshold: float = 0.2, iterations: int = 100,
                      max_tilt_deg: float = 15.0, sample: int = 4000,
                      seed: int = 0) -> np.ndarray:
    """Ground mask from a RANSAC plane (all hypotheses evaluated at once, then refined).

    Only near-horizontal planes (normal within ``max_tilt_deg`` of z) below the sensor
    are accepted. Returns an all-False mask when no such plane has enough support.
    """
    n = len(xyz)
    if n < 3:
        return np.zeros(n, bool)
    rng = np.random.default_rng(seed)
    pts = xyz.astype(np.float64)
    sub = pts[rng.choice(n, min(sample, n), replace=False)]
    tri = sub[rng.integers(0, len(sub), (iterations, 3))]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normal, axis=1)
    ok = norm > 1e-9
    normal[ok] /= norm[ok, None]
    normal *= np.where(normal[:, 2:3] < 0, -1.0, 1.0)
    ok &= normal[:, 2] >= np.cos(np.radians(max_tilt_deg))
    offset = -(normal * tri[:, 0]).sum(axis=1)
    ok &= offset > 0  # plane below the sensor origin: z = -offset/nz < 0
    if not ok.any():
        return np.zeros(n, bool)
    normal, offset = normal[ok], offset[ok]
    support = (np.abs(sub @ normal.T + offset) < threshold).sum(axis=0)
    best = int(np.argmax(support))
    if support[best] < max(3, 0.05 * len(sub)):
        return np.zeros(n, bool)
    inl = np.abs(pts @ normal[best] + offset[best]) < threshold
    # Least-squares refinement z = a x + b y + c on the inliers.
    a = np.c_[pts[inl, 0], pts[inl, 1], np.ones(inl.sum())]
    coef, *_ = np.linalg.lstsq(a, pts[inl, 2], rcond=None)
    plane_n = np.array([-coef[0], -coef[1], 1.0])
    scale = np.linalg.norm(plane_n)
    dist = (pts[:, 2] - pts[:, :2] @ coef[:2] - coef[2]) / scale
    return np.abs(dist) < threshold


def _histograms(group: np.ndarray, labels: np.ndarray, weight: np.ndarray, n_groups: int,
                num_classes: int) -> np.ndarray:
    valid = labels >= 0
    flat = group[valid] * num_classes + labels[valid]
    hist = np.bincount(flat, weights=weight[valid], minlength=n_groups * num_classes)
    return hist.astype(np.float64, copy=False).reshape(n_groups, num_classes)


def _normalise_rows(p: np.ndarray) -> np.ndarray:
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.zeros_like(p), where=total > 0)


def _sym3_eig(cxx, cxy, cxz, cyy, cyz, czz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form eigen-decomposition of many symmetric 3x3 matrices (vectorised).

    Returns eigenvalues (V,3) descending, the eigenvector of the largest and of the smallest
    eigenvalue (unit, (V,3)). Much faster than batched LAPACK for millions of tiny matrices.
    """
    p1 = cxy ** 2 + cxz ** 2 + cyz ** 2
    q = (cxx + cyy + czz) / 3.0
    p2 = (cxx - q) ** 2 + (cyy - q) ** 2 + (czz - q) ** 2 + 2.0 * p1
    p = np.sqrt(np.maximum(p2 / 6.0, 1e-30))
    bxx, byy, bzz = (cxx - q) / p, (cyy - q) / p, (czz - q) / p
    bxy, bxz, byz = cxy / p, cxz / p, cyz / p
    det_b = (bxx * (byy * bzz - byz * byz) - bxy * (bxy * bzz - byz * bxz)
             + bxz * (bxy * byz - byy * bxz))
    phi = np.arccos(np.clip(det_b / 2.0, -1.0, 1.0)) / 3.0
    e1 = q + 2.0 * p * np.cos(phi)
    e3 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    e2 = 3.0 * q - e1 - e3
    evals = np.stack([e1, e2, e3], axis=1)
    if jit_enabled():
        args = [np.ascontiguousarray(c, np.float64) for c in (cxx, cxy, cxz, cyy, cyz, czz)]
        return (evals, sym3_vectors_kernel(*args, np.ascontiguousarray(e1)),
                sym3_vectors_kernel(*args, np.ascontiguousarray(e3)))

    def vector(lam: np.ndarray) -> np.ndarray:
        r0 = np.stack([cxx - lam, cxy, cxz], axis=1)
        r1 = np.stack([cxy, cyy - lam, cyz], axis=1)
        r2 = np.stack([cxz, cyz, czz - lam], axis=1)
        cands = np.stack([np.cross(r0, r1), np.cross(r0, r2), np.cross(r1, r2)], axis=1)
        norms = np.linalg.norm(cands, axis=2)
        best = norms.argmax(axis=1)
        rows = np.arange(len(lam))
        vec = cands[rows, best]
        nrm = norms[rows, best]
        out = np.zeros_like(vec)
        out[:, 2] = 1.0  # degenerate (isotropic) neighbourhoods: any unit vector
        ok = nrm > 1e-12
        out[ok] = vec[ok] / nrm[ok, None]
        return out

    return evals, vector(e1), vector(e3)


def _local_shape(comp: list[np.ndarray], w: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues (V,3) descending, main direction (V,3) and normal (V,3) of the
    neighbourhoods given as offset components ``comp`` = [dx, dy, dz] (V,k) and weights ``w``
    (V,k) (1 for a valid neighbour, the centre itself included by the caller)."""
    cnt = np.maximum(w.sum(axis=1), 1.0)
    mean = [(c * w).sum(axis=1) / cnt for c in comp]
    dev = [(c - m[:, None]) * w for c, m in zip(comp, mean, strict=True)]
    dx, dy, dz = dev
    comps = [np.einsum('vk,vk->v', a, b) / cnt for a, b in
             ((dx, dx), (dx, dy), (dx, dz), (dy, dy), (dy, dz), (dz, dz))]
    return _sym3_eig(*(c.astype(np.float64) for c in comps))


def _edge_ok(kind: np.ndarray, direction: np.ndarray, normal: np.ndarray,
             unit: list[np.ndarray], cfg: SmoothingConfig) -> np.ndarray:
    """Compatibility of offsets ``unit`` ([ux, uy, uz], each (V,k) or broadcastable) with the
    structure (``kind``, ``direction``, ``normal``: per edge end, broadcastable to (V,k))."""
    cos_dir = np.abs(unit[0] * direction[..., 0] + unit[1] * direction[..., 1]
                     + unit[2] * direction[..., 2])
    cos_nrm = np.abs(unit[0] * normal[..., 0] + unit[1] * normal[..., 1]
                     + unit[2] * normal[..., 2])
    return np.where(kind == 1, cos_dir >= cfg.linear_cos,
                    np.where(kind == 2, cos_nrm <= cfg.planar_cos, cfg.scatter_propagates))


def _active_points(xyz: np.ndarray, labelled: np.ndarray, reach: float) -> np.ndarray | None:
    """Points within ``reach`` of a labelled point (coarse grid of cell ``reach`` + 3x3x3
    dilation, so at least ``reach``), or None when the grid would be too large."""
    if reach <= 0:
        return None
    pts = _kernel_points(xyz)
    if pts is not None:
        ok, active = active_cells_kernel(pts, np.ascontiguousarray(labelled, bool),
                                         np.float32(reach), _MAX_ACTIVE_CELLS)
        return active if ok else None
    cell = np.floor(xyz / reach).astype(np.int64)
    cell -= cell.min(axis=0)
    dims = cell.max(axis=0) + 1
    if int(np.prod(dims)) > _MAX_ACTIVE_CELLS:
        return None
    from scipy.ndimage import binary_dilation

    grid = np.zeros(tuple(dims), bool)
    grid[tuple(cell[labelled].T)] = True
    grid = binary_dilation(grid, structure=np.ones((3, 3, 3), bool))
    return grid[tuple(cell.T)]


def _propagate(cent: np.ndarray, p0: np.ndarray, vground: np.ndarray | None,
               ground_cols: np.ndarray, cfg: SmoothingConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gated label propagation on voxels: ``(P (V,C), shape kind (V,), normal (V,3))``."""
    from scipy import sparse
    from scipy.spatial import cKDTree

    v = len(cent)
    if v == 0:
        return p0.copy(), np.zeros(0, np.int64), np.zeros((0, 3))
    k = min(cfg.k + 1, v)
    dist, nbr = cKDTree(cent).query(cent, k=k, distance_upper_bound=cfg.max_distance)
    dist, nbr = dist[:, 1:], nbr[:, 1:]  # drop self
    valid = nbr < v
    nbr = np.where(valid, nbr, 0)
    c32 = cent.astype(np.float32)
    comp = [c32[nbr, d] - c32[:, d:d + 1] for d in range(3)]  # offsets (V,k) per axis
    w = valid.astype(np.float32)
    # the centre (offset 0) belongs to its own neighbourhood
    evals, direction, normal = _local_shape(
        [np.concatenate([np.zeros((v, 1), np.float32), c], axis=1) for c in comp],
        np.concatenate([np.ones((v, 1), np.float32), w], axis=1))
    l1 = np.maximum(evals[:, 0], 1e-12)
    lin = (evals[:, 0] - evals[:, 1]) / l1
    pla = (evals[:, 1] - evals[:, 2]) / l1
    enough = valid.sum(axis=1) >= 2
    kind = np.where(~enough, 0, np.where(lin >= cfg.linearity, 1,
                                          np.where(pla >= cfg.planarity, 2, 0)))
    inv_d = (1.0 / np.maximum(dist, 1e-9)).astype(np.float32)
    d32, n32 = direction.astype(np.float32), normal.astype(np.float32)
    if jit_enabled():
        # Gate and CSR (rows sorted like scipy's canonical form) in two kernels.
        nbr = np.ascontiguousarray(nbr, np.int64)
        keep = edge_gate_kernel(
            c32, nbr, valid, inv_d, kind.astype(np.int64), d32, n32,
            _NO_GROUND if vground is None else vground, vground is not None,
            np.float32(cfg.linear_cos), np.float32(cfg.planar_cos), bool(cfg.scatter_propagates))
        indptr, indices = adjacency_csr_kernel(nbr, keep)
        adj = sparse.csr_matrix((np.ones(indices.size), indices, indptr), shape=(v, v))
    else:
        unit = [c * inv_d for c in comp]
        keep = valid & _edge_ok(kind[:, None], d32[:, None, :], n32[:, None, :], unit, cfg)
        keep &= _edge_ok(kind[nbr], d32[nbr], n32[nbr], unit, cfg)
        rows = np.broadcast_to(np.arange(v)[:, None], nbr.shape)
        if vground is not None:
            keep &= vground[rows] == vground[nbr]
        adj = sparse.csr_matrix((np.ones(int(keep.sum())), (rows[keep], nbr[keep])),
                                shape=(v, v))

    p = p0
    for _ in range(cfg.iterations):
        p = cfg.self_weight * p0 + adj @ p
        if vground is not None and ground_cols.any():
            p[vground] *= ground_cols
        p = _normalise_rows(p)

    return p, kind, normal


def knn_vote(xyz: np.ndarray, labels: np.ndarray, confidence: np.ndarray | None = None,
             k: int = 10, max_distance: float = 1.0,
             num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: confidence-weighted majority vote over the k nearest points (self included).

    Returns ``(labels int32, confidence float32)``; points with no labelled neighbour stay -1.
    """
    from scipy.spatial import cKDTree

    xyz, labels, confidence = _check_inputs(xyz, labels, confidence)
    n = len(xyz)
    if n == 0:
        return labels.copy(), confidence.copy()
    c = int(num_classes if num_classes is not None else max(labels.max() + 1, 1))
    k = min(k, n)
    dist, nbr = cKDTree(xyz).query(xyz, k=k, distance_upper_bound=max_distance)
    valid = nbr < n
    nbr = np.where(valid, nbr, 0)
    lab = np.where(valid, labels[nbr], -1)
    w = np.where(valid & (lab >= 0), confidence[nbr], 0.0)
    rows = np.repeat(np.arange(n), k)
    hist = _histograms(rows, lab.ravel(), w.ravel(), n, c)
    total = hist.sum(axis=1)
    out = np.where(total > 0, hist.argmax(axis=1), -1).astype(np.int32)
    conf = np.divide(hist.max(axis=1), total, out=np.zeros(n), where=total > 0)
    return out, conf.astype(np.float32)


def smooth_labels(xyz: np.ndarray, labels: np.ndarray, confidence: np.ndarray | None = None,
                  cfg: SmoothingConfig | None = None, ground_mask: np.ndarray | None = None,
                  num_classes: int | None = None) -> SmoothingResult:
    """Smooth ``labels`` (N,) int32 (-1 unknown) on points ``xyz`` (N,3); see module doc.

    ``ground_mask`` (N,) bool is used when ``cfg.ground == 'given'`` (e.g. from
    ``dsseg_core.pseudolabel.ground.segment_ground``); with ``'ransac'`` it is computed here
    unless given. ``num_classes`` defaults to ``max(label) + 1``.
    """

    cfg = cfg or SmoothingConfig()
    xyz, labels, confidence = _check_inputs(xyz, labels, confidence)
    n = len(xyz)
    max_label = int(labels.max()) if n else -1
    c = int(num_classes if num_classes is not None else max(max_label + 1, 1))
    if max_label >= c:
        raise ConfigError(f'smoothing: label {max_label} >= num_classes {c}')
    weight = np.where(confidence >= cfg.min_confidence, confidence, 0.0)
    if cfg.method == 'none' or n == 0:
        return SmoothingResult(labels.copy(), confidence.copy(), None, 0)
    if cfg.method == 'knn':
        out, conf = knn_vote(xyz, labels, weight, cfg.k, cfg.max_distance, c)
        return SmoothingResult(out, conf, None, int((out != labels).sum()))

    if cfg.ground == 'given':
        if ground_mask is None:
            raise ConfigError("smoothing: ground='given' needs a ground_mask (N,) bool; pass "
                              "segment_ground's mask or set smoothing.ground to 'ransac'")
    if ground_mask is not None:
        ground_mask = np.asarray(ground_mask, bool)
        if ground_mask.shape != (n,):
            raise ConfigError(f'smoothing: ground_mask must be ({n},), got {ground_mask.shape}')
    if cfg.active_region:
        # Labels travel at most iterations x max_distance; local shapes (and the neighbours'
        # shapes used by the edge gate) need two more max_distance of context. Points beyond
        # cannot get a label: leave them out (same labels, much faster with one camera).
        reach = (cfg.iterations + 2) * cfg.max_distance
        active = _active_points(xyz, labels >= 0, reach)
        if active is not None and not active.all():
            idx = np.flatnonzero(active)
            part = smooth_labels(
                xyz[idx], labels[idx], confidence[idx],
                cfg.model_copy(update={'active_region': False}),
                None if ground_mask is None else ground_mask[idx], c)
            out = np.full(n, -1, np.int32)
            conf = np.zeros(n, np.float32)
            out[idx], conf[idx] = part.labels, part.confidence
            gm = ground_mask
            if gm is None and part.ground_mask is not None:  # RANSAC on the active region
                gm = np.zeros(n, bool)
                gm[idx] = part.ground_mask
            return SmoothingResult(out, conf, gm, int((out != labels).sum()))

    if ground_mask is None and cfg.ground == 'ransac':
        ground_mask = fit_ground_ransac(xyz, cfg.ground_threshold, cfg.ransac_iterations,
                                        cfg.ground_max_tilt_deg, seed=cfg.seed)
    if cfg.ground == 'none':
        ground_mask = None

    inverse, cent = voxel_downsample(xyz, cfg.voxel_size)
    v = len(cent)
    p0 = _normalise_rows(_histograms(inverse, labels, weight, v, c))
    vground = None
    if ground_mask is not None:
        vground = np.bincount(inverse, ground_mask.astype(np.float64), minlength=v)
        vground = vground / np.bincount(inverse, minlength=v) > 0.5

    ground_cols = np.zeros(c, bool)
    gc = [g for g in cfg.ground_classes if 0 <= g < c]
    ground_cols[gc] = True
    p, kind, normal = _propagate(cent, p0, vground, ground_cols, cfg)

    vlab = np.where(p.sum(axis=1) > 0, p.argmax(axis=1), -1).astype(np.int32)
    vconf = p.max(axis=1).astype(np.float32)
    if vground is not None and cfg.ground_default is not None and gc:
        fill = vground & (vlab < 0) & (p0.sum(axis=1) > 0)  # had votes, none for ground
        vlab[fill] = cfg.ground_default
        vconf[fill] = 0.0

    out = vlab[inverse]
    conf = vconf[inverse]
    if cfg.keep_margin > 0:
        own = labels >= 0
        prob_own = np.zeros(n, np.float32)
        prob_own[own] = p[inverse[own], labels[own]]
        keep_own = own & (prob_own >= conf - cfg.keep_margin) & (prob_own > 0)
        out = np.where(keep_own, labels, out)
        conf = np.where(keep_own, prob_own, conf)
    if cfg.point_plane_tolerance > 0:
        # Points off their voxel's plane belong to another surface (mixed boundary voxel).
        planar = (kind == 2)[inverse]
        off = np.abs(((xyz - cent[inverse]) * normal[inverse]).sum(axis=1))
        own = planar & (off > cfg.point_plane_tolerance) & (labels >= 0)
        out = np.where(own, labels, out)
        conf = np.where(own, confidence, conf)
    if ground_mask is not None and gc:
        # Point-level ground rule (a voxel can mix ground and non-ground points).
        bad = np.flatnonzero(ground_mask & (out >= 0) & ~ground_cols[np.maximum(out, 0)])
        if bad.size:
            pg = p[inverse[bad]][:, gc]
            best = pg.argmax(axis=1)
            has = pg[np.arange(bad.size), best] > 0
            fallback = -1 if cfg.ground_default is None else cfg.ground_default
            out[bad] = np.where(has, np.asarray(gc)[best], fallback)
            conf[bad] = np.where(has, pg[np.arange(bad.size), best], 0.0)
    return SmoothingResult(out.astype(np.int32), conf.astype(np.float32), ground_mask,
                           int((out != labels).sum()))


def boundary_leak(xyz: np.ndarray, gt: np.ndarray, pred: np.ndarray, k: int = 8,
                  max_distance: float = 0.5) -> LeakStats:
    """Boundary leak of ``pred`` against ground truth ``gt`` (both (N,) int, < 0 = ignore).

    Edges: the k nearest neighbours of every point within ``max_distance`` (each undirected
    pair once), both ends with a valid GT. *Boundary edges* join two different GT classes;
    *interior edges* join points of the same GT class. Only edges whose two predicted labels
    are known count.

    * ``leak_rate`` = boundary edges whose predicted labels are equal (a label crossed the
      boundary; 0 is perfect).
    * ``interior_disagreement`` = interior edges whose predicted labels differ (noise).
    * ``accuracy`` = fraction of labelled valid points whose label equals the GT id
      (labels and GT must use the same ids).
    """
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, np.float32)
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    n = len(xyz)
    k = min(k + 1, n)
    _, nbr = cKDTree(xyz).query(xyz, k=k, distance_upper_bound=max_distance)
    nbr = nbr[:, 1:]
    i = np.broadcast_to(np.arange(n)[:, None], nbr.shape).ravel()
    j = nbr.ravel()
    ok = (j < n) & (i < j)
    i, j = i[ok], j[ok]
    ok = (gt[i] >= 0) & (gt[j] >= 0) & (pred[i] >= 0) & (pred[j] >= 0)
    i, j = i[ok], j[ok]
    boundary = gt[i] != gt[j]
    agree = pred[i] == pred[j]
    nb, ni = int(boundary.sum()), int((~boundary).sum())
    valid = gt >= 0
    labelled = valid & (pred >= 0)
    return LeakStats(
        boundary_edges=nb,
        interior_edges=ni,
        leak_rate=float(agree[boundary].mean()) if nb else 0.0,
        interior_disagreement=float((~agree[~boundary]).mean()) if ni else 0.0,
        accuracy=float((pred[labelled] == gt[labelled]).mean()) if labelled.any() else 0.0,
        coverage=float(labelled.sum() / max(valid.sum(), 1)),
    )

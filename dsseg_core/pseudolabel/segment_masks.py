"""Segment → image mask: turn the sparse projected points of LiDAR segments into pixel masks.

Input: the projected points of one camera (``uv`` pixel coordinates, ``depth`` metres) and the
segment id of each (``-1`` = no segment, skipped). Output: an ``(H, W) int32`` segment map,
``-1`` where no segment is trusted.

Method (documented in ``docs/results/pseudolabel.md`` too; vectorised numpy here, and
compiled kernels in :mod:`.mask_kernels` giving the identical map when numba is available,
see :func:`dsseg_core.jit.jit_enabled`):

1. **Splat radius.** Each point covers a disk of radius
   ``r = clip(radius_m * fx / depth, min_radius_px, max_radius_px)`` pixels: a fixed metric
   footprint (``radius_m``) scaled by depth, bounded below so that far points still close the
   gaps between LiDAR rings (an HDL-64 has ~0.4° between rings, ~5 px in KITTI) and above so a
   near point never paints a large blob.
2. **Label z-test.** Every pixel inside at least one disk takes the segment of the *nearest*
   covering point (per-pixel z-buffer over the splats).
3. **Depth agreement (no bleeding over discontinuities).** A min filter of the splatted depth
   over a square window of ``2 * guard_px + 1`` pixels gives, per pixel, the nearest depth
   ``D_guard`` around it and the segment it belongs to. A pixel keeps its segment ``s``
   (depth ``d``) only if that nearest neighbour is of the same segment, or the depths agree:
   ``d <= D_guard * (1 + rel_depth_tol) + abs_depth_tol``. So at a depth discontinuity the
   background segment's pixels next to a nearer object are cut back by ``guard_px`` pixels
   (they stay unlabelled instead of taking a wrong segment), while a surface seen at a grazing
   angle (the road: depth changes fast from row to row) is not cut against itself.
4. Optionally, pixels of segments with fewer than ``min_pixels`` pixels are dropped.

The ground is just another segment id here (the pipeline gives it its own id).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from dsseg_core.config import StageConfig
from dsseg_core.jit import jit_enabled
from dsseg_core.pseudolabel.mask_kernels import (
    count_pixels_kernel,
    drop_segments_kernel,
    guard_kernel,
    splat_kernel,
    unpack_zbuffer,
)
from dsseg_core.pseudolabel.work_buffers import work_array

__all__ = [
    'SegmentMaskConfig',
    'drop_segments',
    'segment_mask_image',
    'segment_pixel_counts',
    'splat_zbuffer',
]


class SegmentMaskConfig(StageConfig):
    """Densification of projected segment points into a per-pixel segment map."""

    radius_m: float = Field(0.08, gt=0, description='metric splat radius, scaled by fx / depth')
    min_radius_px: float = Field(3.2, ge=0.5, description='smallest splat radius (px)')
    max_radius_px: float = Field(6.0, ge=0.5, description='largest splat radius (px)')
    guard_px: int = Field(3, ge=0, le=32, description='occlusion guard window radius (px)')
    rel_depth_tol: float = Field(0.08, ge=0, description='relative depth agreement tolerance')
    abs_depth_tol: float = Field(0.3, ge=0, description='absolute depth agreement tolerance (m)')
    min_pixels: int = Field(0, ge=0, description='drop segments with fewer mask pixels')


def _disk_offsets(max_radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer pixel offsets within ``max_radius`` sorted by distance: (dx, dy, dist)."""
    r = int(np.ceil(max_radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    dist = np.hypot(dx, dy).ravel()
    keep = dist <= max_radius
    order = np.argsort(dist[keep], kind='stable')
    return dx.ravel()[keep][order], dy.ravel()[keep][order], dist[keep][order]


def splat_zbuffer(
    uv: np.ndarray,
    depth: np.ndarray,
    radius_px: np.ndarray,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-point z-buffer of disks: per pixel the depth and index of the nearest disk.

    Returns ``(depth_img (H, W) float32, inf where uncovered; idx_img (H, W) int64, -1)``.

    Points sharing a centre pixel are first reduced to the nearest one (ties: lower index).
    That is exact when the radius does not grow with depth (the nearer point's disk then
    covers the farther one's and wins its z-test), which holds for depth-scaled radii. After
    that, the points written for one disk offset hit distinct pixels, so each offset is one
    vectorised compare-and-write with no duplicate indices. Points whose centre pixel lies
    farther outside the image than the largest radius are ignored (they cannot reach it).
    A pixel reached by several points of equal depth belongs to the one whose centre is at
    the smallest offset (in the order of ``_disk_offsets``).

    With numba (:func:`dsseg_core.jit.jit_enabled`) a compiled kernel
    (:func:`.mask_kernels.splat_kernel`) gives the same result.
    """
    n = len(depth)
    if n == 0:
        return (np.full((height, width), np.inf, dtype=np.float32),
                np.full((height, width), -1, dtype=np.int64))
    radius_px = np.asarray(radius_px).ravel()
    cx = np.floor(uv[:, 0]).astype(np.int64)
    cy = np.floor(uv[:, 1]).astype(np.int64)
    r = max(int(np.ceil(radius_px.max())), 0)
    if jit_enabled():
        zbuf = _splat_jit(cx, cy, depth, radius_px, width, height, r)
        depth_img = np.empty((height, width), dtype=np.float32)
        idx_img = np.empty((height, width), dtype=np.int64)
        unpack_zbuffer(zbuf, depth_img, idx_img)
        return depth_img, idx_img
    reach = np.flatnonzero((cx >= -r) & (cx < width + r) & (cy >= -r) & (cy < height + r))
    if len(reach) == 0:
        return (np.full((height, width), np.inf, dtype=np.float32),
                np.full((height, width), -1, dtype=np.int64))
    # Buffers padded by twice the largest radius (centres up to r outside, disks r around
    # them): no bounds checks inside the loop.
    b = 2 * r
    wp = width + 2 * b
    centre = cy[reach] * wp + cx[reach]
    order = np.lexsort((reach, depth[reach], centre))
    centre = centre[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = centre[1:] != centre[:-1]
    pts = reach[order[first]]
    # Largest radius first: the points reaching offset distance ``dist`` form a prefix.
    pts = pts[np.argsort(-radius_px[pts], kind='stable')]
    rad = radius_px[pts]
    pd = depth[pts].astype(np.float32)
    flat_depth = np.full((height + 2 * b) * wp, np.inf, dtype=np.float32)
    flat_idx = np.full((height + 2 * b) * wp, -1, dtype=np.int64)
    base = (cy[pts] + b) * wp + (cx[pts] + b)
    dxs, dys, dists = _disk_offsets(float(rad[0]))
    neg_rad = -rad
    for dx, dy, dist in zip(dxs, dys, dists, strict=True):
        k = int(np.searchsorted(neg_rad, -dist, side='right'))
        if k == 0:
            break  # offsets are sorted by distance: no point reaches further
        pix = base[:k] + (dy * wp + dx)
        d = pd[:k]
        better = d < flat_depth[pix]
        pix = pix[better]
        flat_depth[pix] = d[better]
        flat_idx[pix] = pts[:k][better]
    depth_img = flat_depth.reshape(height + 2 * b, wp)[b:b + height, b:b + width].copy()
    idx_img = flat_idx.reshape(height + 2 * b, wp)[b:b + height, b:b + width].copy()
    return depth_img, idx_img


def _splat_jit(cx: np.ndarray, cy: np.ndarray, depth: np.ndarray, radius: np.ndarray,
               width: int, height: int, pad: int) -> np.ndarray:
    """:func:`.mask_kernels.splat_kernel` with its arrays: the packed z-buffer (a per-thread
    work array: valid until the next call in this thread)."""
    dxs, dys, dists = _disk_offsets(float(radius.max()))
    zbuf = work_array('splat_zbuffer', (height, width), np.int64)
    nearest = work_array('splat_nearest', (height + 2 * pad) * (width + 2 * pad), np.int32)
    splat_kernel(cx, cy, np.ascontiguousarray(depth, dtype=np.float64),
                 np.ascontiguousarray(radius, dtype=np.float64), int(pad),
                 dxs.astype(np.int64), dys.astype(np.int64), dists.astype(np.float64),
                 nearest, zbuf)
    return zbuf


def segment_mask_image(
    uv: np.ndarray,
    depth: np.ndarray,
    segment_id: np.ndarray,
    width: int,
    height: int,
    fx: float,
    cfg: SegmentMaskConfig | None = None,
) -> np.ndarray:
    """``(H, W) int32`` segment map (``-1`` = none) from projected, segmented points.

    ``uv (M, 2)`` pixel coordinates (x right, y down), ``depth (M,)`` metres, ``segment_id
    (M,)`` int (``-1`` = unsegmented: such points still occlude, but label nothing), ``fx`` the
    camera focal length in pixels (splat radius scaling).
    """
    cfg = cfg or SegmentMaskConfig()
    uv = np.asarray(uv, dtype=np.float32).reshape(-1, 2)
    depth = np.asarray(depth, dtype=np.float32).ravel()
    segment_id = np.asarray(segment_id).ravel()
    if not (len(uv) == len(depth) == len(segment_id)):
        raise ValueError(f'uv, depth and segment_id differ in length: '
                         f'{len(uv)}, {len(depth)}, {len(segment_id)}')
    good = np.isfinite(depth) & (depth > 0) & np.isfinite(uv).all(axis=1)
    if not good.any():
        return np.full((height, width), -1, dtype=np.int32)
    uv, depth, segment_id = uv[good], depth[good], segment_id[good]
    radius = np.clip(cfg.radius_m * float(fx) / depth, cfg.min_radius_px, cfg.max_radius_px)
    if jit_enabled():
        cx = np.floor(uv[:, 0]).astype(np.int64)
        cy = np.floor(uv[:, 1]).astype(np.int64)
        pad = max(int(np.ceil(radius.max())), 0)
        zbuf = _splat_jit(cx, cy, depth, radius, width, height, pad)
        out = np.empty((height, width), dtype=np.int32)
        guard_kernel(zbuf, np.ascontiguousarray(depth, dtype=np.float32),
                     np.ascontiguousarray(segment_id, dtype=np.int64), int(cfg.guard_px),
                     1.0 + cfg.rel_depth_tol, float(cfg.abs_depth_tol), out)
    else:
        label_depth, label_idx = splat_zbuffer(uv, depth, radius, width, height)
        out = _guard_numpy(label_depth, label_idx, segment_id, cfg)
    if cfg.min_pixels > 0:
        keep = out >= 0
        if keep.any():
            counts = np.bincount(out[keep])
            small = counts < cfg.min_pixels
            if small.any():
                out[keep & small[np.maximum(out, 0)]] = -1
    return out


def _guard_numpy(label_depth: np.ndarray, label_idx: np.ndarray, segment_id: np.ndarray,
                 cfg: SegmentMaskConfig) -> np.ndarray:
    """Steps 3 (segment lookup + depth-agreement guard) of the module doc, numpy reference
    of :func:`.mask_kernels.guard_kernel`."""
    height, width = label_depth.shape
    out = np.full((height, width), -1, dtype=np.int32)
    covered = label_idx >= 0
    seg = np.full((height, width), -1, dtype=np.int64)
    seg[covered] = segment_id[label_idx[covered]]
    keep = covered & (seg >= 0)
    if cfg.guard_px > 0 and keep.any():
        from scipy.ndimage import minimum_filter

        # Sortable key: depth (mm) in the high bits, segment (+1) in the low 24 bits, so the
        # window minimum gives the nearest depth around a pixel *and* whose it is.
        depth_mm = np.minimum(np.round(label_depth[covered] * 1000.0), 2**38).astype(np.int64)
        key = np.full((height, width), np.iinfo(np.int64).max, dtype=np.int64)
        key[covered] = (depth_mm << 24) | ((seg[covered] + 1) & 0xFFFFFF)
        g = int(cfg.guard_px)
        rows = np.flatnonzero(covered.any(axis=1))
        r0, r1 = max(int(rows[0]) - g, 0), min(int(rows[-1]) + g + 1, height)
        guard = np.full((height, width), np.iinfo(np.int64).max, dtype=np.int64)
        # separable square window (2g+1)^2: two 1-D passes
        guard[r0:r1] = minimum_filter(key[r0:r1], size=2 * g + 1, mode='nearest')
        guard_depth = (guard >> 24).astype(np.float64) / 1000.0
        guard_seg = (guard & 0xFFFFFF) - 1
        agree = (guard_seg == seg) | (
            label_depth <= guard_depth * (1.0 + cfg.rel_depth_tol) + cfg.abs_depth_tol)
        keep &= agree
    out[keep] = seg[keep]
    return out


def segment_pixel_counts(seg_map: np.ndarray, num_segments: int) -> np.ndarray:
    """``(num_segments,) int64`` pixels per segment of an ``(H, W)`` int segment map (``-1``
    and ids ``>= num_segments`` not counted)."""
    if jit_enabled() and seg_map.dtype == np.int32 and seg_map.flags.c_contiguous:
        counts = np.zeros(num_segments, dtype=np.int64)
        count_pixels_kernel(seg_map, counts)
        return counts
    valid = seg_map[(seg_map >= 0) & (seg_map < num_segments)]
    return np.bincount(valid.ravel(), minlength=num_segments)[:num_segments].astype(np.int64)


def drop_segments(seg_map: np.ndarray, drop: np.ndarray) -> None:
    """In place: pixels of the segments with ``drop[s]`` (``(S,) bool``) become ``-1``."""
    drop = np.asarray(drop, dtype=bool)
    if jit_enabled() and seg_map.dtype == np.int32 and seg_map.flags.c_contiguous:
        drop_segments_kernel(seg_map, np.ascontiguousarray(drop))
        return
    hit = (seg_map >= 0) & (seg_map < len(drop))
    hit[hit] = drop[seg_map[hit]]
    seg_map[hit] = -1

"""Projection of LiDAR points into camera images, z-buffer visibility, overlays, alignment score.

Pixel convention: ``uv`` are continuous pixel coordinates (u = column, x right; v = row,
y down). A point is inside the image when ``0 <= u < W`` and ``0 <= v < H``, and it falls on
pixel ``(row, col) = (floor(v), floor(u))`` (:meth:`Projection.pixels`). ``depth`` is the
camera-frame z (distance along the optical axis), not the Euclidean range.

Everything is vectorised numpy, no per-point Python loops; :func:`project_points` and
:func:`zbuffer_visible` also have numba kernels (:mod:`dsseg_core.projection_kernels`, one pass
over the points each), used unless ``DSSEG_JIT=0``, with bit-identical results.
"""
# Matrix names follow the maths (K, D, R, T, P): ruff pep8-naming is relaxed for them.


from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dsseg_core.calibration import CameraCalibration, CameraModel, distort_normalized
from dsseg_core.errors import CalibrationError, MessageError
from dsseg_core.jit import jit_enabled
from dsseg_core.projection_kernels import (
    C_CX,
    C_CY,
    C_FX,
    C_FY,
    C_HI_U,
    C_HI_V,
    C_LO_U,
    C_LO_V,
    C_MIN_Z,
    C_ONE,
    C_R2MAX,
    C_SKEW,
    C_SKEW_FX,
    MODEL_CODES,
    N_CONSTS,
    project_distorted_kernel,
    project_pinhole_kernel,
    zbuffer_kernel,
    zbuffer_scratch_size,
)

__all__ = [
    'DEFAULT_DEPTH_TOLERANCE',
    'DEFAULT_ZBUFFER_RADIUS_PX',
    'Projection',
    'alignment_edge_map',
    'depth_colormap',
    'depth_image',
    'draw_depth_overlay',
    'edge_alignment_score',
    'max_undistorted_radius',
    'project_points',
    'transform_points',
    'zbuffer_visible',
]

log = logging.getLogger(__name__)

#: Default neighbourhood half-size (pixels) of the z-buffer occlusion test (7x7 window).
DEFAULT_ZBUFFER_RADIUS_PX = 3
#: Default relative depth tolerance: hidden if a neighbour is nearer than ``depth * (1 - tol)``.
DEFAULT_DEPTH_TOLERANCE = 0.1


@dataclass
class Projection:
    """Points of a cloud that land inside one camera image.

    ``point_index`` (M,) int64 indexes the input cloud; ``uv`` (M, 2) float32 pixel coordinates;
    ``depth`` (M,) float32 camera-frame z in metres.
    """

    point_index: np.ndarray
    uv: np.ndarray
    depth: np.ndarray
    width: int = 0
    height: int = 0

    def __len__(self) -> int:
        return int(self.point_index.shape[0])

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer ``(rows, cols)`` (int64) of the pixels the points fall on."""
        cols = self.uv[:, 0].astype(np.int64)  # uv >= 0, so truncation == floor
        rows = self.uv[:, 1].astype(np.int64)
        if self.width and self.height:
            np.clip(cols, 0, self.width - 1, out=cols)
            np.clip(rows, 0, self.height - 1, out=rows)
        return rows, cols

    def subset(self, mask: np.ndarray) -> Projection:
        """The projection restricted to ``mask`` (bool (M,) or integer indices)."""
        return Projection(self.point_index[mask], self.uv[mask], self.depth[mask],
                          self.width, self.height)


def _as_points(xyz: np.ndarray) -> np.ndarray:
    """(N, C >= 3) float32/float64 array; columns beyond x, y, z are carried, not used."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise MessageError(
            f'points: expected an (N, 3) array of x, y, z (extra columns are ignored), got '
            f'shape {xyz.shape}'
        )
    if xyz.dtype not in (np.float32, np.float64):
        xyz = xyz.astype(np.float32)
    return xyz


def _as_xyz(xyz: np.ndarray) -> np.ndarray:
    return _as_points(xyz)[:, :3]


def transform_points(xyz: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``(T @ [x, y, z, 1])[:3]`` for every row of ``xyz`` (float32 in, float32 out)."""
    xyz = _as_xyz(xyz)
    dt = xyz.dtype
    R = np.asarray(T[:3, :3], dtype=dt)
    t = np.asarray(T[:3, 3], dtype=dt)
    out = xyz @ R.T
    out += t
    return out


@lru_cache(maxsize=64)
def _max_radius_cached(model: str, D: tuple[float, ...], rd_limit: float) -> float:
    D_arr = np.asarray(D, dtype=np.float64)
    if model == 'equidistant':
        # Variable: theta in [0, pi/2); monotonic range of theta_d(theta).
        s = np.linspace(0.0, np.pi / 2 - 1e-6, 8192)
        k1, k2, k3, k4 = D_arr
        t2 = s * s
        g = s * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
    else:
        r_hi = max(10.0 * rd_limit, 4.0)
        s = np.linspace(0.0, r_hi, 8192)
        k1, k2, _p1, _p2, k3 = D_arr[:5]
        r2 = s * s
        num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        if model == 'rational_polynomial':
            k4, k5, k6 = D_arr[5:8]
            den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
            with np.errstate(divide='ignore', invalid='ignore'):
                num = np.where(den > 1e-9, num / den, -np.inf)
        g = s * num
    bad = ~np.isfinite(g)
    fold = np.flatnonzero(bad[1:] | (np.diff(g) <= 0))
    limit_idx = len(s) - 1
    if fold.size:
        limit_idx = int(fold[0])
    beyond = np.flatnonzero(g[: limit_idx + 1] > rd_limit)
    if beyond.size:
        limit_idx = int(beyond[0])
    elif not fold.size:
        return float('inf')  # monotonic and never leaves the image: no radius limit
    s_max = float(s[limit_idx])
    return float(np.tan(s_max)) if model == 'equidistant' else s_max


def max_undistorted_radius(camera: CameraModel, margin: float = 1.25) -> float:
    """Largest undistorted normalised radius ``sqrt(x² + y²)`` that can land in the image.

    Beyond it a point is either outside the image even after distortion, or in the region
    where the distortion polynomial folds back (and would wrap into the image). ``inf`` for
    undistorted cameras. ``margin`` (>1) covers tangential terms.
    """
    if not camera.has_distortion:
        return float('inf')
    corners_u = np.array([0.0, camera.width, 0.0, camera.width])
    corners_v = np.array([0.0, 0.0, camera.height, camera.height])
    yd = (corners_v - camera.cy) / camera.fy
    xd = (corners_u - camera.cx - camera.K[0, 1] * yd) / camera.fx
    rd_limit = float(np.sqrt(xd * xd + yd * yd).max()) * margin
    return _max_radius_cached(camera.distortion_model, tuple(float(v) for v in camera.D),
                              rd_limit)


def project_points(xyz: np.ndarray, calib: CameraCalibration, min_depth: float = 0.5
                   ) -> Projection:
    """Project LiDAR points (N, 3+) into ``calib``'s image; keep those in front and inside.

    Applies ``T_cam_lidar``, drops points with camera z <= ``min_depth``, guards against the
    distortion model's fold-back (points outside the undistorted field of view are dropped
    before distorting), applies the distortion and K, and keeps ``0 <= u < W, 0 <= v < H``.

    Arithmetic is done in the cloud's dtype (float32 for float32 clouds), one IEEE operation
    at a time in a fixed order (``x * R[i, 0] + y * R[i, 1] + z * R[i, 2] + t[i]``, no BLAS),
    so that the numba kernel (:mod:`dsseg_core.projection_kernels`) and this numpy path give
    bit-identical results; the kernel is used unless ``DSSEG_JIT=0`` (or for fisheye cameras).
    """
    if not isinstance(calib, CameraCalibration):
        raise CalibrationError(
            f'project_points needs a CameraCalibration, got {type(calib).__name__}'
        )
    arr = _as_points(xyz)
    if jit_enabled() and calib.camera.distortion_model in MODEL_CODES:
        return _project_points_jit(arr, calib, min_depth)
    return _project_points_numpy(arr, calib, min_depth)


def _affine_row(pts: np.ndarray, R: np.ndarray, t: np.floating, i: int) -> np.ndarray:
    """``pts[:, 0] * R[i, 0] + pts[:, 1] * R[i, 1] + pts[:, 2] * R[i, 2] + t`` in pts' dtype,
    left to right (the order the kernel uses; no FMA, no BLAS blocking)."""
    with np.errstate(invalid='ignore', over='ignore'):  # NaN/inf points are dropped later
        out = pts[:, 0] * R[i, 0]
        tmp = np.multiply(pts[:, 1], R[i, 1])
        out += tmp
        np.multiply(pts[:, 2], R[i, 2], out=tmp)
        out += tmp
        out += t
    return out


def _project_points_numpy(arr: np.ndarray, calib: CameraCalibration, min_depth: float
                          ) -> Projection:
    """Reference (vectorised numpy) path of :func:`project_points`."""
    cam = calib.camera
    T = calib.T_cam_lidar
    ft = arr.dtype
    R = T[:3, :3].astype(ft)
    # Depth first, then x, y only for the points in front. Row gathers (np.take) of whole
    # rows stay fast on the strided (N, 3) view of (N, 4) scans.
    z = _affine_row(arr, R, ft.type(T[2, 3]), 2)
    idx = np.flatnonzero(z > max(float(min_depth), 1e-6))
    z = z[idx]
    sub = np.take(arr, idx, axis=0)
    x = _affine_row(sub, R, ft.type(T[0, 3]), 0)
    y = _affine_row(sub, R, ft.type(T[1, 3]), 1)
    fx, fy, cx, cy, skew = cam.fx, cam.fy, cam.cx, cam.cy, float(cam.K[0, 1])
    if not cam.has_distortion:
        # Pre-cut without divisions (z > 0), one pixel of margin; the exact test is below.
        lo_u, hi_u, lo_v, hi_v = _pinhole_cut(cam)
        xs = x if skew == 0.0 else x + (skew / fx) * y
        keep = np.flatnonzero((xs >= lo_u * z) & (xs < hi_u * z) & (y >= lo_v * z)
                              & (y < hi_v * z))
        idx, x, y, z = idx[keep], x[keep], y[keep], z[keep]
    inv_z = 1.0 / z
    xn = x * inv_z
    yn = y * inv_z
    if cam.has_distortion:
        r_max = max_undistorted_radius(cam)
        if np.isfinite(r_max):
            keep = np.flatnonzero(xn * xn + yn * yn <= r_max * r_max)
            idx, xn, yn, z = idx[keep], xn[keep], yn[keep], z[keep]
        xn, yn = distort_normalized(xn, yn, cam.distortion_model, cam.D)
    dt = np.float32
    u = (fx * xn + cx) if skew == 0.0 else (fx * xn + skew * yn + cx)
    v = fy * yn + cy
    u = u.astype(dt, copy=False)
    v = v.astype(dt, copy=False)
    inside = np.flatnonzero((u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height))
    uv = np.empty((inside.size, 2), dtype=dt)
    uv[:, 0] = u[inside]
    uv[:, 1] = v[inside]
    return Projection(idx[inside].astype(np.int64, copy=False), uv,
                      z[inside].astype(dt, copy=False), cam.width, cam.height)


def _pinhole_cut(cam: CameraModel) -> tuple[float, float, float, float]:
    """Normalised-coordinate bounds of the image plus one pixel (pre-cut of pinhole cameras)."""
    fx, fy, cx, cy = cam.fx, cam.fy, cam.cx, cam.cy
    return ((-cx - 1.0) / fx, (cam.width - cx + 1.0) / fx,
            (-cy - 1.0) / fy, (cam.height - cy + 1.0) / fy)


def _kernel_constants(arr: np.ndarray, calib: CameraCalibration, min_depth: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rot, trans, consts)`` of the projection kernels: the constants of the numpy path
    in the cloud's dtype (how numpy rounds the Python floats it mixes with the arrays)."""
    cam = calib.camera
    T = calib.T_cam_lidar
    ft = arr.dtype
    skew = float(cam.K[0, 1])
    consts = np.zeros(N_CONSTS, ft)
    consts[C_MIN_Z] = max(float(min_depth), 1e-6)
    consts[C_FX], consts[C_FY], consts[C_CX], consts[C_CY] = cam.fx, cam.fy, cam.cx, cam.cy
    consts[C_SKEW] = skew
    consts[C_SKEW_FX] = skew / cam.fx
    consts[C_LO_U], consts[C_HI_U], consts[C_LO_V], consts[C_HI_V] = _pinhole_cut(cam)
    consts[C_ONE] = 1.0
    return np.ascontiguousarray(T[:3, :3], ft), np.ascontiguousarray(T[:3, 3], ft), consts


def project_points_kernel(pts: np.ndarray, calib: CameraCalibration, min_depth: float
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(index, uv, depth)`` of :func:`project_points` from the numba kernels: ``pts`` (N, 3+)
    float32/float64 C-contiguous, a pinhole, plumb_bob or rational_polynomial camera."""
    cam = calib.camera
    rot, trans, consts = _kernel_constants(pts, calib, min_depth)
    if not cam.has_distortion:
        return project_pinhole_kernel(pts, rot, trans, consts, cam.width, cam.height)
    r_max = max_undistorted_radius(cam)
    check_radius = bool(np.isfinite(r_max))
    if check_radius:
        consts[C_R2MAX] = r_max * r_max
    dist = np.zeros(8, pts.dtype)
    dist[:cam.D.size] = cam.D
    return project_distorted_kernel(pts, rot, trans, consts, dist,
                                    cam.distortion_model == 'rational_polynomial', check_radius,
                                    cam.width, cam.height)


def _project_points_jit(arr: np.ndarray, calib: CameraCalibration, min_depth: float
                        ) -> Projection:
    """Kernel path of :func:`project_points` (same result as the numpy path)."""
    cam = calib.camera
    index, uv, depth = project_points_kernel(np.ascontiguousarray(arr), calib, min_depth)
    return Projection(index, uv, depth, cam.width, cam.height)


def _check_size(projection: Projection, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise CalibrationError(f'image size {width}x{height} is invalid')
    if projection.width and (projection.width, projection.height) != (width, height):
        raise CalibrationError(
            f'projection was made for {projection.width}x{projection.height} images but '
            f'{width}x{height} was requested; project with the calibration of this image size'
        )


def _min_depth_grid(projection: Projection, width: int, height: int, pad: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest depth per pixel (``inf`` where empty) on a grid padded by ``pad``, and the
    flat index of each point in that grid."""
    rows, cols = projection.pixels()
    if not projection.width:
        np.clip(cols, 0, width - 1, out=cols)
        np.clip(rows, 0, height - 1, out=rows)
    stride = width + 2 * pad
    flat = (rows + pad) * stride + (cols + pad)
    grid = np.full((height + 2 * pad) * stride, np.inf, dtype=np.float32)
    np.minimum.at(grid, flat, projection.depth.astype(np.float32, copy=False))
    return grid.reshape(height + 2 * pad, stride), flat


def _sliding_min_rows(a: np.ndarray, w: int) -> np.ndarray:
    """``out[:, j] = a[:, j:j + w].min(axis=1)`` by doubling (log2(w) + 1 passes)."""
    n = a.shape[1]
    cur, k = a, 1
    while 2 * k <= w:
        cur = np.minimum(cur[:, : cur.shape[1] - k], cur[:, k:])
        k *= 2
    if k < w:
        cur = np.minimum(cur[:, : n - w + 1], cur[:, w - k: w - k + n - w + 1])
    return cur[:, : n - w + 1]


_SCRATCH = threading.local()


def zbuffer_scratch(width: int, height: int, radius: int) -> np.ndarray:
    """This thread's float32 work buffer for :func:`zbuffer_kernel` (grown, never shrunk:
    reusing it avoids faulting in ~4 MB of fresh pages per call)."""
    size = zbuffer_scratch_size(width, height, radius)
    buf = getattr(_SCRATCH, 'zbuffer', None)
    if buf is None or buf.size < size:
        buf = np.empty(size, np.float32)
        _SCRATCH.zbuffer = buf
    return buf


def depth_image(projection: Projection, width: int, height: int) -> np.ndarray:
    """(H, W) float32 image of the nearest projected depth per pixel; 0 where no point."""
    _check_size(projection, width, height)
    grid, _ = _min_depth_grid(projection, width, height)
    grid[np.isinf(grid)] = 0.0
    return grid


def zbuffer_visible(
    projection: Projection,
    width: int,
    height: int,
    radius_px: int = DEFAULT_ZBUFFER_RADIUS_PX,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
) -> np.ndarray:
    """(M,) bool: which projected points the camera actually sees.

    A point is hidden when some point within ``radius_px`` pixels (a (2r+1)² window) is nearer
    than ``depth * (1 - depth_tolerance)``: LiDAR points seen "through" the gaps between the
    points of a nearer surface (the LiDAR sits at a different place than the camera) are
    removed. Defaults: ``radius_px=3`` (KITTI HDL-64 rings are ~5 px apart in the image),
    ``depth_tolerance=0.1``. Sparser LiDARs (32 beams) need a larger radius.
    """
    _check_size(projection, width, height)
    if radius_px < 0 or not 0.0 <= depth_tolerance < 1.0:
        raise CalibrationError(
            f'zbuffer_visible: radius_px must be >= 0 and depth_tolerance in [0, 1), got '
            f'{radius_px}, {depth_tolerance}'
        )
    m = len(projection)
    if m == 0:
        return np.zeros(0, dtype=bool)
    r = int(radius_px)
    factor = np.float32(1.0 - depth_tolerance)
    if jit_enabled() and projection.uv.dtype == np.float32 \
            and projection.depth.dtype == np.float32:
        return zbuffer_kernel(np.ascontiguousarray(projection.uv),
                              np.ascontiguousarray(projection.depth), int(width), int(height), r,
                              factor, zbuffer_scratch(int(width), int(height), r))
    rows, cols = projection.pixels()
    if not projection.width:
        np.clip(cols, 0, width - 1, out=cols)
        np.clip(rows, 0, height - 1, out=rows)
    # Nearest depth per pixel on the band of rows that hold points, padded by r (inf = empty).
    rmin = int(rows.min())
    band_h = int(rows.max()) - rmin + 1 + 2 * r
    stride = width + 2 * r
    flat = (rows - (rmin - r)) * stride + (cols + r)
    grid = np.full(band_h * stride, np.inf, dtype=np.float32)
    np.minimum.at(grid, flat, projection.depth.astype(np.float32, copy=False))
    if r == 0:
        nbr = grid[flat]
    else:
        # Separable min filter: along the rows over the whole band (by doubling), then down
        # the columns at the points themselves.
        hmin = np.ascontiguousarray(_sliding_min_rows(grid.reshape(band_h, stride), 2 * r + 1))
        hw = hmin.shape[1]  # = width; hmin[y, x] = min of grid[y, x .. x + 2r]
        h = hmin.reshape(-1)
        base = (rows - (rmin - r)) * hw + cols
        nbr = h[base]
        for dy in range(-r, r + 1):
            if dy:
                np.minimum(nbr, h[base + dy * hw], out=nbr)
    return ~(nbr < projection.depth * factor)


# --------------------------------------------------------------------------------------------
# Overlay

# A compact "turbo"-like colormap: near = red, far = blue/violet.
_CMAP_STOPS = np.array([0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0])
_CMAP_RGB = np.array([
    [255, 30, 0],
    [255, 120, 0],
    [250, 200, 20],
    [170, 240, 40],
    [40, 230, 160],
    [30, 170, 250],
    [60, 80, 230],
    [90, 20, 160],
], dtype=np.float64)


def depth_colormap(depth: np.ndarray, max_depth: float = 80.0) -> np.ndarray:
    """(M, 3) uint8 colours for depths: red (near) → yellow → green → blue → violet (far)."""
    t = np.clip(np.asarray(depth, dtype=np.float64) / float(max_depth), 0.0, 1.0)
    out = np.empty(t.shape + (3,), dtype=np.uint8)
    for c in range(3):
        out[..., c] = np.interp(t, _CMAP_STOPS, _CMAP_RGB[:, c]).round().astype(np.uint8)
    return out


def draw_depth_overlay(image_rgb: np.ndarray, projection: Projection, max_depth: float = 80.0,
                       radius: int = 1) -> np.ndarray:
    """Copy of ``image_rgb`` with the projected points drawn as squares coloured by depth.

    ``radius`` 1 → 3x3 px dots (2 → 5x5). Nearer points are drawn on top.
    """
    img = np.asarray(image_rgb)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] < 3:
        raise MessageError(f'draw_depth_overlay: expected an (H, W, 3) image, got {img.shape}')
    out = np.ascontiguousarray(img[:, :, :3], dtype=np.uint8).copy()
    h, w = out.shape[:2]
    if len(projection) == 0:
        return out
    rows, cols = projection.pixels()
    offs = np.arange(-radius, radius + 1)
    rr = np.clip(rows[:, None, None] + offs[None, :, None], 0, h - 1)
    cc = np.clip(cols[:, None, None] + offs[None, None, :], 0, w - 1)
    flat = (rr * w + cc).ravel()
    owner = np.repeat(np.arange(len(projection)), offs.size * offs.size)
    # Per pixel keep the nearest point's dot: sort by (pixel, depth), first of each pixel.
    order = np.lexsort((projection.depth[owner], flat))
    flat, owner = flat[order], owner[order]
    first = np.ones(flat.size, dtype=bool)
    first[1:] = flat[1:] != flat[:-1]
    colours = depth_colormap(projection.depth, max_depth)
    out.reshape(-1, 3)[flat[first]] = colours[owner[first]]
    return out


# --------------------------------------------------------------------------------------------
# Calibration check


def _gray(image_rgb: np.ndarray) -> np.ndarray:
    img = np.asarray(image_rgb)
    if img.ndim == 3:
        img = img[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return img.astype(np.float32, copy=False)


def alignment_edge_map(image_rgb: np.ndarray, decay: float = 0.98, steps: int = 20,
                       alpha: float = 1.0 / 3.0) -> np.ndarray:
    """Levinson & Thrun's smoothed edge image, normalised to max 1: ``alpha * E + (1 - alpha)
    * max_xy E * decay^chebyshev_distance`` (within ``steps`` pixels), E = gradient magnitude
    (strongest 10 % of pixels). Compute it once per image when scoring many extrinsics."""
    edges = _edge_image(image_rgb, decay, steps, alpha)
    return edges / (float(edges.max()) or 1.0)


def _edge_image(image_rgb: np.ndarray, decay: float, steps: int, alpha: float) -> np.ndarray:
    from scipy import ndimage

    gray = _gray(image_rgb)
    gx = ndimage.sobel(gray, axis=1)
    gy = ndimage.sobel(gray, axis=0)
    edges = np.hypot(gx, gy)
    # Keep the strong edges only (robust to texture): above the 90th percentile.
    thr = np.percentile(edges, 90)
    edges = np.where(edges > thr, edges, 0.0).astype(np.float32)
    spread = edges.copy()
    d = np.float32(decay)
    for _ in range(steps):
        np.maximum(spread, d * ndimage.maximum_filter(spread, size=3), out=spread)
    return alpha * edges + (1 - alpha) * spread


def _image_space_discontinuity(projection: Projection, half_width: int = 2,
                               half_height: int = 1) -> np.ndarray:
    """Per projected point: how much farther the farthest of its image neighbours (nearest
    depth per pixel, within ±``half_width`` columns and ±``half_height`` rows) is; a
    foreground edge point has a much farther neighbour."""
    w, h = projection.width, projection.height
    pad = max(half_width, half_height)
    grid, flat = _min_depth_grid(projection, w, h, pad=pad)
    stride = grid.shape[1]
    g = np.where(np.isinf(grid), -np.inf, grid).ravel()
    best = np.full(len(projection), -np.inf, dtype=np.float32)
    for dy in range(-half_height, half_height + 1):
        for dx in range(-half_width, half_width + 1):
            if dx or dy:
                np.maximum(best, g[flat + dy * stride + dx], out=best)
    return np.maximum(best - projection.depth, 0.0)


def edge_alignment_score(
    image_rgb: np.ndarray,
    projection: Projection,
    depth: np.ndarray | None = None,
    *,
    min_jump_m: float = 0.5,
    gamma: float = 0.5,
    decay: float = 0.98,
    steps: int = 20,
    alpha: float = 1.0 / 3.0,
    edge_map: np.ndarray | None = None,
) -> float:
    """Image-edge ↔ LiDAR-discontinuity alignment (Levinson & Thrun 2013 calibration check).

    Each projected point gets a discontinuity weight ``X_i = jump_i ** gamma`` (jumps below
    ``min_jump_m`` ignored); the score is ``sum X_i * E(u_i, v_i) / sum X_i`` with ``E`` the
    image gradient magnitude spread with an inverse distance transform (``decay`` per pixel,
    ``steps`` pixels, mixing ``alpha``). Higher is better aligned; compare scores of the same
    image/scan under different extrinsics (the value itself has no absolute meaning).

    ``depth``: optional (N,) range of *every* point of the scan in scan order (e.g.
    ``np.linalg.norm(xyz, axis=1)`` of a KITTI/Velodyne scan): jumps are then taken along the
    scan line (``max(r[i-1] - r[i], r[i+1] - r[i])``) as in the paper. Without it, jumps are
    measured in the image between neighbours within ±2 columns and ±1 row (works for any
    point order). Scan-order jumps are mostly horizontal, so they constrain yaw best; the
    image-space jumps also see horizontal edges (object tops) and constrain pitch too.
    ``edge_map``: :func:`alignment_edge_map` of the image, to reuse across calls.
    """
    img = np.asarray(image_rgb)
    if img.shape[0] != projection.height or img.shape[1] != projection.width:
        raise CalibrationError(
            f'edge_alignment_score: image is {img.shape[1]}x{img.shape[0]} but the projection '
            f'is for {projection.width}x{projection.height}'
        )
    if len(projection) == 0:
        return 0.0
    if depth is not None:
        rng = np.asarray(depth, dtype=np.float32).ravel()
        if rng.size <= int(projection.point_index.max()):
            raise CalibrationError(
                f'edge_alignment_score: depth has {rng.size} values but the projection indexes '
                f'point {int(projection.point_index.max())}; pass the range of every scan point'
            )
        prev = np.concatenate([rng[:1], rng[:-1]])
        nxt = np.concatenate([rng[1:], rng[-1:]])
        jump_all = np.maximum(np.maximum(prev - rng, nxt - rng), 0.0)
        jump = jump_all[projection.point_index]
    else:
        jump = _image_space_discontinuity(projection)
    weight = np.where(jump >= min_jump_m, np.power(np.maximum(jump, 0.0), gamma), 0.0)
    total = float(weight.sum())
    if total <= 0:
        return 0.0
    if edge_map is None:
        edge_map = alignment_edge_map(img, decay, steps, alpha)
    elif edge_map.shape != img.shape[:2]:
        raise CalibrationError(
            f'edge_alignment_score: edge_map is {edge_map.shape}, image is {img.shape[:2]}'
        )
    rows, cols = projection.pixels()
    return float((weight * edge_map[rows, cols]).sum() / total)

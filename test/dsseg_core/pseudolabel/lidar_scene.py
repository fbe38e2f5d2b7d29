"""Ray-cast a rotating multi-beam LiDAR into a small box world (test helper).

Gives real scans with known truth: every returned point knows whether it hit the ground
plane (label 0) or which box (label 1..B). Fully vectorised.
"""

from __future__ import annotations

import numpy as np

Box = tuple[float, float, float, float, float, float]  # xmin, xmax, ymin, ymax, zmin, zmax


def beam_elevations(num_beams: int, top_deg: float = 2.0, bottom_deg: float = -24.9
                    ) -> np.ndarray:
    return np.linspace(top_deg, bottom_deg, num_beams)


def simulate_scan(
    boxes: list[Box] = (),
    num_beams: int = 32,
    num_azimuth: int = 1024,
    sensor_height: float = 1.73,
    ground_slope_deg: float = 0.0,
    max_range: float = 80.0,
    noise: float = 0.005,
    order: str = 'beam',
    elevations_deg: np.ndarray | None = None,
    ground: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(xyz (N,3) float32, ring (N,) int (0 = lowest beam), truth (N,) int)``.

    ``order='beam'``: beam by beam, azimuth increasing from 0 (KITTI .bin order);
    ``order='column'``: all beams of one azimuth together; ``order='shuffle'``: random.
    The ground is the plane ``z = -sensor_height + tan(slope) * x``.
    """
    rng = np.random.default_rng(seed)
    el = np.radians(beam_elevations(num_beams) if elevations_deg is None else elevations_deg)
    az = np.arange(num_azimuth) * (2 * np.pi / num_azimuth) + 1e-4
    ee, aa = np.meshgrid(el, az, indexing='ij')  # (B, A)
    d = np.stack([np.cos(ee) * np.cos(aa), np.cos(ee) * np.sin(aa), np.sin(ee)], -1)
    d = d.reshape(-1, 3)
    beam = np.repeat(np.arange(num_beams), num_azimuth)  # 0 = top beam here
    t_best = np.full(d.shape[0], np.inf)
    label = np.full(d.shape[0], -1)
    if ground:
        # plane: n . p = c with n = (-tan s, 0, 1), c = -h
        n = np.array([-np.tan(np.radians(ground_slope_deg)), 0.0, 1.0])
        denom = d @ n
        with np.errstate(divide='ignore', invalid='ignore'):
            t = -sensor_height / denom
        t = np.where((denom < -1e-9) & (t > 0), t, np.inf)
        better = t < t_best
        t_best[better] = t[better]
        label[better] = 0
    for k, (x0, x1, y0, y1, z0, z1) in enumerate(boxes, start=1):
        lo = np.array([x0, y0, z0])
        hi = np.array([x1, y1, z1])
        with np.errstate(divide='ignore', invalid='ignore'):
            ta = (lo - 0.0) / d
            tb = (hi - 0.0) / d
        tmin = np.nanmax(np.minimum(ta, tb), axis=1)
        tmax = np.nanmin(np.maximum(ta, tb), axis=1)
        hit = (tmax >= tmin) & (tmin > 0)
        better = hit & (tmin < t_best)
        t_best[better] = tmin[better]
        label[better] = k
    ok = np.isfinite(t_best) & (t_best <= max_range)
    xyz = d[ok] * (t_best[ok] + rng.normal(0, noise, ok.sum()))[:, None]
    ring = (num_beams - 1 - beam[ok]).astype(np.int64)
    truth = label[ok]
    if order == 'column':
        az_idx = np.tile(np.arange(num_azimuth), num_beams)[ok]
        perm = np.lexsort((beam[ok], az_idx))
    elif order == 'shuffle':
        perm = rng.permutation(xyz.shape[0])
    else:
        perm = np.arange(xyz.shape[0])
    return xyz[perm].astype(np.float32), ring[perm], truth[perm]


#: A street: a car ahead, a car to the left, a pedestrian-sized box right, a wall far right.
STREET: list[Box] = [
    (8.0, 12.5, -1.0, 1.0, -1.73, -0.2),
    (3.0, 7.5, 4.0, 6.0, -1.73, -0.3),
    (5.0, 5.6, -4.0, -3.4, -1.73, 0.1),
    (-10.0, 10.0, -12.0, -11.5, -1.73, 3.0),
]

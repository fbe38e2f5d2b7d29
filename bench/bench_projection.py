"""Projection, z-buffer and 2D→3D label transfer speed on one 120k-point scan.

Anchor (measured in the same run, same points): a plain ``K @ X.T`` float32 matmul of the
120k points (no extrinsics, no division, no filtering) — the floor of any projection.
Every result prints its time (best of ``--repeat`` runs of ``--number`` calls) and its ratio
to the anchor (> 1 = that many times slower than the bare matmul), for the numpy reference
path (``DSSEG_JIT=0``) and the numba kernels (when numba is installed and ``DSSEG_JIT`` != 0).

Points: the first 120,000 points of KITTI raw scans 0 + 1 (../shared/data) with the KITTI
raw camera 2 calibration; a synthetic 120k-point 64-ring scan when the data is absent.
Mask: one 1242x375 uint8 label image (19 classes) + float32 confidence.

Usage: ``OMP_NUM_THREADS=1 python bench/bench_projection.py [--repeat 7] [--number 20]``.
``--real-data`` instead prints the real-data checks of docs/results/projection.md (points per
camera on KITTI raw / KITTI object / nuScenes, and the edge-alignment calibration check under
rotation perturbations); it needs ../shared/data.
"""
# Matrix names follow the maths (K, R, T, W, H): ruff pep8-naming is relaxed for them.
# ruff: noqa: N803, N806


from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from dsseg_core.calibration import CameraCalibration, CameraModel, load_kitti_raw  # noqa: E402
from dsseg_core.jit import jit_enabled  # noqa: E402
from dsseg_core.points3d.transfer import CameraView, transfer_labels  # noqa: E402
from dsseg_core.projection import project_points, zbuffer_visible  # noqa: E402

KITTI = REPO.parent / 'shared' / 'data' / 'kitti_raw_2011_09_26'
N_POINTS = 120_000


def load_scene() -> tuple[np.ndarray, CameraCalibration, str]:
    if KITTI.exists():
        scans = [np.fromfile(KITTI / f'velodyne_points/data/{i:010d}.bin', np.float32)
                 .reshape(-1, 4) for i in (0, 1)]
        pts = np.concatenate(scans)[:N_POINTS]
        return pts, load_kitti_raw(KITTI, cam=2), 'KITTI raw scans 0+1 (first 120k points)'
    rng = np.random.default_rng(0)
    az = rng.uniform(-np.pi, np.pi, N_POINTS)
    el = np.deg2rad(rng.integers(0, 64, N_POINTS) * 0.4 - 24.8)
    r = rng.uniform(3, 60, N_POINTS)
    pts = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az),
                    r * np.sin(el) + 1.7, np.zeros(N_POINTS)], 1).astype(np.float32)
    K = np.array([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1]])
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    return pts, CameraCalibration(CameraModel(1242, 375, K), T), 'synthetic 64-ring scan'


def best_ms(fn, repeat: int, number: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return min(times) * 1e3


def _rot(T: np.ndarray, axis: int, deg: float) -> np.ndarray:
    """``T`` followed by a rotation of ``deg`` about LiDAR axis 0 (roll), 1 (pitch), 2 (yaw)."""
    a = np.deg2rad(deg)
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(4)
    R[i, i], R[i, j], R[j, i], R[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return T @ R


def real_data_report() -> int:
    import glob

    from PIL import Image

    from dsseg_core.calibration import load_kitti_object, load_nuscenes_sample
    from dsseg_core.projection import alignment_edge_map, edge_alignment_score

    data = REPO.parent / 'shared' / 'data'
    if not KITTI.exists():
        print(f'{KITTI} missing: real-data report needs ../shared/data')
        return 1
    cal = load_kitti_raw(KITTI, cam=2)
    W, H = cal.camera.size
    counts, vis_frac = [], []
    for i in range(50):
        pts = np.fromfile(KITTI / f'velodyne_points/data/{i:010d}.bin', np.float32).reshape(-1, 4)
        proj = project_points(pts, cal, min_depth=0.0)
        counts.append(len(proj))
        vis_frac.append(zbuffer_visible(proj, W, H).mean())
    print(f'KITTI raw image_02, 50 scans: points in image (depth > 0) min {min(counts)} / '
          f'median {int(np.median(counts))} / max {max(counts)}; visible after z-buffer '
          f'{100 * min(vis_frac):.1f}–{100 * max(vis_frac):.1f} %')

    obj = data / 'kitti_object_000008'
    ocal = load_kitti_object(obj / 'calib_000008.txt')
    opts = np.fromfile(obj / 'velodyne_reduced_000008.bin', np.float32).reshape(-1, 4)
    oproj = project_points(opts, ocal)
    print(f'KITTI object 000008 ({ocal.camera.width}x{ocal.camera.height}): {len(oproj)} of '
          f'{len(opts)} points in image, {int(zbuffer_visible(oproj, *ocal.camera.size).sum())}'
          ' visible')

    nu = data / 'nuscenes_sample'
    rig = load_nuscenes_sample(nu / 'calibration.json')
    npts = np.fromfile(glob.glob(str(nu / '*LIDAR_TOP*.pcd.bin'))[0], np.float32).reshape(-1, 5)
    print(f'nuScenes sample, {len(npts)} points:')
    seen = []
    for name, c in rig.cameras.items():
        p = project_points(npts, c)
        seen.append(p.point_index)
        v3 = int(zbuffer_visible(p, *c.camera.size).sum())
        v12 = int(zbuffer_visible(p, *c.camera.size, radius_px=12).sum())
        print(f'  {name:16s} offset {1e3 * c.time_offset_s:+6.1f} ms  in image {len(p):5d}  '
              f'visible (r=3) {v3:5d}  (r=12) {v12:5d}')
    print(f'  points seen by >= 1 camera: {np.unique(np.concatenate(seen)).size}')

    print('edge_alignment_score on KITTI raw, extrinsic rotated about the LiDAR axes '
          '(score / score at 0):')
    degs = [-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0]
    frames = list(range(0, 50, 7))
    for mode in ('scan-order', 'image-space'):
        for axis, axis_name in ((2, 'yaw'), (1, 'pitch'), (0, 'roll')):
            rel = np.zeros(len(degs))
            argmax = []
            for i in frames:
                pts = np.fromfile(KITTI / f'velodyne_points/data/{i:010d}.bin',
                                  np.float32).reshape(-1, 4)
                img = np.asarray(Image.open(KITTI / f'image_02/data/{i:010d}.png')
                                 .convert('RGB'))
                rng = np.linalg.norm(pts[:, :3], axis=1) if mode == 'scan-order' else None
                edges = alignment_edge_map(img)
                sc = np.array([edge_alignment_score(
                    img, project_points(pts, CameraCalibration(
                        cal.camera, _rot(cal.T_cam_lidar, axis, d))), rng, edge_map=edges)
                    for d in degs])
                rel += sc / sc[degs.index(0.0)]
                argmax.append(degs[int(np.argmax(sc))])
                if i == 0 and axis == 2:
                    print(f'  frame 0, {mode} discontinuities, yaw: ' + '  '.join(
                        f'{d:+g}°: {s:.4f}' for d, s in zip(degs, sc, strict=True)))
            rel /= len(frames)
            print(f'  {mode:11s} {axis_name:5s} mean over frames {frames}: ' + ' '.join(
                f'{d:+g}°:{r:.3f}' for d, r in zip(degs, rel, strict=True))
                + f'  | best angle per frame: {argmax}')
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeat', type=int, default=7)
    ap.add_argument('--number', type=int, default=20)
    ap.add_argument('--real-data', action='store_true',
                    help='print the real-data checks (docs/results/projection.md) instead')
    args = ap.parse_args(argv)
    if args.real_data:
        return real_data_report()

    pts, calib, source = load_scene()
    cam = calib.camera
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 19, (cam.height, cam.width)).astype(np.uint8)
    conf = rng.uniform(0.2, 1.0, (cam.height, cam.width)).astype(np.float32)
    view = CameraView(calib, mask, conf)
    xyz = np.ascontiguousarray(pts[:, :3])
    K32 = cam.K.astype(np.float32)
    proj = project_points(pts, calib)
    vis = zbuffer_visible(proj, cam.width, cam.height)

    cases = {
        'anchor: K @ X.T (float32 matmul, same points)': lambda: K32 @ xyz.T,
        'project_points': lambda: project_points(pts, calib),
        'zbuffer_visible (projected points)':
            lambda: zbuffer_visible(proj, cam.width, cam.height),
        'project_points + zbuffer_visible':
            lambda: zbuffer_visible(project_points(pts, calib), cam.width, cam.height),
        'transfer_labels, 1 view (1242x375 mask + confidence)':
            lambda: transfer_labels(pts, [view]),
        'transfer_labels, 2 overlapping views (vote)': lambda: transfer_labels(pts, [view, view]),
    }
    # The numpy reference path (DSSEG_JIT=0) first, then the numba kernels: interleaving the two
    # changes the numpy path's allocation pattern (page faults) on this VM. Within a path the
    # cases (anchor included) are interleaved in every repeat so that load changes on a shared
    # machine hit them alike; each case keeps its best repeat.
    modes = ['numpy', 'jit'] if jit_enabled() else ['numpy']
    best = {(name, mode): float('inf') for name in cases for mode in modes}
    for mode in modes:
        os.environ['DSSEG_JIT'] = '1' if mode == 'jit' else '0'
        for _ in range(args.repeat):
            for name, fn in cases.items():
                best[name, mode] = min(best[name, mode], best_ms(fn, 1, args.number))
    names = list(cases)
    anchor = min(best[names[0], mode] for mode in modes)
    print(f'points: {len(pts)} ({source}); in image: {len(proj)}, visible: {int(vis.sum())}')
    print(f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")}, numpy {np.__version__}, '
          f'best of {args.repeat} x {args.number} calls; numpy = DSSEG_JIT=0 reference path, '
          'jit = numba kernels')
    print(f'{"case":58s} ' + ' '.join(f'{m + " ms":>9s} {"x anchor":>8s}' for m in modes))
    print(f'{"anchor: K @ X.T (float32 matmul, same points)":58s} {anchor:9.3f} {1.0:8.2f}')
    for name in names[1:]:
        print(f'{name:58s} ' + ' '.join(f'{best[name, m]:9.3f} {best[name, m] / anchor:8.2f}'
                                        for m in modes))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Benchmark: LiDAR ground + proposals per scan vs open3d RANSAC + DBSCAN on the same scan.

    OMP_NUM_THREADS=1 python bench/bench_proposals.py [--repeats 5] [--scan FILE.bin]

Uses the SemanticKITTI scan (124k points) from ../shared/data when present, else the first
KITTI raw scan, else a simulated 64-beam scan. The anchor is open3d ``segment_plane``
(distance 0.2 m, 200 iterations) + ``cluster_dbscan`` (eps 0.5 m, min_points 10) on the
non-ground points within 50 m, measured in the same run; every result is printed as a ratio
against it ("x" = times faster than the anchor). Times are the median of ``--repeats`` runs
after one warm-up run, wall clock and CPU (process) time. The dsseg rows run the numba kernels
(``dsseg_core.jit``) unless marked "numpy path" (``DSSEG_JIT=0``, the reference code the
kernels replaced, with identical results).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get('DSSEG_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def _load_scan(path: str | None) -> tuple[np.ndarray, str]:
    from dsseg_core.semantickitti import load_scan

    candidates = [Path(path)] if path else [
        SHARED / 'semantickitti_seq00' / 'velodyne' / '000000.bin',
        SHARED / 'kitti_raw_2011_09_26' / 'velodyne_points' / 'data' / '0000000000.bin',
    ]
    for c in candidates:
        if c.exists():
            return load_scan(c)[0], str(c)
    sys.path.insert(0, str(REPO / 'test' / 'dsseg_core' / 'pseudolabel'))
    from lidar_scene import STREET, simulate_scan

    xyz, _, _ = simulate_scan(STREET, num_beams=64, num_azimuth=2048)
    return xyz, 'simulated 64-beam scan (no real data found)'


def _time(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU (process) time in ms; CPU time is less sensitive to other jobs on
    a shared machine, wall time is what a user waits."""
    out = fn()  # warm-up: lazy imports, allocations
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--scan', help='a KITTI-format .bin scan')
    args = parser.parse_args()

    import open3d as o3d

    from dsseg_core.pseudolabel.ground import GroundConfig
    from dsseg_core.pseudolabel.proposals import (
        ProposalConfig,
        ProposalsConfig,
        compute_proposals,
    )

    xyz, source = _load_scan(args.scan)
    print(f'scan: {source} ({xyz.shape[0]} points), OMP_NUM_THREADS='
          f'{os.environ.get("OMP_NUM_THREADS", "unset")}, repeats {args.repeats}')

    def open3d_baseline():
        o3d.utility.random.seed(0)
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
        _, inliers = pcd.segment_plane(0.2, 3, 200)
        keep = np.ones(xyz.shape[0], bool)
        keep[np.asarray(inliers)] = False
        keep &= np.linalg.norm(xyz, axis=1) <= 50.0
        rest = pcd.select_by_index(np.flatnonzero(keep))
        return np.asarray(rest.cluster_dbscan(0.5, 10, print_progress=False))

    anchor_ms, anchor_cpu, labels = _time(open3d_baseline, args.repeats)
    print(f'{"method":48s} {"wall ms":>8s} {"ratio":>7s} {"cpu ms":>8s} {"ratio":>7s}')
    print(f'{"open3d RANSAC + DBSCAN (anchor)":48s} {anchor_ms:8.1f} {1.0:6.2f}x '
          f'{anchor_cpu:8.1f} {1.0:6.2f}x   {labels.max() + 1} clusters')

    # name: (config, kernels on)
    variants = {
        'dsseg range_angle + range_image (default)': (ProposalsConfig(), True),
        'dsseg default, numpy path (DSSEG_JIT=0)': (ProposalsConfig(), False),
        'dsseg default, rows by elevation binning': (ProposalsConfig(
            range_image={'row_method': 'elevation'}), True),
        'dsseg ransac(numpy) + range_image': (ProposalsConfig(
            ground=GroundConfig(method='ransac', ransac_backend='numpy')), True),
        'dsseg ransac(open3d) + dbscan(open3d)': (ProposalsConfig(
            ground=GroundConfig(method='ransac', ransac_backend='open3d'),
            proposals=ProposalConfig(method='dbscan', dbscan_backend='open3d')), True),
    }
    jit_env = os.environ.get('DSSEG_JIT')
    for name, (cfg, kernels) in variants.items():
        parts: dict[str, list[float]] = {}
        os.environ['DSSEG_JIT'] = '1' if kernels else '0'

        def run(cfg=cfg, parts=parts):
            res = compute_proposals(xyz, None, cfg)
            for k, v in res.timings_ms.items():
                parts.setdefault(k, []).append(v)
            return res

        ms, cpu, res = _time(run, args.repeats)
        if jit_env is None:
            os.environ.pop('DSSEG_JIT', None)
        else:
            os.environ['DSSEG_JIT'] = jit_env
        detail = ', '.join(f'{k} {statistics.median(v[1:]):.1f}' for k, v in parts.items()
                           if k != 'total')
        print(f'{name:48s} {ms:8.1f} {anchor_ms / ms:6.2f}x {cpu:8.1f} {anchor_cpu / cpu:6.2f}x'
              f'   {res.num_segments} segments (wall ms: {detail})')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Benchmark: PointCloud2 / Image message → numpy against a plain copy of the same bytes.

    OMP_NUM_THREADS=1 python bench/bench_pointcloud.py [--points 120000] [--repeat 30]

Anchor (measured in the same run): ``np.frombuffer(data, np.uint8).copy()`` of the message's
bytes, i.e. the cheapest possible "get the data out" step. Each result is printed as a ratio
to that anchor (goal for ``cloud_to_points``: within 2x). The cloud is a Velodyne-like
x, y, z, intensity (float32), ring (uint16) layout padded to a 32-byte point_step, with the
``data`` field as rosbags (ndarray) and rclpy (array.array) deliver it. No ROS is started.
Cloud rows are timed with the numba kernels (``[jit]``, when numba is installed) and with the
numpy reference path (``[numpy]``, ``DSSEG_JIT=0``).
"""

from __future__ import annotations

import argparse
import array
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault('OMP_NUM_THREADS', '1')
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from dsseg_core.jit import jit_enabled  # noqa: E402
from dsseg_core.msgs.image import image_to_numpy, numpy_to_image_fields, to_rgb  # noqa: E402
from dsseg_core.msgs.pointcloud import (  # noqa: E402
    cloud_to_points,
    cloud_to_structured,
    points_to_cloud_fields,
)


def timed(fn, repeat: int) -> tuple[float, float]:
    """(median, min) seconds of ``repeat`` calls after one warm-up call.

    The minimum is the better estimate on a shared machine (other jobs, page faults of fresh
    allocations only add time); the median shows what a busy machine gives.
    """
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples)), float(np.min(samples))


def report(name: str, t: tuple[float, float], anchor: tuple[float, float]) -> None:
    print(f'{name:58s} {t[0] * 1e3:8.3f} {t[1] * 1e3:8.3f} {t[0] / anchor[0]:8.2f} '
          f'{t[1] / anchor[1]:8.2f}')


HEADER = f'{"operation":58s} {"med ms":>8s} {"min ms":>8s} {"x med":>8s} {"x min":>8s}'


def velodyne_cloud(n: int, nan_fraction: float = 0.0, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    point_step = 32
    dt = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring'],
                   'formats': ['<f4', '<f4', '<f4', '<f4', '<u2'],
                   'offsets': [0, 4, 8, 16, 20], 'itemsize': point_step})
    pts = np.zeros(n, dtype=dt)
    for c in 'xyz':
        pts[c] = rng.normal(scale=20.0, size=n)
    if nan_fraction:
        pts['x'][rng.random(n) < nan_fraction] = np.nan
    pts['intensity'] = rng.random(n)
    pts['ring'] = rng.integers(0, 64, n)
    fields = [SimpleNamespace(name=name, offset=dt.fields[name][1],
                              datatype={'f4': 7, 'u2': 4}[dt.fields[name][0].str[1:]], count=1)
              for name in dt.names]
    return SimpleNamespace(height=1, width=n, fields=fields, is_bigendian=False,
                           point_step=point_step, row_step=point_step * n,
                           data=np.frombuffer(pts.tobytes(), dtype=np.uint8), is_dense=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--points', type=int, default=120_000)
    parser.add_argument('--repeat', type=int, default=30)
    args = parser.parse_args()
    n, rep = args.points, args.repeat

    cloud = velodyne_cloud(n)
    nbytes = cloud.data.nbytes
    anchor = timed(lambda: np.frombuffer(cloud.data, np.uint8).copy(), rep)
    print(f'# {platform.processor() or platform.machine()}, numpy {np.__version__}, '
          f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")}')
    print(f'anchor: memcpy of the {nbytes / 1e6:.2f} MB cloud data ({n} points)')

    rclpy_like = SimpleNamespace(**{**vars(cloud), 'data': array.array('B', cloud.data)})
    nan_cloud = velodyne_cloud(n, nan_fraction=0.05)
    rows = [
        ('cloud_to_points (rosbags ndarray data)', lambda: cloud_to_points(cloud)),
        ('cloud_to_points (rclpy array.array data)', lambda: cloud_to_points(rclpy_like)),
        ('cloud_to_points, 5% NaN points dropped', lambda: cloud_to_points(nan_cloud)),
        ('cloud_to_structured (zero-copy view)', lambda: cloud_to_structured(cloud)),
    ]
    out = cloud_to_points(cloud)
    write_cols = {'xyz': out.xyz, 'intensity': out.intensity,
                  'label': np.zeros(n, np.uint8), 'confidence': out.intensity,
                  'rgb': np.zeros((n, 3), np.uint8)}
    rows.append(('points_to_cloud_fields (x,y,z,i,label,conf,rgb)',
                 lambda: points_to_cloud_fields(write_cols)))
    print(HEADER)
    report('anchor np.frombuffer(data).copy()', anchor, anchor)
    modes = ['jit', 'numpy'] if jit_enabled() else ['numpy']
    for name, fn in rows:
        for mode in modes:  # numba kernels, then the numpy reference path (DSSEG_JIT=0)
            os.environ['DSSEG_JIT'] = '1' if mode == 'jit' else '0'
            report(f'{name} [{mode}]', timed(fn, rep), anchor)
    os.environ['DSSEG_JIT'] = '1' if 'jit' in modes else '0'

    # Images: 1242x375 (KITTI) rgb8 / bgr8 / mono16.
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (375, 1242, 3)).astype(np.uint8)
    msgs = {enc: SimpleNamespace(**numpy_to_image_fields(a, enc)) for enc, a in
            [('rgb8', img), ('bgr8', img),
             ('mono16', rng.integers(0, 65536, (375, 1242)).astype(np.uint16))]}
    for m in msgs.values():
        m.data = np.frombuffer(m.data, np.uint8)
    img_anchor = timed(lambda: np.frombuffer(msgs['rgb8'].data, np.uint8).copy(), rep)
    print(f'\nanchor: memcpy of a 1242x375 rgb8 image ({img.nbytes / 1e6:.2f} MB)')
    print(HEADER)
    report('anchor np.frombuffer(data).copy()', img_anchor, img_anchor)
    img_rows = [
        ('image_to_numpy rgb8 (view)', lambda: image_to_numpy(msgs['rgb8'])),
        ('image_to_numpy + to_rgb, rgb8', lambda: to_rgb(image_to_numpy(msgs['rgb8']), 'rgb8')),
        ('image_to_numpy + to_rgb, bgr8', lambda: to_rgb(image_to_numpy(msgs['bgr8']), 'bgr8')),
        ('image_to_numpy + to_rgb, mono16',
         lambda: to_rgb(image_to_numpy(msgs['mono16']), 'mono16')),
        ('numpy_to_image_fields rgb8 (bytes)', lambda: numpy_to_image_fields(img, 'rgb8')),
    ]
    for name, fn in img_rows:
        report(name, timed(fn, rep), img_anchor)
    return 0


if __name__ == '__main__':
    sys.exit(main())

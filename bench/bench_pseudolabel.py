"""Benchmark: pseudo-labelling throughput without a ViT (weight-free descriptors), one core.

Anchor: reading + decoding the same frames from the bag (``iter_frames``), measured in the
same run. Reports frames/s and the ratio to the anchor for:

* ``decode``: bag → numpy frames (anchor);
* ``segment``: ground + range image + proposals (per frame);
* ``masks``: projection + z-buffer + segment masks;
* ``descriptors``: geometric + colour descriptors;
* ``end_to_end``: ``run_pseudo_label`` on the bag into a temporary folder (decode + pass 1 +
  cache/PNG writes + k-means + labels/points/index), frames / wall time.

Usage: ``OMP_NUM_THREADS=1 python bench/bench_pseudolabel.py [BAG] [--frames N] [--repeat R]``
(default BAG: data/sample_kitti). Single-threaded: BLAS/OpenMP pinned to one thread.

Times are CPU seconds of this process (``time.process_time``), so "frames/s" is per core and
stays meaningful on a shared, loaded machine; the wall-clock end-to-end time is printed too.
"""

from __future__ import annotations

import os

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsseg_core.frames import FramesConfig  # noqa: E402
from dsseg_core.projection import project_points, zbuffer_visible  # noqa: E402
from dsseg_core.pseudolabel.descriptors.colour import colour_statistics  # noqa: E402
from dsseg_core.pseudolabel.descriptors.geometric import geometric_descriptors  # noqa: E402
from dsseg_core.pseudolabel.pipeline import (  # noqa: E402
    PseudoLabelConfig,
    iter_bag_frames,
    run_pseudo_label,
    segment_scan,
)
from dsseg_core.pseudolabel.segment_masks import segment_mask_image  # noqa: E402


def _frames(bag: Path, n: int) -> list:
    return list(iter_bag_frames(bag, FramesConfig(max_frames=n)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('bag', nargs='?', default=str(REPO / 'data' / 'sample_kitti'))
    ap.add_argument('--frames', type=int, default=10)
    ap.add_argument('--repeat', type=int, default=2)
    args = ap.parse_args()
    bag = Path(args.bag)
    cfg = PseudoLabelConfig()
    cfg.clustering.n_init = 3

    best: dict[str, float] = {}

    def record(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float('inf')), seconds)

    for _ in range(args.repeat):
        t = time.process_time()
        frames = _frames(bag, args.frames)
        record('decode', time.process_time() - t)
        n = len(frames)
        t_seg = t_mask = t_desc = 0.0
        for fr in frames:
            xyz = fr.xyz
            t0 = time.process_time()
            ground, segment = segment_scan(xyz, fr.ring, cfg)
            t1 = time.process_time()
            maps = []
            for cam in fr.cameras:
                h, w = cam.image.shape[:2]
                proj = project_points(xyz, cam.calib, min_depth=cfg.min_depth)
                vis = zbuffer_visible(proj, w, h, cfg.visibility_radius_px,
                                      cfg.visibility_depth_tolerance)
                proj = proj.subset(vis)
                maps.append(segment_mask_image(proj.uv, proj.depth, segment[proj.point_index],
                                               w, h, cam.calib.camera.fx, cfg.masks))
            t2 = time.process_time()
            ns = int(segment.max()) + 1
            # as in the pipeline: only segments seen by a camera are described
            seen = np.zeros(ns + 1, bool)
            for m in maps:
                seen[m[m >= 0]] = True
            seen[0] = True
            seg_seen = np.where(seen[segment], segment, -1)
            geometric_descriptors(xyz, seg_seen, ns, ground, fr.intensity)
            for cam, m in zip(fr.cameras, maps, strict=True):
                colour_statistics(cam.image, m, ns, cfg.descriptors.colour_stride).features()
            t3 = time.process_time()
            t_seg += t1 - t0
            t_mask += t2 - t1
            t_desc += t3 - t2
        record('segment', t_seg)
        record('masks', t_mask)
        record('descriptors', t_desc)
        tmp = Path(tempfile.mkdtemp(prefix='bench_pl_'))
        try:
            t = time.process_time()
            w = time.perf_counter()
            frames_iter = iter_bag_frames(bag, FramesConfig(max_frames=args.frames))
            summary = run_pseudo_label(frames_iter, tmp / 'ds', cfg)
            record('end_to_end', time.process_time() - t)
            record('end_to_end_wall', time.perf_counter() - w)
            assert summary.frames == n
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f'bag: {bag}  frames: {n}  repeat: {args.repeat} (best of)  '
          f'OMP_NUM_THREADS={os.environ["OMP_NUM_THREADS"]}')
    anchor = n / best['decode']
    print(f'{"stage":<14s}{"frames/s":>10s}{"ms/frame":>10s}{"vs decode":>11s}   (CPU time)')
    for name in ('decode', 'segment', 'masks', 'descriptors', 'end_to_end'):
        fps = n / best[name]
        print(f'{name:<14s}{fps:10.2f}{1000.0 / fps:10.1f}{fps / anchor:10.3f}x')
    pipeline = best['segment'] + best['masks'] + best['descriptors']
    print(f'{"pass1 compute":<14s}{n / pipeline:10.2f}{1000.0 * pipeline / n:10.1f}'
          f'{n / pipeline / anchor:10.3f}x   (segment + masks + descriptors)')
    print(f'end_to_end wall clock: {n / best["end_to_end_wall"]:.2f} frames/s '
          f'({1000 * best["end_to_end_wall"] / n:.0f} ms/frame, includes waiting for the CPU)')
    return 0


if __name__ == '__main__':
    sys.exit(main())

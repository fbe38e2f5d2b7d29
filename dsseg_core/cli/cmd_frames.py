"""``dsseg frames BAG``: list topics, pair camera images with LiDAR scans, check calibration.

Prints the topics (types, counts), the pairs and drops per camera, the calibration source and
how many LiDAR points land in each image (min/mean/max over frames). With ``--out DIR`` it
writes one overlay PNG per frame and camera (LiDAR points coloured by depth on the image:
the picture to look at to trust the calibration) plus the resolved config; every file is
written atomically, so an error never leaves a half-written PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'frames', help='pair images with LiDAR scans in a bag and draw projection overlays',
        description='Reads a bag (rosbag2 mcap/sqlite3 or ROS 1), pairs each camera image with '
                    'the nearest LiDAR scan, prints a summary and, with --out, writes overlay '
                    'PNGs of the LiDAR points (coloured by depth) projected on the images.')
    parser.add_argument('bag', metavar='BAG', help='rosbag2 folder, .mcap/.db3 file or .bag')
    parser.add_argument('--out', metavar='DIR', help='write overlay PNGs and config.yaml here')
    parser.add_argument('--config', metavar='FILE',
                        help="YAML with a 'frames' section (or a ROS 2 parameter file)")
    parser.add_argument('--max-frames', type=int, metavar='N', help='stop after N frames')
    parser.add_argument('--stride', type=int, metavar='N', help='use every N-th frame')
    parser.add_argument('--slop', type=float, metavar='S',
                        help='pairing tolerance in seconds (default 0.05)')
    parser.add_argument('--calibration', metavar='FILE',
                        help='calibration YAML (overrides CameraInfo + /tf_static)')
    parser.add_argument('--max-depth', type=float, default=60.0, metavar='M',
                        help='depth (m) at the far end of the overlay colour map (default 60)')
    parser.set_defaults(func=run)


def _write_png(path: Path, rgb) -> None:  # noqa: ANN001
    from PIL import Image

    from dsseg_core.atomic import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format='PNG', compress_level=1)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from dsseg_core.config import load_config, save_config
    from dsseg_core.frames import SECTION, FramesConfig, FrameStats, iter_frames
    from dsseg_core.projection import draw_depth_overlay, project_points

    cfg = load_config(FramesConfig, args.config, section=SECTION, overrides={
        'max_frames': args.max_frames, 'stride': args.stride, 'slop_s': args.slop,
        'calibration_file': args.calibration})
    out = Path(args.out) if args.out else None
    stats = FrameStats()
    in_image: dict[str, list[int]] = {}
    written = 0
    bar = tqdm(desc='frames', unit='frame', file=sys.stderr, disable=None)
    try:
        for frame in iter_frames(args.bag, cfg, stats):
            if bar.total is None:
                bar.total = stats.planned_frames
                bar.refresh()
            for name, cam in frame.cameras.items():
                proj = project_points(frame.cloud.xyz, cam.calib)
                in_image.setdefault(name, []).append(len(proj))
                if out is not None:
                    overlay = draw_depth_overlay(cam.image, proj, max_depth=args.max_depth)
                    _write_png(out / f'{frame.index:06d}_{name}.png', overlay)
                    written += 1
            bar.update(1)
    finally:
        bar.close()
    if out is not None:
        save_config(cfg, out / 'config.yaml', section=SECTION)
    for line in stats.summary_lines():
        print(line)
    for name, counts in in_image.items():
        arr = np.asarray(counts)
        print(f'points in image {name}: min {arr.min()}, mean {arr.mean():.0f}, '
              f'max {arr.max()} over {arr.size} frames')
    if out is not None:
        print(f'wrote {written} overlay PNGs and config.yaml to {out}')
    return 0

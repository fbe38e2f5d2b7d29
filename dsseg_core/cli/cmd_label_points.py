"""``dsseg label-points BAG... --model RUN|ONNX --out DIR``: label LiDAR points from images."""

from __future__ import annotations

import argparse

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'label-points', help='transfer image-model labels to LiDAR points (+ smoothing)',
        description='Runs the image model on every camera image of each frame, transfers the '
                    'labels to the LiDAR points (projection, occlusion test, confidence-'
                    'weighted vote over cameras), smooths them along the local geometry and '
                    'writes one points/<id>.npz per scan (the dataset of dsseg train-3d). '
                    'Resumable with --resume.')
    parser.add_argument('bags', nargs='+', metavar='BAG', help='rosbag2 folder/.mcap/.db3/.bag')
    parser.add_argument('--model', required=True, metavar='RUN|ONNX',
                        help='image model: a dsseg train run directory or an exported .onnx')
    parser.add_argument('--out', required=True, metavar='DIR', help='output dataset folder')
    parser.add_argument('--config', metavar='FILE',
                        help="YAML with 'label_points' (and 'frames') sections")
    parser.add_argument('--smoothing', choices=['geometric', 'knn', 'none'],
                        help='smoothing method (default geometric)')
    parser.add_argument('--max-frames', type=int, metavar='N', help='frames per bag')
    parser.add_argument('--device', default='cpu', help='image model device (default cpu)')
    parser.add_argument('--resume', action='store_true',
                        help='continue an interrupted run (scans already written are kept)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dsseg_core.config import load_config
    from dsseg_core.frames import SECTION as FRAMES_SECTION
    from dsseg_core.frames import FramesConfig
    from dsseg_core.points3d.label_points import SECTION, LabelPointsConfig, label_points
    from dsseg_core.segmenter.inference import load_predictor

    cfg = load_config(LabelPointsConfig, args.config, section=SECTION,
                      overrides={'smoothing.method': args.smoothing})
    frames_cfg = load_config(FramesConfig, args.config, section=FRAMES_SECTION,
                             overrides={'max_frames': args.max_frames})
    predictor = load_predictor(args.model, device=args.device)
    with tqdm(desc='label-points', unit='scan', disable=None) as bar:
        summary = label_points(args.bags, predictor, args.out, cfg, frames_cfg,
                               resume=args.resume, progress=bar.update)
    frac = summary.labelled_points / max(summary.points, 1)
    seen = summary.transferred_points / max(summary.points, 1)
    print(f'scans: {summary.frames} ({summary.reused} reused), cameras: '
          f'{", ".join(summary.cameras) or "-"}')
    print(f'points: {summary.points}, seen by a camera {100 * seen:.1f}%, labelled after '
          f'smoothing {100 * frac:.1f}%')
    if summary.no_overlap:
        print(f'warning: {summary.no_overlap} scan(s) overlap no camera (written with unknown '
              'labels)')
    print(f'output: {summary.out}')
    return 0

"""``dsseg report``: one folder of pictures from a pipeline run (the demo's last step)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'report', help='write an HTML/PNG report of a pipeline run',
        description='Pictures of what the pipeline produced: camera images with the '
                    "segmenter's overlay and the labelled cloud projected into them, a top view "
                    'of the labelled cloud, the loss curve, the pseudo-class gallery, the '
                    'confusion matrix where ground truth exists, and stage timings.')
    p.add_argument('bag', type=Path, metavar='BAG', help='the input bag (camera + LiDAR)')
    p.add_argument('--out', type=Path, required=True, metavar='DIR', help='report folder')
    p.add_argument('--recorded', type=Path, metavar='BAG',
                   help='bag recorded from the nodes (dsseg run --record)')
    p.add_argument('--run', type=Path, metavar='RUN', help='training run (loss curve)')
    p.add_argument('--dataset', type=Path, metavar='DIR', help='pseudo-labelled dataset')
    p.add_argument('--eval', type=Path, dest='eval_dir', metavar='DIR',
                   help='folder with evaluation PNGs (confusion matrix)')
    p.add_argument('--timings', type=Path, metavar='JSON', help='{stage: seconds} JSON file')
    p.add_argument('--max-frames', type=int, default=4, metavar='N',
                   help='frames shown (default 4)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsseg_core.report import ReportInputs, build_report

    index = build_report(ReportInputs(bag=args.bag, recorded=args.recorded, run=args.run,
                                      dataset=args.dataset, eval_dir=args.eval_dir,
                                      timings=args.timings, max_frames=args.max_frames),
                         args.out)
    print(f'report: {index}')
    return 0

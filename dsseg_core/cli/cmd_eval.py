"""``dsseg eval RUN --gt DIR``: mIoU of a segmenter after matching its classes to the GT's."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'eval', help='evaluate a segmenter on labelled images (Hungarian matching)',
        description='Predicts every image that has ground truth, matches predicted '
                    '(pseudo-)classes to ground-truth classes over the whole set and reports '
                    'mIoU, per-class IoU and pixel accuracy. Ground truth: Cityscapes '
                    '(*_gtFine_labelIds.png, 19 or 27 classes; *_gtFine_labelTrainIds.png) or '
                    'a folder of label PNGs (255 = unlabelled) with a class list YAML. Writes '
                    'metrics.json, confusion.png and naming.yaml (pseudo id -> class name, '
                    "usable as the nodes' class names).")
    parser.add_argument('run_dir', metavar='RUN', help='run directory, .onnx or .pt file')
    parser.add_argument('--gt', required=True, metavar='DIR', help='ground-truth folder')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--images', metavar='DIR', help='image folder (pairs by file name)')
    src.add_argument('--dataset', metavar='DIR', help='pseudo-labelled dataset (its images)')
    parser.add_argument('--policy', choices=['hungarian', 'many-to-one'], default='hungarian',
                        help='one-to-one Hungarian (default) or many-to-one majority')
    parser.add_argument('--unmatched', choices=['wrong', 'ignore'], default='wrong',
                        help='pixels of unmatched predicted classes: count as misses (default, '
                             'strict) or drop them (lenient, as the released D&S code)')
    parser.add_argument('--gt-format', default='auto',
                        choices=['auto', 'cityscapes19', 'cityscapes27', 'trainids', 'generic'])
    parser.add_argument('--classes', metavar='FILE', help='class list YAML (generic GT)')
    parser.add_argument('--out', metavar='DIR', help='output folder (default RUN/eval)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda (default cpu)')
    parser.add_argument('--short-side', type=int, metavar='PX',
                        help='override the inference short-side resize')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsseg_core.segmenter.evaluate import EvalConfig, evaluate_predictor, write_outputs
    from dsseg_core.segmenter.inference import load_predictor

    cfg = EvalConfig(policy=args.policy.replace('-', '_'), unmatched=args.unmatched,
                     gt_format=args.gt_format, classes=args.classes)
    overrides = {'short_side': args.short_side} if args.short_side else {}
    predictor = load_predictor(args.run_dir, device=args.device, **overrides)
    result = evaluate_predictor(predictor, args.gt, images_dir=args.images,
                                dataset_dir=args.dataset, cfg=cfg, progress=True)
    run_path = Path(args.run_dir)
    out = Path(args.out) if args.out else (run_path if run_path.is_dir()
                                           else run_path.parent) / 'eval'
    paths = write_outputs(result, out)
    policy = {'wrong': 'unmatched predicted classes count as misses',
              'ignore': 'unmatched predicted classes are ignored (lenient)'}[cfg.unmatched]
    print(f'{result.num_images} images, {result.extra["gt_format"]} ground truth, '
          f'{cfg.policy} matching; {policy}')
    print(f'mIoU {100 * result.miou:.2f}  pixel accuracy {100 * result.pixel_acc:.2f}')
    for name, iou in zip(result.gt_names, result.iou, strict=True):
        shown = 'n/a' if math.isnan(iou) else f'{100 * iou:.2f}'
        print(f'  {name:<16} {shown}')
    print(f'outputs: {paths["metrics"]}, {paths["confusion"]}, {paths["naming"]}')
    return 0

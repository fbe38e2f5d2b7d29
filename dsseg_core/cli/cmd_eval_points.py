"""``dsseg eval-points SCAN.bin --labels SCAN.label``: point pseudo-class quality (SemanticKITTI).

Without ``--pred`` the scan is pseudo-labelled LiDAR-only (ground + proposals + geometric
descriptors + k-means); the pseudo-classes are matched to the 19 SemanticKITTI classes with
one-to-one Hungarian matching (default k = 19) and many-to-one matching (default k = 30). The
matching and counting policy is printed with the numbers.
"""

from __future__ import annotations

import argparse

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'eval-points', help='evaluate point pseudo-classes on a SemanticKITTI scan',
        description='Matches point pseudo-classes (from --pred, or computed from the scan) to '
                    'the 19 SemanticKITTI classes (Hungarian one-to-one and many-to-one) and '
                    'prints per-class IoU, mIoU and accuracy.')
    parser.add_argument('scan', metavar='SCAN.bin', help='KITTI/SemanticKITTI float32 Nx4 scan')
    parser.add_argument('--labels', required=True, metavar='SCAN.label',
                        help='SemanticKITTI .label file of the scan')
    parser.add_argument('--pred', metavar='FILE.npy',
                        help='(N,) int point pseudo-classes (-1 = none) to evaluate')
    parser.add_argument('--k', type=int, metavar='K',
                        help='clusters for the scan-only pseudo-labels (default: 19 for '
                             'Hungarian, 30 for many-to-one)')
    parser.add_argument('--seed', type=int, default=0, metavar='S', help='k-means seed')
    parser.add_argument('--config', metavar='FILE',
                        help="YAML with a 'pseudo_label' section (ground/proposals settings)")
    parser.add_argument('--policy', choices=('both', 'hungarian', 'many_to_one'),
                        default='both', help='matching policy (default both)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dsseg_core.config import load_config
    from dsseg_core.errors import DatasetError
    from dsseg_core.pseudolabel.pipeline import SECTION, PseudoLabelConfig
    from dsseg_core.pseudolabel.point_eval import evaluate_point_labels, pseudo_label_scan
    from dsseg_core.semantickitti import CLASS_NAMES, NUM_CLASSES, load_labels, load_scan

    xyz, remission = load_scan(args.scan)
    gt = load_labels(args.labels, num_points=len(xyz)).train_ids
    policies = ['hungarian', 'many_to_one'] if args.policy == 'both' else [args.policy]
    cfg = load_config(PseudoLabelConfig, args.config, section=SECTION)
    runs = []
    if args.pred:
        try:
            pred = np.load(args.pred, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DatasetError(f'{args.pred}: cannot read predictions: {err}') from err
        runs = [(p, 'file', pred) for p in policies]
    else:
        cache: dict[int, np.ndarray] = {}
        for p in policies:
            k = args.k or (19 if p == 'hungarian' else 30)
            if k not in cache:
                cache[k] = pseudo_label_scan(xyz, remission, None, k, args.seed, cfg)
            runs.append((p, f'scan-only pseudo-labels, k={k} (+ ground)', cache[k]))
    print(f'scan: {args.scan} ({len(xyz)} points, {int((gt >= 0).sum())} with a 19-class '
          'label)')
    for policy, source, pred in runs:
        res = evaluate_point_labels(pred, gt, NUM_CLASSES, policy)
        print(f'\n== {source}: {res.policy_text}')
        print(f'mIoU {100 * res.miou:.1f}  accuracy {100 * res.accuracy:.1f}  coverage '
              f'{100 * res.coverage:.1f}% of {res.points} points')
        for c, name in enumerate(CLASS_NAMES):
            if not np.isnan(res.iou[c]):
                src = np.flatnonzero(res.mapping == c).tolist()
                print(f'  {name:<14s} IoU {100 * res.iou[c]:5.1f}  <- pseudo-classes {src}')
    return 0

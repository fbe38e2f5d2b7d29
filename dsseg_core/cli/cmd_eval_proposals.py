"""``dsseg eval-proposals``: ground + LiDAR proposals of SemanticKITTI scans vs ground truth."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

__all__ = ['register', 'run']

SECTION = 'lidar_proposals'


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'eval-proposals',
        help='score ground segmentation and LiDAR object proposals on SemanticKITTI scans',
        description='Runs ground segmentation and class-agnostic proposals on KITTI-format '
                    '.bin scans and scores them against SemanticKITTI .label files: recall of '
                    'thing instances at IoU >= 0.5, over-/under-segmentation, ground '
                    'precision/recall, timings.')
    parser.add_argument('scans', nargs='+', metavar='SCAN.bin', help='velodyne .bin scan(s)')
    parser.add_argument('--labels', nargs='+', required=True, metavar='SCAN.label',
                        help='one .label file per scan, same order')
    parser.add_argument('--config', metavar='FILE',
                        help=f'YAML with a {SECTION!r} section (ground / range_image / '
                             'proposals) or those keys at top level; ROS parameter files work')
    parser.add_argument('--method', choices=['range_image', 'dbscan'],
                        help='override proposals.method')
    parser.add_argument('--ground-method', choices=['range_angle', 'ransac'],
                        help='override ground.method')
    parser.add_argument('--iou', type=float, default=0.5, help='IoU for recall (default 0.5)')
    parser.add_argument('--overlap-fraction', type=float, default=0.1,
                        help='share of points that counts as a part in over/under-'
                             'segmentation (default 0.1)')
    parser.add_argument('--json', metavar='OUT.json', help='also write the scores as JSON '
                        '(the resolved config is saved next to it)')
    parser.set_defaults(func=run)


def _load_cfg(args: argparse.Namespace):
    from dsseg_core.config import load_config, read_yaml, section_from_mapping
    from dsseg_core.pseudolabel.proposals import ProposalsConfig

    section = None
    if args.config:
        data = section_from_mapping(read_yaml(args.config), None, args.config)
        section = SECTION if SECTION in data else None
    overrides = {'proposals.method': args.method, 'ground.method': args.ground_method}
    return load_config(ProposalsConfig, args.config, section=section, overrides=overrides)


def _fmt(x: float) -> str:
    return 'n/a' if math.isnan(x) else f'{100 * x:.1f}%'


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dsseg_core.errors import ConfigError
    from dsseg_core.pseudolabel.proposal_eval import ProposalEval, evaluate_proposals
    from dsseg_core.pseudolabel.proposals import compute_proposals
    from dsseg_core.semantickitti import load_labels, load_scan

    if len(args.scans) != len(args.labels):
        raise ConfigError(f'eval-proposals: {len(args.scans)} scans but {len(args.labels)} '
                          'label files; pass one --labels file per scan, in the same order')
    cfg = _load_cfg(args)
    total = ProposalEval(iou_threshold=args.iou, overlap_fraction=args.overlap_fraction)
    timings: dict[str, list[float]] = {}
    for scan_path, label_path in zip(args.scans, args.labels, strict=True):
        xyz, _ = load_scan(scan_path)
        gt = load_labels(label_path, num_points=xyz.shape[0])
        compute_proposals(xyz, None, cfg)  # warm-up (lazy imports, caches) not timed
        t0 = time.perf_counter()
        result = compute_proposals(xyz, None, cfg)
        wall = (time.perf_counter() - t0) * 1e3
        for k, v in result.timings_ms.items():
            timings.setdefault(k, []).append(v)
        timings.setdefault('wall', []).append(wall)
        scores = evaluate_proposals(
            result.segments, result.ground, gt.semantic_raw, gt.instance, xyz=xyz,
            max_range=cfg.proposals.max_range, min_instance_points=cfg.proposals.min_points,
            iou_threshold=args.iou, overlap_fraction=args.overlap_fraction)
        total = total.merge(scores)
        src = result.range_image.row_source if result.range_image is not None else '-'
        print(f'{scan_path}: {xyz.shape[0]} points, rows from {src}, '
              f'{result.num_segments} proposals, {wall:.1f} ms')

    print(f'config: ground={cfg.ground.method} proposals={cfg.proposals.method} '
          f'(max_range {cfg.proposals.max_range} m, segment size '
          f'{cfg.proposals.min_points}..{cfg.proposals.max_points})')
    print(f'thing instances evaluated: {total.num_instances} '
          f'(skipped {total.num_instances_skipped}: < {cfg.proposals.min_points} points or '
          f'beyond {cfg.proposals.max_range} m)')
    for name, d in sorted(total.per_class.items()):
        print(f'  {name:14s} recall@IoU{args.iou:g}: {d["found"]}/{d["total"]}')
    print(f'car recall@IoU{args.iou:g}:        {_fmt(total.car_recall)}')
    print(f'thing recall@IoU{args.iou:g}:      {_fmt(total.thing_recall)}')
    print(f'over-segmentation rate:   {_fmt(total.over_segmentation_rate)} '
          f'({total.instances_over_segmented}/{total.num_instances} instances)')
    print(f'under-segmentation rate:  {_fmt(total.under_segmentation_rate)} '
          f'({total.proposals_under_segmented}/{total.num_proposals} proposals); things: '
          f'{_fmt(total.thing_under_segmentation_rate)} '
          f'({total.thing_proposals_under_segmented}/{total.thing_proposals})')
    print(f'ground precision:         {_fmt(total.ground_precision)}')
    print(f'ground recall:            {_fmt(total.ground_recall)}')
    if total.ground_fp_classes:
        top = sorted(total.ground_fp_classes.items(), key=lambda kv: -kv[1])[:5]
        print('ground false positives:   ' + ', '.join(f'{k} {v}' for k, v in top))
    print(f'non-ground points in proposals: {_fmt(total.proposal_coverage)}')
    mean = {k: float(np.mean(v)) for k, v in timings.items()}
    print('timings (ms, mean per scan): ' + ', '.join(f'{k} {v:.1f}' for k, v in mean.items()))

    if args.json:
        from dsseg_core.atomic import write_text_atomic
        from dsseg_core.config import save_config

        out = Path(args.json)
        payload = {'scores': total.to_dict(), 'timings_ms': mean,
                   'scans': [str(s) for s in args.scans]}
        write_text_atomic(out, json.dumps(payload, indent=2, default=float) + '\n')
        save_config(cfg, out.with_name(out.stem + '.config.yaml'), section=SECTION)
        print(f'wrote {out}')
    return 0

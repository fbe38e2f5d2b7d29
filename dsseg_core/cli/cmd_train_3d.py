"""``dsseg train-3d DATASET --out RUN``: train the 3D range-image student on point labels."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'train-3d', help='train the 3D student (range-image network) on labelled points',
        description='Range-image encoder-decoder trained with cross-entropy + Lovasz-softmax on '
                    'the point labels of DATASET (written by dsseg label-points; unknown = -1 '
                    'is ignored). Writes config.yaml, classes.yaml, model.safetensors, '
                    'metrics.csv and resumable checkpoints to RUN. Several GPUs: '
                    'torchrun --nproc_per_node N -m dsseg_core train-3d ...')
    parser.add_argument('dataset', metavar='DATASET', help='point dataset folder')
    parser.add_argument('--out', required=True, metavar='RUN', help='run directory')
    parser.add_argument('--config', metavar='FILE',
                        help='YAML with a train3d: section (or a ROS parameter file)')
    parser.add_argument('--max-steps', type=int, metavar='N', help='optimizer steps')
    parser.add_argument('--resume', action='store_true',
                        help="continue RUN from its last checkpoint (uses RUN's config.yaml)")
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], help='default auto')
    parser.add_argument('--batch-size', type=int, metavar='N', help='crops per step')
    parser.add_argument('--crop-width', type=int, metavar='W', help='range-image columns')
    parser.add_argument('--seed', type=int, metavar='N')
    parser.add_argument('--export-onnx', type=int, metavar='ROWS',
                        help='after training, export RUN/student_<ROWS>x<W>.onnx for a range '
                             'image of ROWS beams (load it with load_student / cloud_labeller)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsseg_core.config import load_config
    from dsseg_core.errors import ConfigError
    from dsseg_core.points3d.train3d import CONFIG_FILE, SECTION, Train3dConfig, train_student

    run_dir = Path(args.out)
    source = args.config
    if args.resume and (run_dir / CONFIG_FILE).is_file():
        if args.config:
            raise ConfigError(f'--resume uses {run_dir / CONFIG_FILE}; drop --config (edit '
                              'that file to change settings)')
        source = run_dir / CONFIG_FILE
    overrides = {'device': args.device, 'batch_size': args.batch_size,
                 'crop_width': args.crop_width, 'seed': args.seed,
                 'max_steps': args.max_steps}
    cfg = load_config(Train3dConfig, source, section=SECTION, overrides=overrides)
    result = train_student(args.dataset, run_dir, cfg, resume=args.resume)
    if result.metrics:
        last = result.metrics[-1]
        print(f'trained {result.steps} steps; last loss {float(last["loss"]):.4f}, pixel '
              f'accuracy {float(last["pixel_acc"]):.3f}; run: {result.run_dir}')
    else:
        print(f'nothing to do: {result.run_dir} is already at step {result.steps}')
    if args.export_onnx:
        from dsseg_core.points3d.student import export_student_onnx

        print(f'exported {export_student_onnx(run_dir, rows=args.export_onnx)}')
    return 0

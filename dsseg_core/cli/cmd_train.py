"""``dsseg train DATASET --out RUN``: train the image segmenter on a pseudo-labelled dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'train', help='train the image segmenter on a pseudo-labelled dataset',
        description='Segmenter (timm ViT + mask transformer) trained with cross-entropy on the '
                    'sparse pseudo-labels, then with an EMA teacher (section train of the '
                    'config: model, data, optim, ema, inference). Checkpoints, config.yaml, '
                    'classes.yaml, model.safetensors and metrics.csv go to RUN. Several GPUs: '
                    'torchrun --nproc_per_node N -m dsseg_core train ...')
    parser.add_argument('dataset', metavar='DATASET', help='pseudo-labelled dataset folder')
    parser.add_argument('--out', required=True, metavar='RUN', help='run directory')
    parser.add_argument('--config', metavar='FILE',
                        help='YAML with a train: section (or a ROS parameter file)')
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument('--max-steps', type=int, metavar='N', help='optimizer steps')
    steps.add_argument('--epochs', type=int, metavar='N', help='passes over the dataset')
    parser.add_argument('--resume', action='store_true',
                        help="continue RUN from its last checkpoint (uses RUN's config.yaml)")
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], help='default auto')
    parser.add_argument('--batch-size', type=int, metavar='N', help='images per process')
    parser.add_argument('--workers', type=int, metavar='N', help='data loader workers')
    parser.add_argument('--seed', type=int, metavar='N')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsseg_core.config import load_config
    from dsseg_core.errors import ConfigError
    from dsseg_core.segmenter.checkpoint import CONFIG_FILE
    from dsseg_core.segmenter.train import TrainConfig, train

    run_dir = Path(args.out)
    overrides = {'device': args.device, 'batch_size': args.batch_size,
                 'data.num_workers': args.workers, 'seed': args.seed}
    source = args.config
    if args.resume and (run_dir / CONFIG_FILE).is_file():
        if args.config:
            raise ConfigError(f'--resume uses {run_dir / CONFIG_FILE}; drop --config (edit '
                              'that file to change settings)')
        source = run_dir / CONFIG_FILE
    cfg = load_config(TrainConfig, source, section='train', overrides=overrides)
    if args.max_steps is not None:
        cfg.epochs = None
        cfg.max_steps = args.max_steps
    elif args.epochs is not None:
        cfg.max_steps = None
        cfg.epochs = args.epochs
    result = train(args.dataset, run_dir, cfg, resume=args.resume)
    if result.metrics:
        last = result.metrics[-1]
        print(f'trained {result.steps} steps; last loss {float(last["loss"]):.4f}; '
              f'run: {result.run_dir}')
    else:
        print(f'nothing to do: {result.run_dir} is already at step {result.steps}')
    return 0

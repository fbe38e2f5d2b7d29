"""``dsseg pseudo-label BAG... --out DIR``: Drive&Segment pseudo-labels from camera + LiDAR bags.

Pass 1 (per frame, cached, resumable, shardable): ground, LiDAR segments, segment masks in
every camera, descriptors. Pass 2 (once all shards are done): k-means pseudo-classes (ground =
class 0, clusters 1..k), label PNGs, point labels, index, classes.yaml. The dataset format is
documented in ``dsseg_core/pseudolabel/dataset.py``.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'pseudo-label', help='make a pseudo-labelled image dataset from camera + LiDAR bags',
        description='Segments each LiDAR scan (ground + object proposals), projects the '
                    'segments into the camera images, describes them (LiDAR geometry + image '
                    'colour/texture, or DINO features), clusters them with k-means into k '
                    'pseudo-classes (+ ground = class 0) and writes sparse label images.')
    parser.add_argument('bags', nargs='+', metavar='BAG', help='rosbag2 folder/.mcap/.db3/.bag')
    parser.add_argument('--out', required=True, metavar='DIR', help='dataset folder')
    parser.add_argument('--config', metavar='FILE',
                        help="YAML with 'pseudo_label' (and 'frames') sections, or a ROS 2 "
                             'parameter file')
    parser.add_argument('--k', type=int, metavar='K', help='number of pseudo-classes '
                        'besides ground (default 30)')
    parser.add_argument('--seed', type=int, metavar='S', help='k-means seed (default 0)')
    parser.add_argument('--shard', metavar='i/n',
                        help='pass 1 on every n-th frame starting at i; labels are written '
                             'when the last shard finishes (or with --gather)')
    parser.add_argument('--gather', action='store_true',
                        help='only pass 2: cluster the cached descriptors of all shards')
    parser.add_argument('--resume', action='store_true',
                        help='continue an interrupted run in DIR (cached frames are skipped)')
    parser.add_argument('--centroids', metavar='FILE',
                        help='reuse the pseudo-classes of another dataset (its centroids.npz)')
    parser.add_argument('--workers', type=int, default=1, metavar='N',
                        help='run pass 1 in N processes (shards 0/N..N-1/N), then gather')
    parser.add_argument('--max-frames', type=int, metavar='N', help='frames per bag')
    parser.add_argument('--dino-checkpoint', metavar='FILE',
                        help='use DINO ViT-S/16 descriptors from this local checkpoint')
    parser.set_defaults(func=run)


def _print_summary(summary, class_names: dict[int, str] | None = None) -> None:  # noqa: ANN001
    print(f'output: {summary.out}')
    if not summary.gathered:
        print(f'pass 1: {summary.frames} frame(s) processed, {summary.frames_skipped} already '
              f'cached (shard {summary.shard[0]}/{summary.shard[1]}); labels are written when '
              'all shards are done (or run again with --gather)')
        return
    print(f'frames: {summary.frames} ({summary.frames_skipped} reused from the cache)')
    print(f'samples: {summary.samples - summary.empty_samples} written, '
          f'{summary.empty_samples} without any labelled pixel left out')
    print(f'segments: {summary.segments} non-ground, {summary.clustered_segments} visible and '
          f'clustered into k={summary.k} pseudo-classes (+ ground = class 0)')
    print(f'labelled pixels: {100.0 * summary.labelled_fraction:.1f}%')
    hist = summary.class_histogram
    total = max(int(hist.sum()), 1)
    print('class histogram (labelled pixels):')
    for i, count in enumerate(hist):
        name = (class_names or {}).get(i, 'ground' if i == 0 else f'class_{i:02d}')
        print(f'  {i:3d} {name:<12s} {count:10d} {100.0 * count / total:5.1f}%')


def _worker(bags: list[str], out: str, cfg_data: dict, frames_data: dict, shard: tuple[int, int]
            ) -> int:
    """Pass 1 of one shard in a worker process (``--workers``)."""
    import os

    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from dsseg_core.frames import FramesConfig
    from dsseg_core.pseudolabel.pipeline import (
        PseudoLabelConfig,
        iter_bag_frames,
        run_pseudo_label,
        source_names,
    )

    cfg = PseudoLabelConfig.model_validate(cfg_data)
    frames_cfg = FramesConfig.model_validate(frames_data)

    def frames():
        for bag, name in zip(bags, source_names(bags), strict=True):
            yield from iter_bag_frames(bag, frames_cfg, cfg.cameras or None, name)

    return run_pseudo_label(frames(), out, cfg, bags=bags, shard=shard, resume=True,
                            gather=False).frames


def _warm_up_kernels(bag: str, cfg, frames_cfg) -> None:  # noqa: ANN001
    """Compile (or load) the pass-1 kernels here, once, before the workers start: numba's
    on-disk cache is not safe against several processes compiling the same kernels at once
    (numba issue 4807), which is what N fresh workers on a new machine would do."""
    from dsseg_core.jit import jit_enabled
    from dsseg_core.pseudolabel.dataset import encode_png
    from dsseg_core.pseudolabel.pipeline import iter_bag_frames, process_frame

    if not jit_enabled():
        return
    one = frames_cfg.model_copy(update={'max_frames': 1})
    for frame in iter_bag_frames(bag, one):  # pass 1 of one frame: segments, masks, images
        process_frame(frame, cfg)
        for cam in frame.cameras:
            encode_png(cam.image)  # label images are written by the parent (pass 2)


def _run_workers(args: argparse.Namespace, cfg, frames_cfg) -> None:  # noqa: ANN001
    import multiprocessing as mp

    n = args.workers
    _warm_up_kernels(str(args.bags[0]), cfg, frames_cfg)
    data = (cfg.model_dump(mode='json'), frames_cfg.model_dump(mode='json'))
    ctx = mp.get_context('spawn')
    with ctx.Pool(n) as pool:
        jobs = [pool.apply_async(_worker, ([str(b) for b in args.bags], args.out, *data, (i, n)))
                for i in range(n)]
        for i, job in enumerate(jobs):
            frames = job.get()
            print(f'worker {i}/{n}: {frames} frame(s) processed', file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dsseg_core.config import load_config
    from dsseg_core.errors import ConfigError, DatasetError
    from dsseg_core.frames import SECTION as FRAMES_SECTION
    from dsseg_core.frames import FramesConfig
    from dsseg_core.pseudolabel.dataset import PseudoLabelDataset
    from dsseg_core.pseudolabel.pipeline import (
        SECTION,
        PseudoLabelConfig,
        iter_bag_frames,
        parse_shard,
        run_pseudo_label,
        source_names,
    )

    overrides = {'clustering.k': args.k, 'clustering.seed': args.seed,
                 'max_frames': args.max_frames}
    if args.dino_checkpoint:
        overrides.update({'descriptors.dino.enabled': True,
                          'descriptors.dino.checkpoint_path': args.dino_checkpoint})
    cfg = load_config(PseudoLabelConfig, args.config, section=SECTION, overrides=overrides)
    # stop decoding the bag after the frames that will be used
    last = args.max_frames * cfg.every_n if args.max_frames else None
    frames_cfg = load_config(FramesConfig, args.config, section=FRAMES_SECTION,
                             overrides={'max_frames': last})
    shard = parse_shard(args.shard)
    for bag in args.bags:
        if not Path(bag).exists():
            raise DatasetError(f'{bag}: bag not found')

    names = source_names([str(b) for b in args.bags])

    def frames():
        for bag, name in zip(args.bags, names, strict=True):
            yield from iter_bag_frames(bag, frames_cfg, cfg.cameras or None, name)

    progress = partial(tqdm, file=sys.stderr, disable=None)
    gather = True if args.gather else None
    if args.workers > 1:
        if args.shard:
            raise ConfigError('--workers and --shard cannot be combined')
        from dsseg_core.pseudolabel.pipeline import cache_files

        out = Path(args.out)
        if (cache_files(out) or (out / 'dataset.yaml').exists()) and not args.resume:
            raise DatasetError(f'{out}: already holds a pseudo-labelling run; pass --resume '
                               'to continue it, or choose a new --out')
        if not args.gather:
            _run_workers(args, cfg, frames_cfg)
        shard, gather = (0, args.workers), True
    summary = run_pseudo_label(
        frames(), args.out, cfg, bags=[str(b) for b in args.bags], shard=shard,
        resume=args.resume, gather=gather,
        centroids_path=args.centroids, progress_factory=progress,
        extra_config={FRAMES_SECTION: frames_cfg.model_dump(mode='json')})
    names = None
    if summary.gathered:
        names = PseudoLabelDataset(args.out).class_names
    _print_summary(summary, names)
    return 0

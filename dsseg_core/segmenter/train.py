"""Training: sparse cross-entropy, then an EMA teacher; resumable, single device or DDP.

Phase 1 (``step < ema.start_step``): cross-entropy on labelled pixels only (IGNORE skipped).
Phase 2: in addition, the EMA teacher's soft predictions (temperature ``T``) supervise the
student on *all* pixels (KL divergence x T^2), ``loss = w_sparse * CE + w_soft * KL``. The
teacher is updated after every optimizer step from step 0 (``t = m t + (1 - m) s``).

AdamW with linear warm-up then cosine, poly or constant decay (the learning rate is a pure
function of the step), gradient clipping, AMP on CUDA. Reproducible resume: data order and
augmentation are pure functions of ``(seed, epoch, index)``, dropout/drop-path RNG is reseeded
from ``(seed, step, rank)`` every step and the checkpoint holds weights, teacher, optimizer and
loss-scaler state, so 3 + 3 resumed steps give the same weights as 6 uninterrupted steps.

Distributed: started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the
environment), DDP with gloo on CPU or NCCL on CUDA, per-rank slices of each global batch,
rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from dsseg_core.config import StageConfig, save_config
from dsseg_core.errors import CheckpointError, ConfigError
from dsseg_core.segmenter.data import IGNORE, DataConfig
from dsseg_core.segmenter.inference import InferenceConfig
from dsseg_core.segmenter.model import SegmenterConfig

__all__ = ['EmaConfig', 'OptimConfig', 'TrainConfig', 'TrainResult', 'lr_at', 'train']

log = logging.getLogger(__name__)

METRICS_FILE = 'metrics.csv'
METRIC_FIELDS = ['step', 'epoch', 'lr', 'loss', 'loss_sparse', 'loss_soft', 'grad_norm',
                 'labelled_frac', 'images_per_s', 'time_s']


class OptimConfig(StageConfig):
    """AdamW and learning-rate schedule."""

    lr: float = Field(default=1e-4, gt=0)
    backbone_lr_mult: float = Field(default=1.0, ge=0, description='backbone lr = lr x this')
    weight_decay: float = Field(default=0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(default=500, ge=0)
    schedule: Literal['cosine', 'poly', 'constant'] = 'cosine'
    poly_power: float = Field(default=0.9, gt=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    grad_clip: float | None = Field(default=1.0, gt=0, description='max grad norm (null: off)')


class EmaConfig(StageConfig):
    """Second phase: EMA teacher supervising the student with soft predictions."""

    enabled: bool = True
    start_step: int = Field(default=4000, ge=0, description='phase switch step')
    momentum: float = Field(default=0.999, ge=0, le=1)
    temperature: float = Field(default=1.0, gt=0)
    weight_sparse: float = Field(default=1.0, ge=0)
    weight_soft: float = Field(default=1.0, ge=0)
    export: Literal['teacher', 'student'] = Field(
        default='teacher', description='weights written to model.safetensors')


class TrainConfig(StageConfig):
    """The ``train`` section: everything a run needs, saved as RUN/config.yaml."""

    model: SegmenterConfig = Field(default_factory=SegmenterConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    batch_size: int = Field(default=8, ge=1, description='per process (per GPU)')
    max_steps: int | None = Field(default=None, ge=1)
    epochs: int | None = Field(default=None, ge=1)
    seed: int = 0
    device: Literal['auto', 'cpu', 'cuda'] = 'auto'
    amp: bool = Field(default=True, description='mixed precision on CUDA (bf16 if supported)')
    checkpoint_every: int = Field(default=500, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    log_every: int = Field(default=10, ge=1)

    @model_validator(mode='after')
    def _steps(self) -> TrainConfig:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError('set max_steps or epochs, not both')
        if self.data.base_short_side and self.inference.short_side is None:
            # Infer at the scale the network was trained at unless told otherwise.
            self.inference.short_side = self.data.base_short_side
        return self


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    metrics: list[dict[str, Any]] = field(default_factory=list)


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate at ``step`` (0-based) of ``total`` steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, total - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == 'cosine':
        return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.schedule == 'poly':
        return floor + (cfg.lr - floor) * (1.0 - t) ** cfg.poly_power
    return cfg.lr


def _param_groups(model: Any, cfg: OptimConfig) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_backbone = name.startswith('backbone.')
        no_decay = param.ndim <= 1 or name.endswith(('pos_embed', 'cls_token', 'cls_emb',
                                                     'reg_token'))
        groups.setdefault((is_backbone, no_decay), []).append(param)
    out = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        out.append({'params': params, 'weight_decay': 0.0 if no_decay else cfg.weight_decay,
                    'lr_mult': cfg.backbone_lr_mult if is_backbone else 1.0})
    return out


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])




def resolve_device(name: str) -> str:
    import torch

    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('device: cuda requested but CUDA is not available; use --device cpu')
    return name


def train(dataset_dir: str | Path, run_dir: str | Path, cfg: TrainConfig, *,
          resume: bool = False, progress: bool = True,
          on_step: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train (or resume) a segmenter on a pseudo-labelled dataset; returns the run summary.

    ``on_step(step, metrics_row)`` is called after every optimizer step (``step`` = steps
    done). On ``KeyboardInterrupt`` a checkpoint of the last finished step is written before
    the interrupt propagates, so ``resume=True`` continues exactly there.
    """
    import torch
    from torch.nn import functional as F

    from dsseg_core.segmenter import checkpoint as ckpt
    from dsseg_core.segmenter.data import SegmentationDataset, StepBatchSampler
    from dsseg_core.segmenter.distributed import DistContext, init_distributed
    from dsseg_core.segmenter.model import build_segmenter

    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    dist: DistContext = init_distributed(device)
    try:
        dataset = SegmentationDataset(dataset_dir, cfg.data, seed=cfg.seed)
        dataset.validate()  # every sample, before anything is written into run_dir
        if 'num_classes' in cfg.model.model_fields_set and \
                cfg.model.num_classes != dataset.num_classes:
            raise ConfigError(f'model.num_classes={cfg.model.num_classes} but the dataset '
                              f'{dataset_dir} has {dataset.num_classes} classes; remove the '
                              'setting to follow the dataset')
        cfg = cfg.model_copy(deep=True)
        cfg.model.num_classes = dataset.num_classes

        latest = ckpt.latest_checkpoint(run_dir) if resume else None
        if not resume and (ckpt.latest_checkpoint(run_dir) is not None):
            raise CheckpointError(f'{run_dir}: already holds a training run; pass --resume to '
                                  'continue it or choose another --out')

        torch.manual_seed(cfg.seed)
        model = build_segmenter(cfg.model, load_pretrained=latest is None)
        dataset.mean = np.asarray(model.mean, dtype=np.float32)
        dataset.std = np.asarray(model.std, dtype=np.float32)
        model.to(dist.device)
        teacher = None
        if cfg.ema.enabled:
            teacher = copy.deepcopy(model).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

        steps_per_epoch = max(1, len(dataset) // (cfg.batch_size * dist.world_size))
        if cfg.max_steps is not None:
            total = cfg.max_steps
        elif cfg.epochs is not None:
            total = cfg.epochs * steps_per_epoch
        else:
            total = 20000
        groups = _param_groups(model, cfg.optim)
        optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                      weight_decay=cfg.optim.weight_decay)
        use_amp = cfg.amp and dist.device.type == 'cuda'
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() \
            else torch.float16
        scaler = torch.amp.GradScaler('cuda', enabled=use_amp and amp_dtype == torch.float16)

        start_step = 0
        if latest is not None:
            state = ckpt.load_training_state(latest, student=model, teacher=teacher,
                                             optimizer=optimizer)
            start_step = int(state['step'])
            saved_world = int(state.get('world_size', dist.world_size))
            if saved_world * int(state.get('batch_size', cfg.batch_size)) != \
                    dist.world_size * cfg.batch_size:
                log.warning('%s: resuming with a different global batch (%d x %d, was %d x %d):'
                            ' the data order will not match an uninterrupted run', run_dir,
                            dist.world_size, cfg.batch_size, saved_world,
                            int(state.get('batch_size', cfg.batch_size)))
            if state.get('scaler') and scaler.is_enabled():
                scaler.load_state_dict(state['scaler'])
            log.info('resuming %s from step %d', run_dir, start_step)
        elif resume:
            log.warning('%s: no checkpoint to resume from, starting at step 0', run_dir)

        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / ckpt.CONFIG_FILE, section='train')
            ckpt.save_class_names(dataset.class_names, run_dir / ckpt.CLASSES_FILE)
        metrics = ckpt.read_metrics(run_dir / METRICS_FILE, start_step) if dist.is_main else []

        net: Any = model
        if dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[dist.device.index] if dist.device.type == 'cuda' else None)

        sampler = StepBatchSampler(len(dataset), cfg.batch_size, seed=cfg.seed,
                                   start_step=start_step, end_step=total, rank=dist.rank,
                                   world_size=dist.world_size)
        from torch.utils.data import DataLoader

        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                            pin_memory=dist.device.type == 'cuda')
        writer = _tensorboard(run_dir) if dist.is_main else None

        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_step, disable=None if progress else True,
                   desc='train', unit='step', dynamic_ncols=True)
        smooth = None
        t_start = time.perf_counter()
        t_last = t_start
        step = start_step

        def checkpoint(at_step: int) -> None:
            if not dist.is_main:
                return
            epoch, position = divmod(at_step, steps_per_epoch)
            extra = {'scaler': scaler.state_dict() if scaler.is_enabled() else None,
                     'total_steps': total, 'steps_per_epoch': steps_per_epoch,
                     'world_size': dist.world_size, 'batch_size': cfg.batch_size,
                     'seed': cfg.seed, 'epoch': epoch, 'batch_in_epoch': position,
                     'next_lr': lr_at(at_step, total, cfg.optim),
                     'data_order': 'permutation drawn from (seed, epoch); augmentation from '
                                   '(seed, epoch, sample index)',
                     'rng': 'torch reseeded every step from (seed, step, rank)'}
            ckpt.save_training_state(run_dir, at_step, student=model, teacher=teacher,
                                     optimizer=optimizer, extra=extra,
                                     keep=cfg.keep_checkpoints)
            best = teacher if (teacher is not None and cfg.ema.export == 'teacher') else model
            ckpt.save_state_dict_file(best.state_dict(), run_dir / ckpt.MODEL_FILE)
            ckpt.write_metrics(run_dir / METRICS_FILE, metrics, METRIC_FIELDS)

        model.train()
        consistent = True
        try:
            for images, labels in loader:
                seed = _step_seed(cfg.seed, step, dist.rank)
                torch.manual_seed(seed)
                lr = lr_at(step, total, cfg.optim)
                for group in optimizer.param_groups:
                    group['lr'] = lr * group.get('lr_mult', 1.0)
                images = images.to(dist.device, non_blocking=True)
                labels = labels.to(dist.device, non_blocking=True)
                labelled = labels != IGNORE
                phase2 = teacher is not None and step >= cfg.ema.start_step
                with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = net(images)
                logits = logits.float()
                if labelled.any():
                    loss_sparse = F.cross_entropy(logits, labels, ignore_index=IGNORE)
                else:
                    loss_sparse = logits.sum() * 0.0
                loss_soft = logits.new_zeros(())
                if phase2:
                    temp = cfg.ema.temperature
                    with torch.no_grad(), torch.autocast(dist.device.type, dtype=amp_dtype,
                                                         enabled=use_amp):
                        t_logits = teacher(images)
                    target = F.softmax(t_logits.float() / temp, dim=1)
                    log_p = F.log_softmax(logits / temp, dim=1)
                    kl = F.kl_div(log_p, target, reduction='none').sum(1)
                    loss_soft = kl.mean() * temp ** 2
                    loss = cfg.ema.weight_sparse * loss_sparse + cfg.ema.weight_soft * loss_soft
                else:
                    loss = loss_sparse
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                params = [p for p in model.parameters() if p.grad is not None]
                if cfg.optim.grad_clip is not None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                else:
                    grad_norm = torch.linalg.vector_norm(
                        torch.stack([p.grad.detach().norm() for p in params]))
                consistent = False  # weights change before the step counter does
                scaler.step(optimizer)
                scaler.update()
                if teacher is not None:
                    _ema_update(teacher, model, cfg.ema.momentum)
                step += 1
                consistent = True

                loss_value = float(loss.detach())
                smooth = loss_value if smooth is None else 0.9 * smooth + 0.1 * loss_value
                now = time.perf_counter()
                n_img = images.shape[0] * dist.world_size
                row = {'step': step - 1, 'epoch': (step - 1) // steps_per_epoch,
                       'lr': f'{lr:.6g}', 'loss': f'{loss_value:.6f}',
                       'loss_sparse': f'{float(loss_sparse.detach()):.6f}',
                       'loss_soft': f'{float(loss_soft.detach()):.6f}',
                       'grad_norm': f'{float(grad_norm):.4f}',
                       'labelled_frac': f'{float(labelled.float().mean()):.4f}',
                       'images_per_s': f'{n_img / max(now - t_last, 1e-9):.3f}',
                       'time_s': f'{now - t_start:.3f}'}
                t_last = now
                if dist.is_main:
                    metrics.append(row)
                    if writer is not None and step % cfg.log_every == 0:
                        writer.add_scalar('loss/total', loss_value, step)
                        writer.add_scalar('loss/sparse', float(loss_sparse), step)
                        writer.add_scalar('loss/soft', float(loss_soft), step)
                        writer.add_scalar('lr', lr, step)
                bar.update(1)
                bar.set_postfix(loss=f'{smooth:.4f}', phase=2 if phase2 else 1)
                if on_step is not None:
                    on_step(step, row)
                if step % cfg.checkpoint_every == 0 and step < total:
                    checkpoint(step)
                    dist.barrier()
        except KeyboardInterrupt:
            bar.close()
            if consistent and step > start_step:
                log.warning('interrupted: checkpoint at step %d in %s', step, run_dir)
                checkpoint(step)
            raise
        bar.close()
        if step > start_step or latest is None:
            checkpoint(step)
        dist.barrier()
        if writer is not None:
            writer.close()
        return TrainResult(run_dir=run_dir, steps=step, metrics=metrics)
    finally:
        dist.shutdown()


def _ema_update(teacher: Any, student: Any, momentum: float) -> None:
    import torch

    with torch.no_grad():
        for tp, sp in zip(teacher.parameters(), student.parameters(), strict=True):
            tp.lerp_(sp.detach(), 1.0 - momentum)
        for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
            tb.copy_(sb)


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / 'tensorboard'))

"""Training of the 3D student on transferred + smoothed point labels (``dsseg train-3d``).

Input: a point dataset — ``index.jsonl`` entries with a ``points`` npz (``xyz``, ``labels``
int32 -1 = unknown, optional ``intensity``, ``ring``, ``confidence``) and a ``dataset.yaml``
with ``num_classes`` (written by ``dsseg label-points``; the pseudo-labelled datasets of
``dsseg pseudo-label`` have the same ``points/`` files and work too). Each scan becomes a
range image; training samples random column crops (``crop_width``) with random left/right
mirroring; loss = cross-entropy + ``lovasz_weight`` x Lovász-softmax, unknown ignored.

Run directory (same machinery as the image model, ``dsseg_core.segmenter.checkpoint``)::

    RUN/config.yaml  (section train3d)   RUN/classes.yaml   RUN/model.safetensors
    RUN/metrics.csv  RUN/checkpoints/latest.json + step_N/ (resume state, atomic)

Resuming (``resume=True``) restores weights, optimizer and step; the data order and
augmentations are functions of (seed, step), so a resumed run ends with the same weights as an
uninterrupted one. torchrun works (``init_distributed``: gloo on CPU, NCCL on CUDA).

Imports torch (through the student): the CLI imports this module inside ``run`` only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field

from dsseg_core.config import StageConfig, save_config
from dsseg_core.errors import CheckpointError, ConfigError, DatasetError
from dsseg_core.points3d.student import StudentConfig
from dsseg_core.pseudolabel.dataset import read_index as read_jsonl_index

__all__ = [
    'PointDataset',
    'Train3dConfig',
    'Train3dResult',
    'load_student_model',
    'save_student_run',
    'train_student',
]

log = logging.getLogger(__name__)

SECTION = 'train3d'
CONFIG_FILE = 'config.yaml'
CLASSES_FILE = 'classes.yaml'
MODEL_FILE = 'model.safetensors'
METRICS_FILE = 'metrics.csv'
IGNORE = -1


class Train3dConfig(StageConfig):
    """Section ``train3d``."""

    student: StudentConfig = Field(default_factory=StudentConfig)
    max_steps: int = Field(2000, ge=1)
    batch_size: int = Field(4, ge=1)
    crop_width: int | None = Field(512, ge=8, description='columns per crop; None = full scan')
    lr: float = Field(2e-3, gt=0.0)
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    lovasz_weight: float = Field(1.0, ge=0.0)
    flip: bool = True
    crop_on_labels: bool = Field(True, description='every crop contains a labelled column '
                                 '(labels from a front camera cover a quarter of the scan)')
    min_confidence: float = Field(0.0, ge=0.0, le=1.0,
                                  description='point labels with lower confidence are ignored')
    checkpoint_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    device: Literal['auto', 'cpu', 'cuda'] = 'auto'
    seed: int = 0


@dataclass
class Train3dResult:
    run_dir: Path
    steps: int
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _read_index(root: Path) -> list[dict[str, Any]]:
    path = root / 'index.jsonl'
    if path.is_file():
        entries = read_jsonl_index(path, required=('points',),
                                   hint='train-3d needs points/<id>.npz (write them with dsseg '
                                        'label-points)')
    else:
        files = sorted((root / 'points').glob('*.npz'))
        entries = [{'id': f.stem, 'points': f'points/{f.name}'} for f in files]
    if not entries:
        raise DatasetError(f'{root}: no point samples (expected index.jsonl or points/*.npz; '
                           'create the dataset with dsseg label-points)')
    # one scan may appear once per camera in a pseudo-label dataset: keep each file once
    seen: dict[str, dict[str, Any]] = {}
    for e in entries:
        seen.setdefault(e['points'], e)
    return list(seen.values())


def _dataset_num_classes(root: Path) -> int | None:
    path = root / 'dataset.yaml'
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        return int(data['num_classes'])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise DatasetError(f'{path}: cannot read num_classes ({err})') from err


def _dataset_class_names(root: Path, num_classes: int) -> list[str]:
    names = [f'class_{i:02d}' for i in range(num_classes)]
    path = root / 'classes.yaml'
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        except yaml.YAMLError as err:
            raise DatasetError(f'{path}: not valid YAML ({err})') from err
        for k, v in (data.items() if isinstance(data, dict) else []):
            if str(k).lstrip('-').isdigit() and 0 <= int(k) < num_classes:
                names[int(k)] = str(v)
    return names


def load_points_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of a ``points/<id>.npz`` (DatasetError naming the file and the missing key)."""
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError as err:
        raise DatasetError(f'{path}: points file missing') from err
    except (OSError, ValueError) as err:
        raise DatasetError(f'{path}: corrupt npz ({err})') from err
    for key in ('xyz', 'labels'):
        if key not in arrays:
            raise DatasetError(f'{path}: no {key!r} array (has {sorted(arrays)})')
    if arrays['xyz'].ndim != 2 or arrays['xyz'].shape[1] < 3 or \
            arrays['labels'].shape[0] != arrays['xyz'].shape[0]:
        raise DatasetError(f'{path}: xyz {arrays["xyz"].shape} and labels '
                           f'{arrays["labels"].shape} do not match')
    return arrays


class PointDataset:
    """Scans of a point dataset as (features (6,H,W), target (H,W) int64) range images."""

    def __init__(self, root: str | Path, student_cfg: StudentConfig, min_confidence: float = 0.0,
                 num_classes: int | None = None) -> None:
        from dsseg_core.points3d.student import pixel_labels, scan_to_tensors

        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f'{self.root}: dataset folder not found')
        self.entries = _read_index(self.root)
        self.features: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        max_label = -1
        for entry in self.entries:
            arrays = load_points_npz(self.root / entry['points'])
            labels = arrays['labels'].astype(np.int64)
            if min_confidence > 0 and 'confidence' in arrays:
                labels = np.where(arrays['confidence'] >= min_confidence, labels, IGNORE)
            scan = scan_to_tensors(arrays['xyz'], arrays.get('intensity'), arrays.get('ring'),
                                   student_cfg)
            self.features.append(scan.features)
            self.targets.append(pixel_labels(scan.range_image, labels, IGNORE))
            max_label = max(max_label, int(labels.max(initial=-1)))
        declared = num_classes or _dataset_num_classes(self.root)
        self.num_classes = int(declared if declared is not None else max_label + 1)
        if max_label >= self.num_classes:
            raise DatasetError(f'{self.root}: label {max_label} >= num_classes '
                               f'{self.num_classes} (dataset.yaml)')
        if self.num_classes < 1 or all((t < 0).all() for t in self.targets):
            raise DatasetError(f'{self.root}: no labelled point in any scan; nothing to learn '
                               '(did the label transfer see any camera?)')
        self.class_names = _dataset_class_names(self.root, self.num_classes)
        self.labelled_cols = [np.flatnonzero((t >= 0).any(axis=0)) for t in self.targets]

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, rng: np.random.Generator, batch_size: int, crop_width: int | None,
              flip: bool, crop_on_labels: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """A random batch of crops (same rows for all; scans with other row counts padded)."""
        idx = rng.integers(0, len(self), batch_size)
        rows = max(self.features[i].shape[1] for i in idx)
        feats, targs = [], []
        for i in idx:
            f, t = self.features[i], self.targets[i]
            w = f.shape[2]
            cw = w if crop_width is None else min(crop_width, w)
            c0 = int(rng.integers(0, w - cw + 1))
            if crop_on_labels and cw < w:
                cols = self.labelled_cols[i]
                if cols.size:
                    c = int(cols[rng.integers(0, cols.size)])
                    c0 = int(np.clip(c - rng.integers(0, cw), 0, w - cw))
            f = f[:, :, c0:c0 + cw]
            t = t[:, c0:c0 + cw]
            if flip and rng.random() < 0.5:  # mirror left/right: columns reversed, y negated
                f = f[:, :, ::-1].copy()
                f[2] = -f[2]
                t = t[:, ::-1]
            if f.shape[1] < rows:
                f = np.pad(f, ((0, 0), (0, rows - f.shape[1]), (0, 0)))
                t = np.pad(t, ((0, rows - t.shape[0]), (0, 0)), constant_values=IGNORE)
            feats.append(f)
            targs.append(t)
        cw_min = min(f.shape[2] for f in feats)
        return (np.stack([f[:, :, :cw_min] for f in feats]).astype(np.float32),
                np.stack([t[:, :cw_min] for t in targs]).astype(np.int64))


def _step_rng(seed: int, step: int, rank: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, step, rank]))


def save_student_run(model: Any, cfg: Train3dConfig, run_dir: str | Path,
                     class_names: list[str] | None = None) -> Path:
    """Write a loadable run (config + classes + weights) — also for untrained test models."""
    from dsseg_core.segmenter import checkpoint as ckpt

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE, section=SECTION)
    names = class_names or [f'class_{i:02d}' for i in range(cfg.student.num_classes)]
    ckpt.save_class_names(names, run_dir / CLASSES_FILE)
    ckpt.save_state_dict_file(model.state_dict(), run_dir / MODEL_FILE)
    return run_dir


def load_run_config3d(run_dir: str | Path) -> Train3dConfig:
    from dsseg_core.segmenter.checkpoint import read_run_config

    return read_run_config(run_dir, Train3dConfig, SECTION, what='train-3d run')


def load_student_model(run_dir: str | Path, device: str = 'cpu'
                       ) -> tuple[Any, StudentConfig, list[str]]:
    """``(model in eval mode, StudentConfig, class names)`` of a train-3d run directory."""
    from dsseg_core.points3d.student import build_student
    from dsseg_core.segmenter import checkpoint as ckpt

    run_dir = Path(run_dir)
    cfg = load_run_config3d(run_dir)
    model = build_student(cfg.student)
    path = run_dir / MODEL_FILE
    ckpt.load_into(model, ckpt.load_state_dict_file(path), path)
    names = ckpt.load_class_names(run_dir, cfg.student.num_classes)
    return model.to(device).eval(), cfg.student, names


METRIC_FIELDS = ['step', 'lr', 'loss', 'loss_ce', 'loss_lovasz', 'pixel_acc', 'labelled_frac']




def train_student(dataset_dir: str | Path, run_dir: str | Path, cfg: Train3dConfig, *,
                  resume: bool = False, progress: bool = True) -> Train3dResult:
    """Train (or resume) the 3D student; returns the run summary."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    from dsseg_core.points3d.lovasz import lovasz_softmax
    from dsseg_core.points3d.student import build_student
    from dsseg_core.segmenter import checkpoint as ckpt
    from dsseg_core.segmenter.distributed import init_distributed

    run_dir = Path(run_dir)
    if cfg.device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    elif cfg.device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('train3d.device: cuda requested but CUDA is not available; use cpu')
    else:
        device = cfg.device
    dist = init_distributed(device)
    try:
        cfg = cfg.model_copy(deep=True)
        declared = 'num_classes' in cfg.student.model_fields_set
        data = PointDataset(dataset_dir, cfg.student, cfg.min_confidence,
                            num_classes=cfg.student.num_classes if declared else None)
        if declared and cfg.student.num_classes != data.num_classes:
            raise ConfigError(f'train3d.student.num_classes={cfg.student.num_classes} but '
                              f'{dataset_dir} has {data.num_classes} classes')
        cfg.student.num_classes = data.num_classes

        latest = ckpt.latest_checkpoint(run_dir)
        if latest is not None and not resume:
            raise CheckpointError(f'{run_dir}: already holds a training run; pass --resume to '
                                  'continue it or choose another --out')
        torch.manual_seed(cfg.seed)
        model = build_student(cfg.student).to(dist.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                      weight_decay=cfg.weight_decay)
        start = 0
        if latest is not None:
            state = ckpt.load_training_state(latest, student=model, teacher=None,
                                             optimizer=optimizer)
            start = int(state['step'])
            log.info('resuming %s from step %d', run_dir, start)
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / CONFIG_FILE, section=SECTION)
            ckpt.save_class_names(data.class_names, run_dir / CLASSES_FILE)
        metrics = ckpt.read_metrics(run_dir / METRICS_FILE, start) if dist.is_main else []
        net: Any = model
        if dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[dist.device.index] if dist.device.type == 'cuda' else None)

        def checkpoint(at_step: int) -> None:
            if not dist.is_main:
                return
            ckpt.save_training_state(run_dir, at_step, student=model, teacher=None,
                                     optimizer=optimizer, extra={'total_steps': cfg.max_steps},
                                     keep=cfg.keep_checkpoints)
            ckpt.save_state_dict_file(model.state_dict(), run_dir / MODEL_FILE)
            ckpt.write_metrics(run_dir / METRICS_FILE, metrics, METRIC_FIELDS)

        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=start, disable=None if progress else True,
                   desc='train-3d', unit='step', dynamic_ncols=True)
        model.train()
        step = start
        while step < cfg.max_steps:
            rng = _step_rng(cfg.seed, step, dist.rank)
            torch.manual_seed(int(rng.integers(2 ** 31)))
            t = min(1.0, step / max(1, cfg.max_steps - 1))
            floor = cfg.lr * cfg.min_lr_ratio
            lr = floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
            for group in optimizer.param_groups:
                group['lr'] = lr
            x, y = data.batch(rng, cfg.batch_size, cfg.crop_width, cfg.flip,
                              cfg.crop_on_labels)
            x = torch.from_numpy(x).to(dist.device)
            y = torch.from_numpy(y).to(dist.device)
            logits = net(x).float()
            labelled = y != IGNORE
            if labelled.any():
                loss_ce = F.cross_entropy(logits, y, ignore_index=IGNORE)
                loss_lv = lovasz_softmax(logits, y, ignore_index=IGNORE) \
                    if cfg.lovasz_weight > 0 else logits.new_zeros(())
            else:
                loss_ce = loss_lv = logits.sum() * 0.0
            loss = loss_ce + cfg.lovasz_weight * loss_lv
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                acc = (logits.argmax(1)[labelled] == y[labelled]).float().mean() \
                    if labelled.any() else torch.zeros(())
            loss, loss_ce, loss_lv = loss.detach(), loss_ce.detach(), loss_lv.detach()
            if dist.is_main:
                metrics.append({'step': step - 1, 'lr': f'{lr:.6g}',
                                'loss': f'{float(loss):.6f}', 'loss_ce': f'{float(loss_ce):.6f}',
                                'loss_lovasz': f'{float(loss_lv):.6f}',
                                'pixel_acc': f'{float(acc):.4f}',
                                'labelled_frac': f'{float(labelled.float().mean()):.4f}'})
            bar.update(1)
            bar.set_postfix(loss=f'{float(loss):.4f}', acc=f'{float(acc):.3f}')
            if step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                checkpoint(step)
                dist.barrier()
        bar.close()
        if step > start or latest is None:
            checkpoint(step)
        dist.barrier()
        return Train3dResult(run_dir=run_dir, steps=step, metrics=metrics)
    finally:
        dist.shutdown()

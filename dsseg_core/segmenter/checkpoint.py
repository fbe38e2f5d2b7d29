"""Run directories and checkpoints: safetensors + YAML/JSON only (no pickles).

Run directory layout::

    RUN/
      config.yaml            # resolved TrainConfig (section 'train'): model, data, inference...
      classes.yaml           # {id: name} of the model's classes (copied from the dataset)
      model.safetensors      # weights for inference (EMA teacher or student, see ema.export)
      metrics.csv            # loss curve (step, epoch, lr, losses, grad norm, images/s)
      checkpoints/latest.json            # {"step": N, "dir": "step_0000000N"}
      checkpoints/step_0000000N/         # resume state, written with atomic_dir
          student.safetensors, teacher.safetensors, optimizer.safetensors, state.json

Every file is written atomically; the ``latest.json`` pointer is only updated once a
checkpoint folder is complete, so an interruption never leaves a half checkpoint in use.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from dsseg_core.atomic import atomic_dir, atomic_path, write_text_atomic
from dsseg_core.config import StageConfig, load_config, save_config
from dsseg_core.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from dsseg_core.segmenter.model import SegmenterConfig
    from dsseg_core.segmenter.train import TrainConfig

C = TypeVar('C', bound=StageConfig)

__all__ = [
    'CONFIG_FILE',
    'MODEL_FILE',
    'load_class_names',
    'load_model',
    'load_run_config',
    'read_metrics',
    'read_run_config',
    'write_metrics',
    'load_state_dict_file',
    'load_training_state',
    'save_class_names',
    'save_run',
    'save_state_dict_file',
    'save_training_state',
]

log = logging.getLogger(__name__)

CONFIG_FILE = 'config.yaml'
CLASSES_FILE = 'classes.yaml'
MODEL_FILE = 'model.safetensors'
CHECKPOINT_DIR = 'checkpoints'
FORMAT = 'dsseg-segmenter-1'


def save_state_dict_file(state: dict[str, torch.Tensor], path: str | Path,
                         metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically (shared storage is cloned)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to('cpu').contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={'format': FORMAT, **(metadata or {})})


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; CheckpointError naming the file when missing or corrupt."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: checkpoint file not found')
    try:
        return load_file(str(path))
    except Exception as err:
        detail = str(err).replace('\n', ' ')
        raise CheckpointError(f'{path}: corrupt or not a safetensors file ({detail}); delete '
                              'it or restore it from a backup') from err


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Strict load with a CheckpointError naming the file and the mismatching tensors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append('shape mismatch ' + '; '.join(shapes[:5]))
        if missing:
            parts.append(f'{len(missing)} missing tensors (e.g. {", ".join(missing[:3])})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected tensors '
                         f'(e.g. {", ".join(unexpected[:3])})')
        raise CheckpointError(f'{path}: weights do not match the model built from the run '
                              f'config: {"; ".join(parts)}; the config.yaml next to it was '
                              'changed or the file belongs to another run')
    module.load_state_dict(state, strict=True)


def _train_config_cls() -> type[TrainConfig]:
    from dsseg_core.segmenter.train import TrainConfig

    return TrainConfig


def read_run_config(run_dir: str | Path, schema: type[C], section: str,
                    what: str = 'training run') -> C:
    """The resolved ``section`` config of a run directory (image or 3D training)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f'{path}: missing; {run_dir} is not a dsseg {what} '
                              '(expected config.yaml + model.safetensors)')
    try:
        return load_config(schema, path, section=section)
    except ConfigError as err:
        raise CheckpointError(f'{path}: run config invalid: {err}') from err


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config of an image-segmenter run directory."""
    return read_run_config(run_dir, _train_config_cls(), 'train')


def write_metrics(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    """The run's ``metrics.csv`` (atomic; columns ``fields``, extra keys dropped)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def read_metrics(path: Path, before_step: int) -> list[dict[str, Any]]:
    """Rows of ``metrics.csv`` logged before ``before_step`` (what a resume keeps)."""
    if not path.is_file():
        return []
    with path.open(newline='', encoding='utf-8') as fh:
        return [row for row in csv.DictReader(fh) if int(row['step']) < before_step]


def save_class_names(names: list[str], path: str | Path) -> None:
    write_text_atomic(path, yaml.safe_dump({i: n for i, n in enumerate(names)},
                                           sort_keys=False, allow_unicode=True))


def load_class_names(run_dir: str | Path, num_classes: int) -> list[str]:
    """Class names of a run (``classes.yaml``), defaulting to ``class_XX``."""
    names = [f'class_{i:02d}' for i in range(num_classes)]
    path = Path(run_dir) / CLASSES_FILE
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        except yaml.YAMLError as err:
            raise CheckpointError(f'{path}: not valid YAML ({err})') from err
        if not isinstance(data, dict):
            raise CheckpointError(f'{path}: expected a mapping {{id: name}}')
        for key, value in data.items():
            try:
                idx = int(key)
            except (TypeError, ValueError) as err:
                raise CheckpointError(f'{path}: class id {key!r} is not an integer') from err
            if 0 <= idx < num_classes:
                names[idx] = str(value)
    return names


def save_run(model: nn.Module, cfg: TrainConfig | SegmenterConfig, run_dir: str | Path,
             class_names: list[str] | None = None) -> Path:
    """Write a loadable run directory (config + weights + class names) and return it.

    ``cfg`` may be a full :class:`TrainConfig` or just a :class:`SegmenterConfig` (wrapped in
    default training settings) — handy to make a randomly initialised model for tests.
    """
    from dsseg_core.segmenter.model import SegmenterConfig

    run_dir = Path(run_dir)
    train_cls = _train_config_cls()
    if isinstance(cfg, SegmenterConfig):
        cfg = train_cls(model=cfg)
    if cfg.model.num_classes != model.num_classes:
        raise CheckpointError(f'{run_dir}: config has {cfg.model.num_classes} classes, model '
                              f'{model.num_classes}')
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE, section='train')
    names = class_names or [f'class_{i:02d}' for i in range(model.num_classes)]
    save_class_names(names, run_dir / CLASSES_FILE)
    save_state_dict_file(model.state_dict(), run_dir / MODEL_FILE)
    return run_dir


def load_model(run_dir: str | Path, device: str = 'cpu', weights: str | Path | None = None
               ) -> nn.Module:
    """Rebuild the network of a run and load ``model.safetensors`` (or ``weights``).

    The backbone is created without downloading pretrained weights. The model is in eval mode.
    """
    from dsseg_core.segmenter.model import build_segmenter

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    path = Path(weights) if weights is not None else run_dir / MODEL_FILE
    state = load_state_dict_file(path)
    model = build_segmenter(cfg.model, load_pretrained=False)
    load_into(model, state, path)
    return model.to(device).eval()


# --- resume state -------------------------------------------------------------------------

def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt_state['state'].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f'{pid}.{name}'] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {'param_groups': opt_state['param_groups'], 'scalars': scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split('.', 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get('scalars', {}).items():
        state.setdefault(int(pid), {}).update(values)
    return {'state': state, 'param_groups': meta['param_groups']}


def save_training_state(run_dir: str | Path, step: int, *, student: nn.Module,
                        teacher: nn.Module | None, optimizer: torch.optim.Optimizer,
                        extra: dict[str, Any], keep: int = 2) -> Path:
    """Write ``checkpoints/step_N`` atomically, point ``latest.json`` at it, prune old ones."""
    root = Path(run_dir) / CHECKPOINT_DIR
    name = f'step_{step:08d}'
    tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    with atomic_dir(root / name) as tmp:
        save_state_dict_file(student.state_dict(), tmp / 'student.safetensors')
        if teacher is not None:
            save_state_dict_file(teacher.state_dict(), tmp / 'teacher.safetensors')
        save_state_dict_file(tensors, tmp / 'optimizer.safetensors')
        state = {'format': FORMAT, 'step': step, 'optimizer': opt_meta, **extra}
        write_text_atomic(tmp / 'state.json', json.dumps(state, indent=1))
    write_text_atomic(root / 'latest.json', json.dumps({'step': step, 'dir': name}))
    old = sorted(p for p in root.glob('step_*') if p.is_dir() and p.name != name)
    for path in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return root / name


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINT_DIR / 'latest.json'
    if not pointer.is_file():
        return None
    try:
        data = json.loads(pointer.read_text(encoding='utf-8'))
        return pointer.parent / str(data['dir'])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f'{pointer}: corrupt checkpoint pointer ({err}); delete it to '
                              'resume from scratch') from err


def load_training_state(ckpt_dir: str | Path, *, student: nn.Module, teacher: nn.Module | None,
                        optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights and optimizer from a checkpoint folder; returns ``state.json``."""
    ckpt_dir = Path(ckpt_dir)
    state_path = ckpt_dir / 'state.json'
    try:
        state = json.loads(state_path.read_text(encoding='utf-8'))
    except FileNotFoundError as err:
        raise CheckpointError(f'{state_path}: missing; the checkpoint is incomplete') from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f'{state_path}: corrupt JSON ({err.msg})') from err
    load_into(student, load_state_dict_file(ckpt_dir / 'student.safetensors'),
              ckpt_dir / 'student.safetensors')
    if teacher is not None:
        path = ckpt_dir / 'teacher.safetensors'
        load_into(teacher, load_state_dict_file(path) if path.is_file() else
                  student.state_dict(), path)
    opt_path = ckpt_dir / 'optimizer.safetensors'
    opt_state = _unflatten_optimizer(load_state_dict_file(opt_path), state['optimizer'])
    try:
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f'{opt_path}: optimizer state does not match the model '
                              f'({err})') from err
    return state

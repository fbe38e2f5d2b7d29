"""Training data: the pseudo-labelled dataset format, augmentations and a resumable sampler.

Reads the dataset format of ``docs/ARCHITECTURE.md`` directly (``dataset.yaml``,
``classes.yaml``, ``index.jsonl``, ``images/``, ``labels/``). Augmentations are numpy only
(no torchvision): random scale + crop (bilinear image / nearest labels, padding outside the
image), horizontal flip, brightness/contrast/saturation jitter.

Reproducibility: the order of samples is a pure function of ``(seed, epoch)`` and the
augmentation of a sample a pure function of ``(seed, epoch, index)``, so a resumed run sees
exactly the batches an uninterrupted run would (:class:`StepBatchSampler`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from dsseg_core.config import StageConfig
from dsseg_core.errors import DatasetError
from dsseg_core.pseudolabel.dataset import read_index as read_jsonl_index

__all__ = [
    'DataConfig',
    'IGNORE',
    'SegmentationDataset',
    'StepBatchSampler',
    'augment',
    'read_index',
]

log = logging.getLogger(__name__)

IGNORE = -1  # label value of unlabelled pixels inside training batches


class DataConfig(StageConfig):
    """Training crops and augmentation (section ``data`` of the training config)."""

    crop: int | tuple[int, int] = Field(default=512, description='crop size, px (or [h, w])')
    base_short_side: int | None = Field(
        default=None, ge=16, description='rescale so the shorter side has this many pixels '
                                         'before random scaling (match inference.short_side)')
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    color_jitter: float = Field(default=0.2, ge=0.0, lt=1.0,
                                description='brightness/contrast/saturation strength')
    num_workers: int = Field(default=2, ge=0)

    @field_validator('scale_range')
    @classmethod
    def _scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError('need 0 < min <= max')
        return value

    @property
    def crop_hw(self) -> tuple[int, int]:
        c = self.crop
        return (c, c) if isinstance(c, int) else (int(c[0]), int(c[1]))


def read_index(root: Path) -> list[dict[str, Any]]:
    """Entries of ``index.jsonl`` (DatasetError naming the line on bad JSON)."""
    path = root / 'index.jsonl'
    if not path.is_file():
        raise DatasetError(f'{path}: missing; {root} is not a dsseg pseudo-labelled dataset '
                           '(create one with dsseg pseudo-label)')
    entries = read_jsonl_index(path, required=('image', 'labels'),
                               hint='the trainer needs images and label PNGs written into '
                                    'the dataset')
    if not entries:
        raise DatasetError(f'{path}: no samples')
    return entries


def _bilinear_rows_cols(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``image (H, W, C)`` at the grid ``ys x xs`` (float source coords, clamped)."""
    h, w = image.shape[:2]
    ysc = np.clip(ys, 0.0, h - 1)
    xsc = np.clip(xs, 0.0, w - 1)
    y0 = np.floor(ysc).astype(np.int64)
    x0 = np.floor(xsc).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ysc - y0).astype(np.float32)[:, None, None]
    wx = (xsc - x0).astype(np.float32)[None, :, None]
    rows = image[y0] * (1.0 - wy) + image[y1] * wy
    return rows[:, x0] * (1.0 - wx) + rows[:, x1] * wx


def augment(rgb: np.ndarray, labels: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
            mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One random crop: normalised ``float32 (3, ch, cw)`` and ``int64 (ch, cw)`` labels.

    Pixels outside the source image are 0 in the image (the mean colour) and IGNORE in labels.
    """
    h, w = labels.shape
    ch, cw = cfg.crop_hw
    base = cfg.base_short_side / min(h, w) if cfg.base_short_side else 1.0
    lo, hi = cfg.scale_range
    factor = base * float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else base * lo
    sh, sw = h * factor, w * factor
    oy = rng.uniform(0.0, max(0.0, sh - ch))
    ox = rng.uniform(0.0, max(0.0, sw - cw))
    ys = (oy + np.arange(ch) + 0.5) / factor - 0.5
    xs = (ox + np.arange(cw) + 0.5) / factor - 0.5
    if cfg.hflip and rng.random() < 0.5:
        xs = xs[::-1]
    inside_y = (ys > -0.5) & (ys < h - 0.5)
    inside_x = (xs > -0.5) & (xs < w - 0.5)
    img = _bilinear_rows_cols(rgb.astype(np.float32) * (1.0 / 255.0), ys, xs)
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        b, c, s = rng.uniform(1.0 - j, 1.0 + j, size=3)
        img = img * b
        gray = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        img = (img - gray.mean()) * c + gray.mean()
        gray = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        img = np.clip(gray + (img - gray) * s, 0.0, 1.0)
    img = (img.transpose(2, 0, 1) - mean.reshape(3, 1, 1)) / std.reshape(3, 1, 1)
    inside = inside_y[:, None] & inside_x[None, :]
    img = np.where(inside[None], img, 0.0).astype(np.float32)
    ly = np.clip(np.floor(ys + 0.5), 0, h - 1).astype(np.int64)
    lx = np.clip(np.floor(xs + 0.5), 0, w - 1).astype(np.int64)
    lab = labels[ly[:, None], lx[None, :]].astype(np.int64)
    lab[~inside] = IGNORE
    return np.ascontiguousarray(img), lab


@dataclass
class LoadedSample:
    id: str
    image: np.ndarray  # uint8 (H, W, 3)
    labels: np.ndarray  # int64 (H, W), IGNORE = unlabelled


class SegmentationDataset:
    """Map-style dataset over a pseudo-labelled dataset folder.

    ``dataset[(index, epoch)]`` gives an augmented ``(image float32 (3,h,w), labels int64)``;
    ``dataset.load(index)`` the raw sample.
    """

    def __init__(self, root: str | Path, cfg: DataConfig | None = None, *, seed: int = 0,
                 mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> None:
        from dsseg_core.config import read_yaml
        from dsseg_core.errors import ConfigError

        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f'{self.root}: dataset folder not found')
        meta_path = self.root / 'dataset.yaml'
        if not meta_path.is_file():
            raise DatasetError(f'{meta_path}: missing; not a dsseg pseudo-labelled dataset')
        try:
            meta = read_yaml(meta_path) or {}
        except ConfigError as err:
            raise DatasetError(str(err)) from err
        try:
            self.num_classes = int(meta['num_classes'])
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f'{meta_path}: num_classes missing or not an integer') from err
        dtype = str(meta.get('label_dtype', 'uint8'))
        self.ignore_index = int(meta.get('ignore_index', 65535 if dtype == 'uint16' else 255))
        self.class_names = self._read_class_names()
        self.entries = read_index(self.root)
        self.cfg = cfg or DataConfig()
        self.seed = int(seed)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def _read_class_names(self) -> list[str]:
        from dsseg_core.config import read_yaml
        from dsseg_core.errors import ConfigError

        names = [f'class_{i:02d}' for i in range(self.num_classes)]
        path = self.root / 'classes.yaml'
        if path.is_file():
            try:
                data = read_yaml(path) or {}
            except ConfigError as err:
                raise DatasetError(str(err)) from err
            if isinstance(data, dict):
                for key, value in data.items():
                    try:
                        idx = int(key)
                    except (TypeError, ValueError):
                        continue
                    if 0 <= idx < self.num_classes:
                        names[idx] = str(value)
        return names

    def __len__(self) -> int:
        return len(self.entries)

    def validate(self) -> None:
        """Check every sample cheaply (files exist, PNG headers, sizes) before a run starts.

        Reads only image headers (``PIL.Image.open(...).size``), so it is fast even for large
        datasets; label values are still checked when a sample is loaded. Raises
        :class:`DatasetError` naming the first bad file and the ``index.jsonl`` line's id.
        """
        from PIL import Image

        for i, entry in enumerate(self.entries):
            sid = entry.get('id', i)
            sizes = {}
            for key in ('image', 'labels'):
                path = self.root / entry[key]
                if not path.is_file():
                    raise DatasetError(f'{path}: {key} file of sample {sid!r} listed in '
                                       f'{self.root / "index.jsonl"} is missing; restore it or '
                                       'remove the sample from the index')
                try:
                    with Image.open(path) as im:
                        sizes[key] = im.size
                        bands = len(im.getbands())
                except (OSError, ValueError) as err:
                    raise DatasetError(f'{path}: cannot read the {key} of sample {sid!r} '
                                       f'({err}); restore the file or remove the sample from '
                                       'the index') from err
                if key == 'labels' and bands != 1:
                    raise DatasetError(f'{path}: label image of sample {sid!r} has {bands} '
                                       'channels; expected a single-channel label PNG')
            if sizes['image'] != sizes['labels']:
                (iw, ih), (lw, lh) = sizes['image'], sizes['labels']
                raise DatasetError(f'{self.root / entry["labels"]}: label image {lw}x{lh} does '
                                   f'not match its image {iw}x{ih} (sample {sid!r}); expected '
                                   'one label per pixel')

    def load(self, index: int) -> LoadedSample:
        from PIL import Image

        entry = self.entries[index]
        image_path = self.root / entry['image']
        label_path = self.root / entry['labels']
        try:
            with Image.open(image_path) as im:
                rgb = np.asarray(im.convert('RGB'))
            with Image.open(label_path) as im:
                raw = np.asarray(im)
        except (OSError, ValueError) as err:
            raise DatasetError(f'{image_path} / {label_path}: cannot read sample '
                               f'{entry.get("id", index)!r}: {err}') from err
        if raw.ndim != 2 or raw.shape != rgb.shape[:2]:
            raise DatasetError(f'{label_path}: label image {raw.shape} does not match image '
                               f'{rgb.shape[:2]} (expected one single-channel label per pixel)')
        labels = raw.astype(np.int64)
        unlabelled = labels == self.ignore_index
        bad = ~unlabelled & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            raise DatasetError(f'{label_path}: label value {int(labels[bad][0])} outside '
                               f'0..{self.num_classes - 1} (dataset.yaml num_classes) and not '
                               f'ignore_index {self.ignore_index}')
        labels[unlabelled] = IGNORE
        return LoadedSample(id=str(entry.get('id', index)), image=rgb, labels=labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        index, epoch = (key, 0) if isinstance(key, (int, np.integer)) else key
        sample = self.load(int(index))
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        return augment(sample.image, sample.labels, self.cfg, rng, self.mean, self.std)


class StepBatchSampler:
    """Batches of ``(index, epoch)`` keys for steps ``start_step .. end_step - 1``.

    Epoch ``e`` visits a permutation drawn from ``(seed, e)``; each global batch of
    ``batch_size * world_size`` keys is split into per-rank slices (DDP sharding). Steps per
    epoch: ``max(1, len // global_batch)`` (the tail is dropped; tiny datasets repeat).
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, start_step: int,
                 end_step: int, rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1:
            raise DatasetError('the dataset has no samples')
        self.n = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.end_step = end_step
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = max(1, num_samples // self.global_batch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, 7919, epoch]).permutation(self.n)
        return np.resize(perm, self.steps_per_epoch * self.global_batch)

    def batch_for_step(self, step: int) -> list[tuple[int, int]]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        start = pos * self.global_batch + self.rank * self.batch_size
        return [(int(i), epoch) for i in order[start:start + self.batch_size]]

    def __iter__(self):  # noqa: ANN204
        for step in range(self.start_step, self.end_step):
            yield self.batch_for_step(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

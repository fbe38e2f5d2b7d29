"""Evaluation of a segmenter against labelled images, with matching of pseudo-classes.

Ground truth:

* Cityscapes layout: ``*_gtFine_labelIds.png`` mapped to the 19 trainId classes
  (``cityscapes19``) or the 27-class protocol of unsupervised segmentation work
  (``cityscapes27``: label ids 7..33); ``*_gtFine_labelTrainIds.png`` are used as they are
  (``trainids``). Images ``<name>_leftImg8bit.png`` pair with ``<name>_gtFine_*.png``.
* Generic: a folder of single-channel label PNGs (255 = unlabelled) and a class list YAML
  (``{id: name}`` or a list of names; default ``classes.yaml`` in the ground-truth folder).
  Images pair by file stem.

Predicted (pseudo-)classes are matched to ground-truth classes over the whole set
(:mod:`dsseg_core.matching`: Hungarian one-to-one or many-to-one). The policy for unmatched
predicted classes is stated in every output: ``wrong`` (strict: their pixels count as misses)
or ``ignore`` (lenient, as in the released Drive&Segment code: their pixels are dropped).

Outputs (``write_outputs``): ``metrics.json``, ``confusion.png`` (ground truth rows,
matched prediction columns, row-normalised) and ``naming.yaml`` (``{pseudo id: gt class
name}``, the format of ``classes.yaml`` that the nodes read).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import yaml
from pydantic import Field

from dsseg_core.atomic import atomic_path, write_text_atomic
from dsseg_core.config import StageConfig, read_yaml
from dsseg_core.errors import ConfigError, DatasetError

__all__ = [
    'CITYSCAPES19_NAMES',
    'CITYSCAPES27_NAMES',
    'EvalConfig',
    'EvalResult',
    'GroundTruth',
    'evaluate_pairs',
    'evaluate_predictor',
    'find_ground_truth',
    'write_outputs',
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')

CITYSCAPES19_NAMES = [
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
    'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
    'motorcycle', 'bicycle']
# labelId -> trainId for the 19 evaluated classes (Cityscapes scripts, labels.py).
CITYSCAPES19_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
CITYSCAPES27_NAMES = [
    'road', 'sidewalk', 'parking', 'rail track', 'building', 'wall', 'fence', 'guard rail',
    'bridge', 'tunnel', 'pole', 'polegroup', 'traffic light', 'traffic sign', 'vegetation',
    'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'caravan', 'trailer', 'train',
    'motorcycle', 'bicycle']

GtFormat = Literal['auto', 'cityscapes19', 'cityscapes27', 'trainids', 'generic']


class EvalConfig(StageConfig):
    """Evaluation settings (section ``eval``)."""

    policy: Literal['hungarian', 'many_to_one'] = 'hungarian'
    unmatched: Literal['wrong', 'ignore'] = Field(
        default='wrong', description='pixels of unmatched predicted classes: counted as misses '
                                     '(strict) or dropped (lenient, released D&S code)')
    gt_format: GtFormat = 'auto'
    classes: str | None = Field(default=None, description='class list YAML (generic format)')
    ignore_index: int = 255


class SupportsPredict(Protocol):
    num_classes: int
    class_names: list[str]

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _lut(pairs: Iterable[tuple[int, int]], ignore: int = 255) -> np.ndarray:
    lut = np.full(65536, ignore, dtype=np.int64)
    for src, dst in pairs:
        lut[src] = dst
    return lut


@dataclass
class GroundTruth:
    """Ground-truth files keyed by sample name, their class names and the label mapping."""

    files: dict[str, Path]
    class_names: list[str]
    fmt: str
    lut: np.ndarray | None = None  # raw value -> class index (255 = ignore); None: identity
    ignore_index: int = 255

    def read(self, key: str) -> np.ndarray:
        from PIL import Image

        path = self.files[key]
        try:
            with Image.open(path) as im:
                raw = np.asarray(im)
        except OSError as err:
            raise DatasetError(f'{path}: cannot read ground-truth label image ({err})') from err
        if raw.ndim != 2:
            raise DatasetError(f'{path}: ground truth must be a single-channel label PNG, got '
                               f'shape {raw.shape}')
        labels = raw.astype(np.int64)
        if self.lut is not None:
            labels = self.lut[labels]
        else:
            labels[labels == self.ignore_index] = 255
        return labels


def _read_class_list(path: Path) -> list[str]:
    data = read_yaml(path)
    if isinstance(data, dict) and 'classes' in data:
        data = data['classes']
    if isinstance(data, list):
        return [str(v) for v in data]
    if isinstance(data, dict):
        try:
            items = sorted((int(k), str(v)) for k, v in data.items())
        except (TypeError, ValueError) as err:
            raise ConfigError(f'{path}: class ids must be integers') from err
        if [k for k, _ in items] != list(range(len(items))):
            raise ConfigError(f'{path}: class ids must be 0..N-1 without gaps')
        return [v for _, v in items]
    raise ConfigError(f'{path}: expected a list of class names or a mapping {{id: name}}')


def find_ground_truth(gt_dir: str | Path, cfg: EvalConfig | None = None) -> GroundTruth:
    """Discover ground-truth label files and decide the protocol (``cfg.gt_format``)."""
    cfg = cfg or EvalConfig()
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise DatasetError(f'{gt_dir}: ground-truth folder not found')
    label_ids = {p.name[:-len('_gtFine_labelIds.png')]: p
                 for p in gt_dir.rglob('*_gtFine_labelIds.png')}
    train_ids = {p.name[:-len('_gtFine_labelTrainIds.png')]: p
                 for p in gt_dir.rglob('*_gtFine_labelTrainIds.png')}
    fmt = cfg.gt_format
    if fmt == 'auto':
        fmt = 'cityscapes19' if label_ids else 'trainids' if train_ids else 'generic'
    if fmt in ('cityscapes19', 'cityscapes27'):
        if not label_ids:
            raise DatasetError(f'{gt_dir}: no *_gtFine_labelIds.png files for {fmt}')
        if fmt == 'cityscapes19':
            lut = _lut((src, i) for i, src in enumerate(CITYSCAPES19_IDS))
            names = CITYSCAPES19_NAMES
        else:
            lut = _lut((src, src - 7) for src in range(7, 34))
            names = CITYSCAPES27_NAMES
        return GroundTruth(label_ids, list(names), fmt, lut)
    if fmt == 'trainids':
        if not train_ids:
            raise DatasetError(f'{gt_dir}: no *_gtFine_labelTrainIds.png files')
        return GroundTruth(train_ids, list(CITYSCAPES19_NAMES), fmt, None, cfg.ignore_index)
    classes = Path(cfg.classes) if cfg.classes else gt_dir / 'classes.yaml'
    if not classes.is_file():
        raise ConfigError(f'{classes}: class list not found; generic ground truth needs a YAML '
                          'list of class names (pass --classes FILE)')
    files = {p.stem: p for p in sorted(gt_dir.rglob('*.png'))}
    if not files:
        raise DatasetError(f'{gt_dir}: no label PNGs found')
    return GroundTruth(files, _read_class_list(classes), 'generic', None, cfg.ignore_index)


def image_key(path: Path) -> str:
    """Sample name of an image: ``X_leftImg8bit.png`` → ``X``, otherwise the stem."""
    name = path.stem
    return name[:-len('_leftImg8bit')] if name.endswith('_leftImg8bit') else name


def find_images(images_dir: str | Path | None = None, dataset_dir: str | Path | None = None
                ) -> dict[str, Path]:
    """Images keyed by sample name, from a folder or a pseudo-labelled dataset's index."""
    if (images_dir is None) == (dataset_dir is None):
        raise ConfigError('give exactly one of --images DIR or --dataset DIR')
    if dataset_dir is not None:
        from dsseg_core.segmenter.data import read_index

        root = Path(dataset_dir)
        return {str(e.get('id', Path(e['image']).stem)): root / e['image']
                for e in read_index(root)}
    root = Path(images_dir)
    if not root.is_dir():
        raise DatasetError(f'{root}: image folder not found')
    return {image_key(p): p for p in sorted(root.rglob('*'))
            if p.suffix.lower() in IMAGE_SUFFIXES}


@dataclass
class EvalResult:
    """Scores after matching over the whole set."""

    confusion: np.ndarray  # (P, G) raw counts, rows = predicted class
    mapping: np.ndarray  # (P,) predicted class -> gt class (-1 unmatched)
    iou: np.ndarray  # (G,) NaN where absent
    miou: float
    pixel_acc: float
    policy: str
    unmatched: str
    pred_names: list[str]
    gt_names: list[str]
    num_images: int
    extra: dict[str, Any] = field(default_factory=dict)

    def naming(self) -> dict[int, str]:
        """``{pseudo id: gt class name}``; unmatched keep their own name."""
        return {p: (self.gt_names[g] if g >= 0 else self.pred_names[p])
                for p, g in enumerate(self.mapping.tolist())}

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 6)

        return {
            'miou': num(self.miou), 'pixel_accuracy': num(self.pixel_acc),
            'policy': self.policy, 'unmatched_policy': self.unmatched,
            'unmatched_policy_meaning': (
                'pixels of unmatched predicted classes count as misses of their gt class'
                if self.unmatched == 'wrong' else
                'pixels of unmatched predicted classes are left out (lenient)'),
            'num_images': self.num_images,
            'per_class_iou': {n: num(v) for n, v in zip(self.gt_names, self.iou, strict=True)},
            'mapping': {str(p): (self.gt_names[g] if g >= 0 else None)
                        for p, g in enumerate(self.mapping.tolist())},
            'unmatched_classes': [p for p, g in enumerate(self.mapping.tolist()) if g < 0],
            **self.extra,
        }


def evaluate_pairs(pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_pred: int,
                   gt_names: list[str], pred_names: list[str] | None = None,
                   policy: str = 'hungarian', unmatched: str = 'wrong') -> EvalResult:
    """Accumulate ``(pred, gt)`` label images (gt 255 = ignore) and score with matching."""
    from dsseg_core.matching import confusion_matrix, evaluate_matching

    num_gt = len(gt_names)
    conf = np.zeros((num_pred, num_gt), dtype=np.int64)
    count = 0
    for pred, gt in pairs:
        conf += confusion_matrix(pred, gt, num_pred, num_gt, ignore_gt=255)
        count += 1
    scores = evaluate_matching(conf, policy=policy, unmatched=unmatched)
    names = pred_names or [f'class_{i:02d}' for i in range(num_pred)]
    return EvalResult(confusion=conf, mapping=scores.mapping, iou=scores.iou, miou=scores.miou,
                      pixel_acc=scores.pixel_acc, policy=policy, unmatched=unmatched,
                      pred_names=list(names), gt_names=list(gt_names), num_images=count)


def _pairs(predictor: SupportsPredict, gt: GroundTruth, images: dict[str, Path],
           keys: list[str], progress: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from PIL import Image
    from tqdm import tqdm

    for key in tqdm(keys, desc='eval', unit='img', disable=None if progress else True):
        path = images[key]
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert('RGB'))
        except OSError as err:
            raise DatasetError(f'{path}: cannot read image ({err})') from err
        labels = gt.read(key)
        if labels.shape != rgb.shape[:2]:
            raise DatasetError(f'{gt.files[key]}: ground truth {labels.shape} and image {path} '
                               f'{rgb.shape[:2]} differ in size')
        ids, _ = predictor.predict(rgb)
        yield ids, labels


def evaluate_predictor(predictor: SupportsPredict, gt_dir: str | Path, *,
                       images_dir: str | Path | None = None,
                       dataset_dir: str | Path | None = None,
                       cfg: EvalConfig | None = None, progress: bool = False) -> EvalResult:
    """Run ``predictor`` on every image that has ground truth and score it."""
    cfg = cfg or EvalConfig()
    gt = find_ground_truth(gt_dir, cfg)
    images = find_images(images_dir, dataset_dir)
    keys = sorted(set(gt.files) & set(images))
    if not keys:
        raise DatasetError(f'no image in {images_dir or dataset_dir} has ground truth in '
                           f'{gt_dir} (images pair with labels by file name)')
    missing = len(gt.files) - len(keys)
    if missing:
        log.warning('%d ground-truth files have no image and are skipped', missing)
    result = evaluate_pairs(_pairs(predictor, gt, images, keys, progress),
                            predictor.num_classes, gt.class_names, predictor.class_names,
                            cfg.policy, cfg.unmatched)
    result.extra.update({'gt_format': gt.fmt, 'gt_dir': str(gt_dir),
                         'skipped_gt_without_image': missing})
    return result


def confusion_image(result: EvalResult, cell: int = 12) -> Any:
    """Row-normalised ``(G, G)`` confusion (gt rows, matched prediction columns) as an image."""
    from PIL import Image, ImageDraw

    from dsseg_core.matching import remap_confusion

    folded = remap_confusion(result.confusion, result.mapping, 'wrong')  # (G + 1, G)
    mat = folded.T.astype(np.float64)  # rows gt, cols predicted gt class (+ unmatched)
    with np.errstate(invalid='ignore', divide='ignore'):
        norm = np.nan_to_num(mat / mat.sum(axis=1, keepdims=True))
    g, p = norm.shape
    heat = (255 * (1.0 - norm)).astype(np.uint8)
    rgb = np.stack([heat, heat, np.full_like(heat, 255)], axis=-1)
    rgb = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    margin = 6 * max(len(n) for n in result.gt_names + ['unmatched']) + 10
    canvas = Image.new('RGB', (margin + p * cell + 2, margin + g * cell + 2), 'white')
    canvas.paste(Image.fromarray(rgb), (margin, margin))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(result.gt_names):
        draw.text((2, margin + i * cell), name, fill='black')
    cols = Image.new('RGB', (margin, p * cell), 'white')
    cdraw = ImageDraw.Draw(cols)
    for j, name in enumerate(result.gt_names + ['unmatched']):
        cdraw.text((2, j * cell), name, fill='black')
    canvas.paste(cols.rotate(90, expand=True), (margin, 0))
    return canvas


def write_outputs(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """``metrics.json``, ``confusion.png`` and ``naming.yaml`` in ``out_dir`` (atomic)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {'metrics': out_dir / 'metrics.json', 'confusion': out_dir / 'confusion.png',
             'naming': out_dir / 'naming.yaml'}
    write_text_atomic(paths['metrics'], json.dumps(result.to_dict(), indent=1))
    with atomic_path(paths['confusion']) as tmp:
        confusion_image(result).save(tmp, format='PNG')
    header = (f'# pseudo-class id -> ground-truth class name ({result.policy} matching; '
              f'unmatched pseudo-classes keep their own name)\n')
    write_text_atomic(paths['naming'], header + yaml.safe_dump(
        result.naming(), sort_keys=False, allow_unicode=True))
    return paths

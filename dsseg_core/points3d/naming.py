"""Open-vocabulary naming of pseudo-classes with CLIP (``dsseg name-classes``).

Each pseudo-class is represented by its gallery crops; each vocabulary class by the CLIP text
embeddings of its prompts (x prompt templates, averaged). Every crop votes with its softmax
over the vocabulary (CLIP's logit scale); a pseudo-class takes the name with the highest mean
probability (``assignment='argmax'``, several pseudo-classes may share a name) or a one-to-one
Hungarian assignment (``'hungarian'``). The result is a naming YAML ``{class_id: name}``
(the same shape as a dataset's ``classes.yaml``) plus the scores.

Gallery layouts accepted (first match wins):

* ``GALLERY/crops/<class_id>/*.png`` (or ``GALLERY/<class_id>/*.png``; a folder name's leading
  digits or ``class_XX`` give the id) — plain image crops;
* ``GALLERY/tiles/class_XX_N.png`` as written by ``dsseg gallery``
  (:mod:`dsseg_core.pseudolabel.gallery`): the left ``CROP_W`` columns (the image crop) are
  used, the LiDAR views are cut off.

CLIP: ``open_clip.create_model(name, pretrained=TAG|FILE)`` — a hub tag needs the weights in
the local cache (no download on the car), a file path loads local weights; ``name`` may also
be a path to an open_clip model-config JSON (registered with ``open_clip.add_model_config``).
Preprocessing is done here with numpy/PIL (resize, centre crop, the model's mean/std), not
with open_clip's torchvision transforms.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field

from dsseg_core.atomic import write_text_atomic
from dsseg_core.config import StageConfig, read_yaml
from dsseg_core.errors import ConfigError, DatasetError, DependencyError, ModelError

__all__ = [
    'ClipBundle',
    'NamingConfig',
    'NamingResult',
    'load_clip',
    'load_vocabulary',
    'name_classes',
    'preprocess_images',
    'read_gallery',
    'write_naming',
]

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class NamingConfig(StageConfig):
    """Section ``naming``."""

    clip_model: str = 'ViT-B-16'
    pretrained: str | None = Field(
        'laion2b_s34b_b88k', description='open_clip tag (local cache) or weights file; '
                                         'None = random init (tests only)')
    templates: list[str] = Field(default_factory=lambda: [
        'a photo of a {}.', 'a photo of the {} in a street scene.', 'a cropped photo of a {}.',
        'a blurry photo of a {}.'])
    assignment: Literal['argmax', 'hungarian'] = 'argmax'
    max_crops_per_class: int = Field(32, ge=1)
    resize_mode: Literal['shortest', 'squash'] = 'shortest'
    batch_size: int = Field(32, ge=1)
    device: str = 'cpu'
    keep_names: list[int] = Field(default_factory=list,
                                  description='class ids whose current name is kept')


@dataclass
class ClipBundle:
    """A CLIP model with its tokenizer and input normalisation."""

    model: Any
    tokenizer: Any
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str = 'cpu'


@dataclass
class NamingResult:
    names: dict[int, str]  # pseudo-class id -> vocabulary name (only classes with crops)
    scores: np.ndarray  # (num named classes, K) mean probability per vocabulary name
    class_ids: list[int]
    vocabulary: list[str]
    num_crops: dict[int, int] = field(default_factory=dict)


def load_vocabulary(path: str | Path) -> dict[str, list[str]]:
    """``{name: [prompts]}`` from a YAML (``{classes: {name: [prompts]}}`` or top-level)."""
    data = read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get('classes'), dict):
        data = data['classes']
    if not isinstance(data, dict) or not data:
        raise ConfigError(f'{path}: expected a mapping name -> list of prompts '
                          '(optionally under "classes:")')
    vocab: dict[str, list[str]] = {}
    for name, prompts in data.items():
        if prompts is None:
            prompts = [str(name)]
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f'{path}: class {name!r}: prompts must be a list of strings')
        vocab[str(name)] = [p for p in prompts if p.strip()] or [str(name)]
    return vocab


def _class_id(name: str) -> int | None:
    m = re.match(r'^(?:class_?)?(\d+)', name)
    return int(m.group(1)) if m else None


IMAGE_EXT = ('.png', '.jpg', '.jpeg')


def read_gallery(folder: str | Path) -> dict[int, list[tuple[Path, bool]]]:
    """``{class_id: [(image path, is_gallery_tile)]}`` (see module doc for the layouts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f'{folder}: gallery folder not found (create it with dsseg gallery '
                           'or put crops in <folder>/crops/<class_id>/*.png)')
    out: dict[int, list[tuple[Path, bool]]] = {}
    base = folder / 'crops' if (folder / 'crops').is_dir() else folder
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        cid = _class_id(sub.name)
        if cid is None:
            continue
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_EXT)
        if files:
            out.setdefault(cid, []).extend((f, False) for f in files)
    if not out and (folder / 'tiles').is_dir():
        for f in sorted((folder / 'tiles').iterdir()):
            m = re.match(r'^class_(\d+)_\d+$', f.stem)
            if m and f.suffix.lower() in IMAGE_EXT:
                out.setdefault(int(m.group(1)), []).append((f, True))
    if not out:
        raise DatasetError(f'{folder}: no crops found (expected crops/<class_id>/*.png, '
                           '<class_id>/*.png or tiles/class_XX_N.png from dsseg gallery)')
    return out


def _load_image(path: Path, is_tile: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert('RGB'))
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f'{path}: cannot read image ({err})') from err
    if is_tile:
        from dsseg_core.pseudolabel.gallery import CROP_W

        arr = arr[:, :CROP_W]
        nz = np.flatnonzero(arr.reshape(arr.shape[0], -1).any(axis=1))  # drop black bars
        cols = np.flatnonzero(arr.any(axis=(0, 2)))
        if nz.size and cols.size:
            arr = arr[nz[0]:nz[-1] + 1, cols[0]:cols[-1] + 1]
    return arr


def preprocess_images(images: list[np.ndarray], size: tuple[int, int],
                      mean: tuple[float, ...], std: tuple[float, ...],
                      mode: str = 'shortest') -> np.ndarray:
    """``(B, 3, H, W) float32``: resize (shortest side + centre crop, or squash), normalise."""
    from PIL import Image

    h, w = size
    out = np.empty((len(images), 3, h, w), np.float32)
    for i, arr in enumerate(images):
        img = Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8))
        if mode == 'shortest':
            scale = max(h / img.height, w / img.width)
            nw, nh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
            img = img.resize((nw, nh), Image.BICUBIC)
            x0, y0 = (nw - w) // 2, (nh - h) // 2
            img = img.crop((x0, y0, x0 + w, y0 + h))
        else:
            img = img.resize((w, h), Image.BICUBIC)
        a = np.asarray(img, np.float32) / 255.0
        out[i] = ((a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(
            2, 0, 1)
    return out


def load_clip(name: str, pretrained: str | None, device: str = 'cpu') -> ClipBundle:
    """Build an open_clip model; ``name`` = registered model name or a model-config JSON."""
    try:
        import open_clip
    except ImportError as err:
        raise DependencyError('open_clip is not installed; pip install open_clip_torch '
                              '(needed by dsseg name-classes)') from err
    model_name = name
    if name.endswith('.json'):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f'{path}: CLIP model config not found')
        open_clip.add_model_config(path)
        model_name = path.stem
    if pretrained is not None and (Path(pretrained).suffix or '/' in pretrained) and \
            not Path(pretrained).is_file():
        raise ModelError(f'{pretrained}: CLIP weights file not found')
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except RuntimeError as err:
        raise ModelError(
            f'CLIP {model_name!r} with pretrained={pretrained!r} could not be loaded: '
            f'{str(err)[:300]}; without internet give --pretrained a local weights file '
            '(or pre-fill the open_clip/Hugging Face cache)') from err
    except Exception as err:  # unknown model names etc.
        raise ModelError(f'CLIP {model_name!r}: {err}; list models with '
                         'python -c "import open_clip; print(open_clip.list_models())"') from err
    model.eval()
    pcfg = getattr(model.visual, 'preprocess_cfg', None) or {}
    size = pcfg.get('size') or getattr(model.visual, 'image_size', 224)
    if isinstance(size, int):
        size = (size, size)
    return ClipBundle(model, tokenizer, (int(size[0]), int(size[1])),
                      tuple(pcfg.get('mean', OPENAI_MEAN)), tuple(pcfg.get('std', OPENAI_STD)),
                      device)


def _normalise(x: Any) -> Any:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def text_embeddings(bundle: ClipBundle, vocabulary: dict[str, list[str]],
                    templates: list[str]) -> np.ndarray:
    """``(K, D)`` unit text embedding per vocabulary class (mean over prompts x templates)."""
    import torch

    rows = []
    with torch.no_grad():
        for prompts in vocabulary.values():
            texts = [t.format(p) if '{}' in t else f'{t} {p}' for p in prompts
                     for t in (templates or ['{}'])]
            tokens = bundle.tokenizer(texts)
            if hasattr(tokens, 'to'):
                tokens = tokens.to(bundle.device)
            emb = _normalise(bundle.model.encode_text(tokens).float())
            rows.append(_normalise(emb.mean(dim=0)))
    return torch.stack(rows).float().cpu().numpy()


def image_embeddings(bundle: ClipBundle, images: list[np.ndarray], batch_size: int = 32,
                     mode: str = 'shortest') -> np.ndarray:
    """``(B, D)`` unit image embeddings."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = preprocess_images(images[s:s + batch_size], bundle.image_size, bundle.mean,
                                  bundle.std, mode)
            emb = bundle.model.encode_image(torch.from_numpy(x).to(bundle.device))
            out.append(_normalise(emb).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def name_classes(gallery: str | Path, vocabulary: dict[str, list[str]], bundle: ClipBundle,
                 cfg: NamingConfig | None = None) -> NamingResult:
    """Name every pseudo-class that has crops in ``gallery`` (see module doc)."""
    cfg = cfg or NamingConfig()
    crops = read_gallery(gallery)
    vocab_names = list(vocabulary)
    text = text_embeddings(bundle, vocabulary, cfg.templates)
    scale = float(bundle.model.logit_scale.exp().item()) \
        if hasattr(bundle.model, 'logit_scale') else 100.0
    class_ids = sorted(c for c in crops if c not in cfg.keep_names)
    scores = np.zeros((len(class_ids), len(vocab_names)), np.float64)
    counts = {}
    for row, cid in enumerate(class_ids):
        files = crops[cid][:cfg.max_crops_per_class]
        images = [_load_image(p, tile) for p, tile in files]
        emb = image_embeddings(bundle, images, cfg.batch_size, cfg.resize_mode)
        logits = scale * emb @ text.T
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        scores[row] = prob.mean(axis=0)
        counts[cid] = len(files)
    if cfg.assignment == 'hungarian' and class_ids:
        from scipy.optimize import linear_sum_assignment

        if len(vocab_names) < len(class_ids):
            raise ConfigError(f'naming.assignment=hungarian needs at least as many vocabulary '
                              f'names ({len(vocab_names)}) as classes ({len(class_ids)}); '
                              'use argmax')
        r, c = linear_sum_assignment(-np.log(scores + 1e-12))
        pick = dict(zip(r.tolist(), c.tolist(), strict=True))
    else:
        pick = {r: int(np.argmax(scores[r])) for r in range(len(class_ids))}
    names = {cid: vocab_names[pick[r]] for r, cid in enumerate(class_ids)}
    return NamingResult(names, scores.astype(np.float32), class_ids, vocab_names, counts)


def write_naming(path: str | Path, result: NamingResult,
                 base_names: dict[int, str] | None = None) -> None:
    """Write ``{class_id: name}`` (base names for classes without crops) and, next to it,
    ``<stem>.scores.yaml`` with the top-3 candidates and their probabilities per class."""
    path = Path(path)
    names = dict(base_names or {})
    names.update(result.names)
    header = ('# Pseudo-class names from CLIP (dsseg name-classes). Edit freely; the\n'
              '# candidates and scores are in the .scores.yaml file next to this one.\n')
    write_text_atomic(path, header + yaml.safe_dump(
        {int(k): str(v) for k, v in sorted(names.items())}, sort_keys=False))
    detail = {}
    for row, cid in enumerate(result.class_ids):
        order = np.argsort(-result.scores[row])[:3]
        detail[int(cid)] = {
            'crops': int(result.num_crops.get(cid, 0)),
            'top': [{result.vocabulary[k]: round(float(result.scores[row, k]), 4)}
                    for k in order]}
    write_text_atomic(path.with_name(path.stem + '.scores.yaml'),
                      yaml.safe_dump(detail, sort_keys=False))

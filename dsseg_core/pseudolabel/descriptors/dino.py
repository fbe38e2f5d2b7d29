"""DINO ViT-S/16 segment descriptors: patch tokens pooled over each segment's mask.

* Model: ``timm.create_model(cfg.model_name, pretrained=True, dynamic_img_size=True)`` (weights
  from the Hugging Face hub cache), or, with ``checkpoint_path``, the same architecture with
  random init then the local weights (``.safetensors`` via safetensors, anything else via
  ``torch.load(weights_only=True)``; original DINO keys are converted by timm's
  ``checkpoint_filter_fn``). Missing/unexpected keys raise :class:`CheckpointError`.
* Normalisation: ``mean``/``std`` from ``model.pretrained_cfg``.
* Features: last-block patch tokens from ``forward_intermediates(..., norm=True,
  output_fmt='NCHW', intermediates_only=True)``; the image is padded (bottom/right, zeros after
  normalisation) to a multiple of the patch size so pixels stay aligned with the patch grid.
* Pooling (:func:`pool_patch_features`): masked mean at patch resolution, each patch weighted
  by the fraction of its pixels inside the mask (coverage). A segment smaller than a patch still
  gets the features of the patch(es) it touches. Sums and weights are returned separately so
  several cameras combine exactly.

torch and timm are imported inside functions only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from dsseg_core.config import StageConfig
from dsseg_core.errors import CheckpointError, DependencyError, ModelError

__all__ = ['DinoConfig', 'DinoExtractor', 'load_dino_model', 'pool_patch_features']

log = logging.getLogger(__name__)


class DinoConfig(StageConfig):
    """DINO descriptor settings (``enabled: false`` → weight-free descriptors only)."""

    enabled: bool = False
    model_name: str = 'vit_small_patch16_224.dino'
    pretrained: bool = Field(True, description='download/cached hub weights when no checkpoint')
    checkpoint_path: str | None = None
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description='extra timm.create_model arguments (e.g. depth)')
    image_scale: float = Field(1.0, gt=0, le=4, description='resize factor before the ViT')
    device: str = 'cpu'


def _import_torch_timm() -> tuple[Any, Any]:
    try:
        import timm
        import torch
    except ImportError as err:
        raise DependencyError(
            f'DINO descriptors need torch and timm ({err}); install them or set '
            'descriptors.dino.enabled: false for weight-free descriptors') from err
    return torch, timm


def _one_line(err: BaseException, limit: int = 120) -> str:
    """``Type: first line of the message`` (loaders like torch.load write whole paragraphs)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else ''
    # torch.load(weights_only=True) wraps the real reason in a paragraph of advice (including
    # "retry with weights_only=False", which we never do): keep only the reason
    marker = [i for i, ln in enumerate(lines) if 'WeightsUnpickler error' in ln]
    if marker:
        after = lines[marker[0]].split('WeightsUnpickler error:', 1)[-1].strip()
        if not after and marker[0] + 1 < len(lines):
            after = lines[marker[0] + 1]
        text = after or 'unpickler error'
    if len(text) > limit:
        text = text[:limit - 3].rstrip() + '...'
    return f'{type(err).__name__}: {text}' if text else type(err).__name__


def _load_state_dict(path: Path) -> dict:
    torch, _ = _import_torch_timm()
    if not path.exists():
        raise CheckpointError(f'{path}: DINO checkpoint not found (descriptors.dino.'
                              'checkpoint_path)')
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - any loader failure is a bad checkpoint
        raise CheckpointError(
            f'{path}: not a readable DINO checkpoint ({_one_line(err)}); point '
            '--dino-checkpoint / descriptors.dino.checkpoint_path at a ViT state dict saved '
            'as .pth (torch.save) or .safetensors') from err
    for key in ('state_dict', 'model', 'teacher', 'student'):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: expected a state dict, got {type(state).__name__}')
    # strip DDP / DINO wrapper prefixes
    state = {k.removeprefix('module.').removeprefix('backbone.'): v for k, v in state.items()}
    return state


def load_dino_model(cfg: DinoConfig) -> Any:
    """The ViT in eval mode on ``cfg.device`` (see module doc for the weight sources)."""
    torch, timm = _import_torch_timm()
    use_hub = cfg.pretrained and not cfg.checkpoint_path
    try:
        model = timm.create_model(cfg.model_name, pretrained=use_hub, num_classes=0,
                                  dynamic_img_size=True, **cfg.model_kwargs)
    except Exception as err:  # noqa: BLE001 - timm raises many types (hub, unknown name)
        raise ModelError(
            f'cannot create {cfg.model_name!r} (pretrained={use_hub}): {err}. Without network '
            'access set descriptors.dino.checkpoint_path to a local .safetensors/.pth file, '
            'or descriptors.dino.enabled: false') from err
    if cfg.checkpoint_path:
        path = Path(cfg.checkpoint_path).expanduser()
        state = _load_state_dict(path)
        try:
            from timm.models.vision_transformer import checkpoint_filter_fn

            state = checkpoint_filter_fn(state, model)
        except Exception as err:  # noqa: BLE001
            log.debug('checkpoint_filter_fn did not apply: %s', err)
        state = {k: v for k, v in state.items() if not k.startswith('head.')}
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise CheckpointError(
                f'{path}: does not match {cfg.model_name}: '
                f'{str(err).splitlines()[1:3]}; check model_name / model_kwargs') from err
        missing = [k for k in result.missing_keys if not k.startswith('head.')]
        if missing or result.unexpected_keys:
            raise CheckpointError(
                f'{path}: does not match {cfg.model_name}: missing keys {missing[:5]}, '
                f'unexpected keys {list(result.unexpected_keys)[:5]}; check model_name')
    model.eval()
    return model.to(torch.device(cfg.device))


def pool_patch_features(
    features: np.ndarray, segment_map: np.ndarray, patch: int, num_segments: int
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage-weighted sums of patch features per segment.

    ``features (C, gh, gw)``, ``segment_map (H, W)`` int (``-1`` none) with ``H <= gh*patch``,
    ``W <= gw*patch`` (the map is aligned with the top-left of the patch grid). Returns
    ``(weighted_sum (S, C) float64, weight (S,) float64)``; the masked mean is
    ``weighted_sum / weight`` with ``weight[s] = Σ_patches coverage(s, patch)``.
    """
    c, gh, gw = features.shape
    h, w = segment_map.shape
    if h > gh * patch or w > gw * patch:
        raise ValueError(f'segment map {h}x{w} exceeds patch grid {gh}x{gw} of {patch} px')
    total = np.zeros((num_segments, c))
    weight = np.zeros(num_segments)
    ys, xs = np.nonzero((segment_map >= 0) & (segment_map < num_segments))
    if num_segments == 0 or len(ys) == 0:
        return total, weight
    seg = segment_map[ys, xs].astype(np.int64)
    pidx = (ys // patch) * gw + xs // patch
    npatch = gh * gw
    key, counts = np.unique(seg * npatch + pidx, return_counts=True)
    s, pi = key // npatch, key % npatch
    cov = counts / float(patch * patch)
    flat = features.reshape(c, npatch).T.astype(np.float64)  # (P, C)
    np.add.at(total, s, flat[pi] * cov[:, None])
    weight[:] = np.bincount(s, weights=cov, minlength=num_segments)
    return total, weight


class DinoExtractor:
    """Callable: ``(image uint8 HxWx3, segment_map, num_segments) -> (sum, weight)``."""

    def __init__(self, cfg: DinoConfig, model: Any | None = None) -> None:
        self.cfg = cfg
        self.model = model if model is not None else load_dino_model(cfg)
        pcfg = getattr(self.model, 'pretrained_cfg', None) or {}
        self.mean = np.asarray(pcfg.get('mean', (0.485, 0.456, 0.406)), dtype=np.float32)
        self.std = np.asarray(pcfg.get('std', (0.229, 0.224, 0.225)), dtype=np.float32)
        ps = self.model.patch_embed.patch_size
        self.patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        self.dim = int(getattr(self.model, 'embed_dim', getattr(self.model, 'num_features', 0)))

    def patch_features(self, image: np.ndarray) -> np.ndarray:
        """``(C, gh, gw)`` float32 last-block patch tokens of a padded, normalised image."""
        torch, _ = _import_torch_timm()
        img = np.asarray(image, dtype=np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = (img[..., :3] - self.mean) / self.std
        h, w = img.shape[:2]
        ph = -h % self.patch
        pw = -w % self.patch
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            feats = self.model.forward_intermediates(
                x.to(device), indices=1, norm=True, output_fmt='NCHW', intermediates_only=True)
        return feats[-1][0].float().cpu().numpy()

    def __call__(self, image: np.ndarray, segment_map: np.ndarray, num_segments: int
                 ) -> tuple[np.ndarray, np.ndarray]:
        scale = self.cfg.image_scale
        if scale != 1.0:
            from PIL import Image

            h, w = segment_map.shape
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(np.asarray(image)).resize(size, Image.BILINEAR))
            # nearest for the map: keep ids; -1 survives via an offset into uint32 space
            seg = Image.fromarray((segment_map + 1).astype(np.int32), mode='I')
            segment_map = np.asarray(seg.resize(size, Image.NEAREST), dtype=np.int64) - 1
        feats = self.patch_features(image)
        return pool_patch_features(feats, segment_map, self.patch, num_segments)

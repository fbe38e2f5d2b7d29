"""Segmenter-style network: a timm ViT backbone plus a mask-transformer or linear decoder.

The backbone is ``timm.create_model(name, pretrained=..., num_classes=0,
dynamic_img_size=True, **backbone_kwargs)``; its patch tokens come from the public
``forward_intermediates`` API (last block, final norm applied). Position embeddings are
interpolated by timm for any input size; the input is padded (right/bottom) to a multiple of
the patch size and the logits are cropped back, so any ``H x W`` works.

The mask-transformer decoder follows Segmenter (Strudel et al.): learned class tokens attend
jointly with the projected patch tokens; masks are the cosine similarity of L2-normalised
projected patch and class embeddings, then a LayerNorm over classes, at 1/patch resolution,
bilinearly upsampled to the input size.

``forward(x)`` takes a normalised float batch ``(B, 3, H, W)`` and returns logits
``(B, num_classes, H, W)``. Normalisation constants are exposed as ``model.mean`` /
``model.std`` (from the backbone's ``pretrained_cfg``), the patch size as ``model.patch_size``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from dsseg_core.config import StageConfig
from dsseg_core.errors import CheckpointError, DependencyError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ['SegmenterConfig', 'build_segmenter', 'fixed_size_copy', 'read_state_dict',
           'tiny_config']

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmenterConfig(StageConfig):
    """Network architecture (section ``model`` of the training config)."""

    backbone: str = 'vit_small_patch16_224.dino'
    pretrained: bool = True
    checkpoint: str | None = Field(
        default=None,
        description='local backbone weights (.safetensors, or a torch file loaded with '
                    'weights_only=True); used instead of downloading when set')
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    drop_path: float = Field(default=0.1, ge=0.0, lt=1.0)
    decoder: Literal['mask', 'linear'] = 'mask'
    decoder_layers: int = Field(default=1, ge=1)
    decoder_heads: int = Field(default=6, ge=1)
    decoder_dim: int | None = Field(default=None, ge=1, description='default: backbone width')
    decoder_mlp: int | None = Field(default=1536, ge=1, description='default: 4 x decoder_dim')
    decoder_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    num_classes: int = Field(default=31, ge=1)

    @model_validator(mode='after')
    def _check(self) -> SegmenterConfig:
        if self.checkpoint is not None and not self.checkpoint:
            raise ValueError('checkpoint must be a path or null')
        return self


def tiny_config(num_classes: int = 5, patch_size: int = 16, width: int = 64,
                depth: int = 2) -> SegmenterConfig:
    """A small randomly initialised ViT (tests, demos, CPU benchmarks of the plumbing).

    ``vit_tiny_patch16_224`` shrunk through timm kwargs; no download.
    """
    return SegmenterConfig(
        backbone='vit_tiny_patch16_224', pretrained=False, drop_path=0.0,
        backbone_kwargs={'depth': depth, 'embed_dim': width, 'num_heads': 2,
                         'patch_size': patch_size, 'img_size': 64},
        decoder_heads=2, decoder_mlp=2 * width, decoder_dropout=0.0, num_classes=num_classes)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:  # pragma: no cover - torch is in the ml extra
        raise DependencyError('the image segmenter needs torch: pip install "dsseg[ml]"') from err
    return torch


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as err:  # pragma: no cover
        raise DependencyError('the image segmenter needs timm: pip install timm') from err
    return timm


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without unpickling arbitrary objects.

    ``.safetensors`` through safetensors; anything else through
    ``torch.load(weights_only=True)``. Nested ``model``/``state_dict``/``teacher`` entries and
    ``module.``/``backbone.`` prefixes (DINO/DDP checkpoints) are unwrapped.
    """
    torch = _import_torch()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: weights file not found; set model.checkpoint to an '
                              'existing .safetensors/.pth file or use pretrained: true')
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as err:
        raise CheckpointError(f'{path}: cannot read weights ({type(err).__name__}: {err}); '
                              'the file is corrupt or not a plain tensor checkpoint') from err
    for key in ('state_dict', 'model', 'teacher', 'student'):
        if isinstance(data, dict) and key in data and isinstance(data[key], dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f'{path}: expected a mapping of tensor names to tensors')
    out = {}
    for name, value in data.items():
        for prefix in ('module.', 'backbone.', 'encoder.'):
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = value
    return out


def _create_backbone(cfg: SegmenterConfig, load_pretrained: bool,
                     fixed_size: tuple[int, int] | None = None) -> nn.Module:
    timm = _import_timm()
    kwargs: dict[str, Any] = dict(cfg.backbone_kwargs)
    kwargs.setdefault('drop_path_rate', cfg.drop_path)
    dynamic = fixed_size is None
    if fixed_size is not None:
        kwargs['img_size'] = fixed_size
    pretrained = bool(load_pretrained and (cfg.pretrained or cfg.checkpoint))
    if pretrained and cfg.checkpoint:
        # Read the file safely ourselves, then let timm apply its own filter (DINO/DINOv2 key
        # conversion, position-embedding resampling) through the state_dict overlay.
        # The backbone is headless (num_classes=0): drop classifier / DINO projection heads.
        state = {k: v for k, v in read_state_dict(cfg.checkpoint).items()
                 if not k.startswith('head.')}
        kwargs['pretrained_cfg_overlay'] = {'state_dict': state}
    try:
        return timm.create_model(cfg.backbone, pretrained=pretrained, num_classes=0,
                                 dynamic_img_size=dynamic, **kwargs)
    except RuntimeError as err:
        if pretrained and cfg.checkpoint:
            raise CheckpointError(f'{cfg.checkpoint}: weights do not fit backbone '
                                  f'{cfg.backbone!r} ({err})'.replace('\n', ' ')) from err
        if pretrained:
            raise ModelError(f'cannot load pretrained weights of {cfg.backbone!r} ({err}); '
                             'offline machines need model.checkpoint pointing at a local '
                             'weights file, or pretrained: false') from err
        raise ModelError(f'cannot build backbone {cfg.backbone!r}: {err}') from err
    except Exception as err:
        detail = f'{type(err).__name__}: {err}'.replace('\n', ' ')
        raise ModelError(f'cannot build backbone {cfg.backbone!r}: {detail}; use a timm ViT '
                         'name (timm.list_models("vit_*")) and valid backbone_kwargs') from err


def fixed_size_copy(model: nn.Module, height: int, width: int) -> nn.Module:
    """The same network for one input size only, without dynamic position embeddings.

    The position embedding is resampled once (same timm function and arguments as the dynamic
    model uses at every call), so outputs equal the dynamic model's at that size. Used for
    ONNX/TorchScript export: the exporter cannot convert timm's antialiased bicubic resize.
    """
    from timm.layers import resample_abs_pos_embed

    ph, pw = model.patch_size
    padded = (height + (-height) % ph, width + (-width) % pw)
    fixed = build_segmenter(model.cfg, load_pretrained=False, fixed_size=padded)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    backbone = model.backbone
    if getattr(backbone, 'pos_embed', None) is not None:
        prefix = 0 if getattr(backbone, 'no_embed_class', False) else backbone.num_prefix_tokens
        state['backbone.pos_embed'] = resample_abs_pos_embed(
            backbone.pos_embed.detach(), new_size=(padded[0] // ph, padded[1] // pw),
            old_size=backbone.patch_embed.grid_size, num_prefix_tokens=prefix)
    fixed.load_state_dict(state, strict=True)
    return fixed.to(next(model.parameters()).device).eval()


def build_segmenter(cfg: SegmenterConfig, load_pretrained: bool = True,
                    fixed_size: tuple[int, int] | None = None) -> nn.Module:
    """Build the network. ``load_pretrained=False`` skips backbone weights (loading a run).

    ``fixed_size=(H, W)`` (multiples of the patch size) builds a backbone without dynamic
    image size, for export; see :func:`fixed_size_copy`.
    """
    torch = _import_torch()
    from torch import nn
    from torch.nn import functional as F

    backbone = _create_backbone(cfg, load_pretrained, fixed_size)
    if not hasattr(backbone, 'forward_intermediates') or not hasattr(backbone, 'patch_embed'):
        raise ModelError(f'backbone {cfg.backbone!r} is not a timm ViT with '
                         'forward_intermediates/patch_embed; pick a vit_* model')
    patch = backbone.patch_embed.patch_size
    patch_hw = (int(patch[0]), int(patch[1])) if isinstance(patch, (tuple, list)) else (
        int(patch), int(patch))
    width = int(getattr(backbone, 'embed_dim', getattr(backbone, 'num_features', 0)))
    pcfg = getattr(backbone, 'pretrained_cfg', None) or {}
    mean = tuple(float(v) for v in pcfg.get('mean', IMAGENET_MEAN))
    std = tuple(float(v) for v in pcfg.get('std', IMAGENET_STD))

    class MaskTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            from timm.models.vision_transformer import Block

            dim = cfg.decoder_dim or width
            if dim % cfg.decoder_heads:
                raise ModelError(f'model.decoder_heads={cfg.decoder_heads} must divide the '
                                 f'decoder width {dim} (model.decoder_dim or backbone width)')
            mlp = cfg.decoder_mlp or 4 * dim
            self.num_classes = cfg.num_classes
            self.proj_dec = nn.Linear(width, dim)
            self.blocks = nn.ModuleList([
                Block(dim, cfg.decoder_heads, mlp_ratio=mlp / dim, qkv_bias=True,
                      proj_drop=cfg.decoder_dropout, attn_drop=0.0, drop_path=0.0)
                for _ in range(cfg.decoder_layers)
            ])
            self.cls_emb = nn.Parameter(torch.zeros(1, cfg.num_classes, dim))
            nn.init.trunc_normal_(self.cls_emb, std=0.02)
            scale = dim ** -0.5
            self.proj_patch = nn.Parameter(scale * torch.randn(dim, dim))
            self.proj_classes = nn.Parameter(scale * torch.randn(dim, dim))
            self.decoder_norm = nn.LayerNorm(dim)
            self.mask_norm = nn.LayerNorm(cfg.num_classes)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, C)
            x = self.proj_dec(tokens)
            cls = self.cls_emb.expand(x.shape[0], -1, -1)
            x = torch.cat((x, cls), dim=1)
            for block in self.blocks:
                x = block(x)
            x = self.decoder_norm(x)
            n_cls = self.num_classes
            patches = x[:, :-n_cls] @ self.proj_patch
            classes = x[:, -n_cls:] @ self.proj_classes
            patches = F.normalize(patches, dim=-1)
            classes = F.normalize(classes, dim=-1)
            masks = patches @ classes.transpose(1, 2)
            return self.mask_norm(masks)

    class LinearDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(width, cfg.num_classes)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(tokens)

    class Segmenter(nn.Module):
        """ViT encoder + decoder; ``forward(normalised (B,3,H,W)) -> logits (B,C,H,W)``."""

        def __init__(self) -> None:
            super().__init__()
            self.cfg = cfg
            self.backbone = backbone
            self.decoder = MaskTransformer() if cfg.decoder == 'mask' else LinearDecoder()
            self.patch_size = patch_hw
            self.mean = mean
            self.std = std
            self.num_classes = cfg.num_classes

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            height, width_px = x.shape[-2], x.shape[-1]
            ph, pw = self.patch_size
            pad_h = (ph - height % ph) % ph
            pad_w = (pw - width_px % pw) % pw
            x = F.pad(x, (0, pad_w, 0, pad_h))
            feats = self.backbone.forward_intermediates(
                x, indices=1, norm=True, intermediates_only=True, output_fmt='NCHW')[-1]
            b, d, gh, gw = feats.shape
            tokens = feats.flatten(2).transpose(1, 2)
            masks = self.decoder(tokens)  # (B, gh*gw, C)
            masks = masks.transpose(1, 2).reshape(b, self.num_classes, gh, gw)
            logits = F.interpolate(masks, size=(gh * ph, gw * pw), mode='bilinear',
                                   align_corners=False)
            return logits[:, :, :height, :width_px]

    return Segmenter()

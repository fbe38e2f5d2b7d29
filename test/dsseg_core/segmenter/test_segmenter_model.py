"""The Segmenter network: any input size, decoders, backbone weights from a local file."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('timm')

from dsseg_core.errors import CheckpointError, ModelError  # noqa: E402
from dsseg_core.segmenter.model import (  # noqa: E402
    SegmenterConfig,
    build_segmenter,
    fixed_size_copy,
    tiny_config,
)


@pytest.mark.parametrize('decoder', ['mask', 'linear'])
@pytest.mark.parametrize('size', [(64, 128), (37, 53), (16, 16)])
def test_logits_have_input_size_for_any_size(decoder: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(4).model_copy(update={'decoder': decoder})
    model = build_segmenter(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 4, *size)
    assert torch.isfinite(out).all()


def test_mask_decoder_masks_are_layer_normalised_over_classes() -> None:
    torch.manual_seed(0)
    model = build_segmenter(tiny_config(6)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    # LayerNorm over classes (weight 1, bias 0 at init), then bilinear upsampling: mean 0.
    assert out.mean(dim=1).abs().max() < 1e-4


def test_mean_std_and_patch_size_come_from_the_backbone() -> None:
    model = build_segmenter(tiny_config(3, patch_size=8))
    assert model.patch_size == (8, 8)
    assert model.mean == pytest.approx((0.5, 0.5, 0.5))  # augreg weights: 0.5 / 0.5
    small = {'depth': 1, 'embed_dim': 64, 'num_heads': 2}
    dino = SegmenterConfig(backbone='vit_small_patch16_224.dino', pretrained=False,
                           backbone_kwargs=small, decoder_heads=2, num_classes=3)
    model = build_segmenter(dino)
    assert model.mean == pytest.approx((0.485, 0.456, 0.406))
    assert model.std == pytest.approx((0.229, 0.224, 0.225))
    clip = dino.model_copy(update={'backbone': 'vit_base_patch16_clip_224.openai'})
    model = build_segmenter(clip)
    assert model.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_padding_does_not_change_the_valid_region_at_patch_multiples() -> None:
    torch.manual_seed(0)
    model = build_segmenter(tiny_config(3)).eval()
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        out = model(x)
        manual = model(torch.nn.functional.pad(x, (0, 1, 0, 15)))[:, :, :33, :47]
    assert torch.allclose(out, manual, atol=1e-5)


def test_backbone_weights_from_local_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = build_segmenter(tiny_config(3))
    state = {f'module.{k}': v.contiguous() for k, v in source.backbone.state_dict().items()}
    path = tmp_path / 'dino.safetensors'
    save_file(state, str(path))
    cfg = tiny_config(3).model_copy(update={'pretrained': True, 'checkpoint': str(path)})
    torch.manual_seed(2)
    loaded = build_segmenter(cfg)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value), key


def test_dino_training_checkpoint_layout_loads(tmp_path: Path) -> None:
    # DINO's released training checkpoints: {'teacher': {'backbone.*': ..., 'head.mlp.*': ...}}
    torch.manual_seed(4)
    source = build_segmenter(tiny_config(3))
    teacher = {f'backbone.{k}': v for k, v in source.backbone.state_dict().items()}
    teacher['head.mlp.0.weight'] = torch.zeros(8, 64)
    path = tmp_path / 'checkpoint.pth'
    torch.save({'teacher': teacher, 'epoch': 100}, path)
    cfg = tiny_config(3).model_copy(update={'pretrained': True, 'checkpoint': str(path)})
    loaded = build_segmenter(cfg)
    assert torch.equal(loaded.backbone.pos_embed, source.backbone.pos_embed)


def test_backbone_weights_from_torch_file_use_weights_only(tmp_path: Path) -> None:
    source = build_segmenter(tiny_config(3))
    good = tmp_path / 'w.pth'
    torch.save({'model': source.backbone.state_dict()}, good)
    cfg = tiny_config(3).model_copy(update={'pretrained': True, 'checkpoint': str(good)})
    build_segmenter(cfg)  # loads

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ('pickle executed',))

    bad = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, bad)
    cfg = cfg.model_copy(update={'checkpoint': str(bad)})
    with pytest.raises(CheckpointError, match='evil.pth'):
        build_segmenter(cfg)


def test_mismatched_backbone_weights_name_the_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    other = build_segmenter(tiny_config(3, width=32))
    path = tmp_path / 'small.safetensors'
    save_file({k: v.contiguous() for k, v in other.backbone.state_dict().items()}, str(path))
    cfg = tiny_config(3).model_copy(update={'pretrained': True, 'checkpoint': str(path)})
    with pytest.raises(CheckpointError, match='small.safetensors'):
        build_segmenter(cfg)
    cfg = cfg.model_copy(update={'checkpoint': str(tmp_path / 'missing.safetensors')})
    with pytest.raises(CheckpointError, match='not found'):
        build_segmenter(cfg)


def test_unknown_backbone_and_bad_heads_raise_model_error() -> None:
    with pytest.raises(ModelError, match='no_such_vit'):
        build_segmenter(SegmenterConfig(backbone='no_such_vit', pretrained=False))
    with pytest.raises(ModelError, match='decoder_heads'):
        build_segmenter(tiny_config(3).model_copy(update={'decoder_heads': 3}))


def test_fixed_size_copy_matches_the_dynamic_model() -> None:
    torch.manual_seed(0)
    model = build_segmenter(tiny_config(3)).eval()
    fixed = fixed_size_copy(model, 40, 72)
    x = torch.randn(2, 3, 40, 72)
    with torch.no_grad():
        assert torch.allclose(fixed(x), model(x), atol=1e-5)
    assert not fixed.backbone.dynamic_img_size

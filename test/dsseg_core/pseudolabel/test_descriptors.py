from __future__ import annotations

import numpy as np
import pytest

from dsseg_core.errors import CheckpointError
from dsseg_core.pseudolabel.descriptors import (
    DescriptorConfig,
    DescriptorNormaliser,
    DescriptorSpec,
)
from dsseg_core.pseudolabel.descriptors.colour import (
    COLOUR_FEATURES,
    colour_statistics,
    rgb_to_lab,
)
from dsseg_core.pseudolabel.descriptors.geometric import (
    GEOMETRIC_FEATURES,
    geometric_descriptors,
)

F = {name: i for i, name in enumerate(GEOMETRIC_FEATURES)}


def _scene():
    rng = np.random.default_rng(0)
    ground = np.column_stack([rng.uniform(-20, 20, 4000), rng.uniform(-20, 20, 4000),
                              np.full(4000, -1.7) + rng.normal(0, 0.01, 4000)])
    pole = np.column_stack([np.full(200, 5.0) + rng.normal(0, 0.02, 200),
                            np.full(200, 2.0) + rng.normal(0, 0.02, 200),
                            np.linspace(-1.7, 2.3, 200)])
    wall = np.column_stack([np.full(600, 12.0) + rng.normal(0, 0.01, 600),
                            rng.uniform(-3, 3, 600), rng.uniform(-1.7, 4.3, 600)])
    xyz = np.concatenate([ground, pole, wall]).astype(np.float32)
    seg = np.concatenate([np.zeros(4000), np.full(200, 1), np.full(600, 2)]).astype(int)
    return xyz, seg, seg == 0


def test_geometric_features_describe_shapes(kernel_path: str) -> None:
    xyz, seg, ground = _scene()
    inten = np.where(seg == 1, 0.8, 0.2).astype(np.float32)
    d = geometric_descriptors(xyz, seg, 4, ground, inten)  # segment 3 is empty
    assert d.shape == (4, len(GEOMETRIC_FEATURES))
    pole, wall = d[1], d[2]
    assert pole[F['linearity']] > 0.9 and pole[F['axis_verticality']] > 0.95
    assert wall[F['planarity']] > 0.8 and wall[F['normal_verticality']] > 0.95
    assert d[0][F['normal_verticality']] < 0.05  # ground: vertical normal
    assert pole[F['top_above_ground']] == pytest.approx(4.0, abs=0.1)
    assert pole[F['bottom_above_ground']] == pytest.approx(0.0, abs=0.1)
    assert wall[F['extent_main']] == pytest.approx(6.0, abs=0.3)
    assert pole[F['intensity_mean']] == pytest.approx(0.8)
    assert pole[F['intensity_std']] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(d[3]).all()


def test_geometric_without_ground_or_points(kernel_path: str) -> None:
    xyz, seg, _ = _scene()
    d = geometric_descriptors(xyz, seg, 3, None, None)
    assert np.isfinite(d).all()
    assert d[1][F['intensity_mean']] == 0.0
    empty = geometric_descriptors(np.zeros((0, 3)), np.zeros(0, int), 2)
    assert empty.shape == (2, len(GEOMETRIC_FEATURES)) and np.isnan(empty).all()


def test_lab_reference_values() -> None:
    lab = rgb_to_lab(np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 0]]], np.uint8))[0]
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.1)
    assert lab[1] == pytest.approx([53.24, 80.09, 67.20], abs=0.2)
    assert lab[2] == pytest.approx([0.0, 0.0, 0.0], abs=0.01)


def test_colour_statistics_per_mask_and_combination(kernel_path: str) -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :15] = (200, 30, 30)
    img[:, 15:] = (30, 30, 200)
    img[::2, 15:] = (60, 60, 230)  # horizontal stripes: texture with vertical gradient
    seg = np.full((20, 30), -1)
    seg[2:18, 2:12] = 0
    seg[2:18, 18:28] = 1
    st = colour_statistics(img, seg, 3)
    f = st.features()
    names = {n: i for i, n in enumerate(COLOUR_FEATURES)}
    red_lab = rgb_to_lab(img[2:3, 2:3])[0, 0]
    assert f[0, names['L_mean']] == pytest.approx(red_lab[0], abs=1e-3)
    assert f[0, names['a_mean']] == pytest.approx(red_lab[1], abs=1e-3)
    assert f[0, names['L_std']] == pytest.approx(0.0, abs=1e-3)
    assert f[0, names['grad_mean']] == pytest.approx(0.0, abs=1e-3)
    assert f[1, names['grad_mean']] > 1.0
    assert f[1, names['grad_horizontal_share']] < 0.2  # stripes: gradients are vertical
    assert np.isnan(f[2]).all()
    # two cameras seeing halves of a segment combine exactly to one camera seeing all
    both = colour_statistics(img, np.where(seg >= 0, 0, -1), 1)
    sa = colour_statistics(img, np.where(seg == 0, 0, -1), 1)
    sb = colour_statistics(img, np.where(seg == 1, 0, -1), 1)
    assert not np.allclose(sa.features(), both.features())
    sa.add(sb)
    assert np.allclose(sa.features(), both.features(), atol=1e-4)
    assert sa.count[0] == (seg >= 0).sum()


def test_normaliser_zscore_and_group_weights() -> None:
    rng = np.random.default_rng(0)
    cfg = DescriptorConfig()
    spec = DescriptorSpec.from_config(cfg)
    desc = np.concatenate([rng.normal(100, 50, (500, 16)), rng.normal(0, 0.01, (500, 9))], 1)
    desc[0, 3] = np.nan
    norm = DescriptorNormaliser.fit(desc, spec, {'geometric': 1.0, 'colour': 2.0})
    z = norm.transform(desc)
    assert np.isfinite(z).all() and z[0, 3] == 0.0
    sl = spec.slices()
    var_g = (z[:, sl['geometric']] ** 2).sum(1).mean()
    var_c = (z[:, sl['colour']] ** 2).sum(1).mean()
    assert var_g == pytest.approx(1.0, rel=0.05)
    assert var_c == pytest.approx(4.0, rel=0.05)
    back = DescriptorNormaliser.from_arrays(norm.to_arrays())
    assert np.allclose(back.transform(desc), z) and back.spec == spec


# --------------------------------------------------------------------------- DINO


@pytest.fixture(scope='module')
def vit_small():
    timm = pytest.importorskip('timm')
    import torch

    torch.manual_seed(0)
    return timm.create_model('vit_small_patch16_224.dino', pretrained=False,
                             dynamic_img_size=True, num_classes=0).eval()


def test_dino_pooling_equals_manual_masked_mean(vit_small) -> None:
    from dsseg_core.pseudolabel.descriptors.dino import DinoConfig, DinoExtractor

    ext = DinoExtractor(DinoConfig(enabled=True, pretrained=False), model=vit_small)
    assert ext.patch == 16 and ext.dim == 384
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)  # not a multiple of 16
    seg = np.full((40, 70), -1)
    seg[0:16, 0:32] = 0  # exactly patches (0,0) and (0,1)
    seg[20:24, 40:44] = 1  # smaller than a patch: 16 px inside patch (1, 2)
    seg[34:40, 48:58] = 1  # and 60 px of patch (2, 3), next to the padding
    total, weight = ext(img, seg, 3)
    feats = ext.patch_features(img)
    assert feats.shape == (384, 3, 5)
    manual0 = (feats[:, 0, 0] + feats[:, 0, 1]) / 2
    assert np.allclose(total[0] / weight[0], manual0, atol=1e-5)
    w_a, w_b = 16 / 256, 60 / 256
    manual1 = (w_a * feats[:, 1, 2] + w_b * feats[:, 2, 3]) / (w_a + w_b)
    assert weight[1] == pytest.approx(w_a + w_b)
    assert np.allclose(total[1] / weight[1], manual1, atol=1e-5)
    assert weight[2] == 0


def test_dino_pipeline_end_to_end_with_random_vit(vit_small) -> None:
    from pl_scene import street_frame

    from dsseg_core.pseudolabel.descriptors.dino import DinoConfig, DinoExtractor
    from dsseg_core.pseudolabel.pipeline import PseudoLabelConfig, process_frame

    cfg = PseudoLabelConfig(min_segment_pixels=10)
    cfg.range_image.width = 512  # the synthetic LiDAR has 512 azimuth steps
    cfg.descriptors.dino = DinoConfig(enabled=True, pretrained=False)
    ext = DinoExtractor(cfg.descriptors.dino, model=vit_small)
    res = process_frame(street_frame(), cfg, ext)
    spec = DescriptorSpec.from_config(cfg.descriptors, ext.dim)
    assert res.descriptors.shape[1] == spec.dim == 16 + 9 + 384
    vis = res.clusterable
    assert vis.sum() >= 2
    assert np.isfinite(res.descriptors[vis][:, -384:]).all()


def test_dino_local_checkpoint_safetensors(tmp_path) -> None:
    timm = pytest.importorskip('timm')
    import torch
    from safetensors.torch import save_file

    from dsseg_core.pseudolabel.descriptors.dino import DinoConfig, load_dino_model

    torch.manual_seed(1)
    src = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0,
                            depth=2)
    path = tmp_path / 'tiny.safetensors'
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    cfg = DinoConfig(enabled=True, model_name='vit_tiny_patch16_224', checkpoint_path=str(path),
                     model_kwargs={'depth': 2})
    # the config names the architecture, the checkpoint holds only weights: mismatch -> error
    with pytest.raises(CheckpointError, match='does not match'):
        load_dino_model(cfg.model_copy(update={'model_name': 'vit_small_patch16_224'}))
    with pytest.raises(CheckpointError, match='does not match'):
        load_dino_model(cfg.model_copy(update={'model_kwargs': {'depth': 3}}))
    pth = tmp_path / 'tiny.pth'
    torch.save({'state_dict': src.state_dict()}, pth)
    for p in (path, pth):
        model = load_dino_model(cfg.model_copy(update={'checkpoint_path': str(p)}))
        assert not model.training
        for k, v in src.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(CheckpointError, match='not found'):
        load_dino_model(cfg.model_copy(update={'checkpoint_path': str(tmp_path / 'no.pt')}))


def test_colour_stride_samples_the_same_statistics(kernel_path: str) -> None:
    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(120, 10, (60, 80, 3)), 0, 255).astype(np.uint8)
    img[:, 40:] = (30, 160, 40)
    seg = np.full((60, 80), -1)
    seg[5:55, 5:35] = 0
    seg[5:55, 45:75] = 1
    seg[31, 3] = 2  # one pixel, off the sampling grid
    full = colour_statistics(img, seg, 3).features()
    sub_stats = colour_statistics(img, seg, 3, stride=2)
    sub = sub_stats.features()
    assert sub_stats.count[0] == 25 * 15
    assert np.allclose(sub[:2, :3], full[:2, :3], atol=1.5)  # Lab means
    assert np.allclose(sub[1], full[1], atol=1e-3)  # uniform colour: identical
    assert np.isnan(sub[2]).all() and np.isfinite(full[2]).all()


def test_corrupt_dino_checkpoint_is_a_one_line_error(tmp_path) -> None:
    pytest.importorskip('torch')
    from dsseg_core.pseudolabel.descriptors.dino import _load_state_dict

    for name in ('dino.pth', 'dino.safetensors'):
        path = tmp_path / name
        path.write_bytes(np.random.default_rng(0).bytes(500))
        with pytest.raises(CheckpointError) as err:
            _load_state_dict(path)
        msg = str(err.value)
        assert '\n' not in msg and len(msg) < 400, msg
        assert msg.startswith(f'{path}: not a readable DINO checkpoint')
        assert '--dino-checkpoint' in msg

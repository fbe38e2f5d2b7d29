"""CLIP naming of pseudo-classes: scoring logic, tiny open_clip end to end, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip('torch')
pytest.importorskip('open_clip')

from dsseg_core.cli import main  # noqa: E402
from dsseg_core.errors import ConfigError, DatasetError, ModelError  # noqa: E402
from dsseg_core.points3d.naming import (  # noqa: E402
    ClipBundle,
    NamingConfig,
    load_clip,
    load_vocabulary,
    name_classes,
    preprocess_images,
    read_gallery,
    write_naming,
)

TINY_CLIP = {
    'embed_dim': 32,
    'vision_cfg': {'image_size': 32, 'layers': 1, 'width': 32, 'head_width': 16,
                   'patch_size': 16},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 32, 'heads': 2,
                 'layers': 1},
}


def _png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), rgb, np.uint8)).save(path)


class ColourClip(torch.nn.Module):
    """A stand-in CLIP whose embeddings are known: images -> mean colour; text -> the colour
    word it contains. Checks the scoring/voting logic exactly."""

    WORDS = {'red': (1.0, 0, 0), 'green': (0, 1.0, 0), 'blue': (0, 0, 1.0)}

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(100.0)))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # mean 0 / std 1 preprocessing: the colour in [0, 1]

    def encode_text(self, tokens: list[str]) -> torch.Tensor:
        out = []
        for t in tokens:
            vec = [0.05, 0.05, 0.05]
            for w, v in self.WORDS.items():
                if w in t:
                    vec = list(v)
            out.append(vec)
        return torch.tensor(out)


def _colour_bundle() -> ClipBundle:
    return ClipBundle(ColourClip(), lambda texts: list(texts), (8, 8), (0.0, 0.0, 0.0),
                      (1.0, 1.0, 1.0))


def test_classes_get_the_name_their_crops_match(tmp_path) -> None:
    gal = tmp_path / 'gallery'
    for i in range(3):
        _png(gal / 'crops' / '1' / f'{i}.png', (250, 10, 10))
        _png(gal / 'crops' / '2' / f'{i}.png', (10, 10, 240))
        _png(gal / 'crops' / 'class_05' / f'{i}.png', (20, 230, 20))
    vocab = {'red car': ['red'], 'green tree': ['green'], 'blue sky': ['blue']}
    bundle = _colour_bundle()
    res = name_classes(gal, vocab, bundle, NamingConfig(templates=['{}']))
    assert res.names == {1: 'red car', 2: 'blue sky', 5: 'green tree'}
    assert res.num_crops == {1: 3, 2: 3, 5: 3}
    assert res.scores.shape == (3, 3)
    assert np.allclose(res.scores.sum(axis=1), 1.0, atol=1e-5)
    hung = name_classes(gal, vocab, bundle, NamingConfig(templates=['{}'],
                                                         assignment='hungarian'))
    assert hung.names == res.names
    out = tmp_path / 'names.yaml'
    write_naming(out, res, base_names={0: 'ground', 1: 'class_01', 3: 'class_03'})
    names = yaml.safe_load(out.read_text())
    assert names == {0: 'ground', 1: 'red car', 2: 'blue sky', 3: 'class_03', 5: 'green tree'}
    scores = yaml.safe_load((tmp_path / 'names.scores.yaml').read_text())
    assert list(scores[1]['top'][0]) == ['red car']


def test_preprocess_normalises_with_model_mean_std() -> None:
    img = np.full((10, 30, 3), (255, 0, 51), np.uint8)
    out = preprocess_images([img], (8, 8), (0.5, 0.5, 0.5), (0.25, 0.5, 0.1))
    assert out.shape == (1, 3, 8, 8) and out.dtype == np.float32
    assert np.allclose(out[0, :, 0, 0], [(1 - 0.5) / 0.25, (0 - 0.5) / 0.5, (0.2 - 0.5) / 0.1],
                       atol=1e-5)
    grad = np.zeros((10, 40, 3), np.uint8)
    grad[:, :20] = 255  # left half white: the centre crop of 'shortest' keeps both halves
    g = preprocess_images([grad], (10, 10), (0, 0, 0), (1, 1, 1), mode='shortest')
    assert g[0, 0, 5, 0] == pytest.approx(1.0) and g[0, 0, 5, 9] == pytest.approx(0.0)


def test_gallery_tiles_of_dsseg_gallery_are_read(tmp_path) -> None:
    from dsseg_core.pseudolabel.gallery import CROP_W, TILE_H

    tile = np.zeros((TILE_H, CROP_W + 300, 3), np.uint8)
    tile[10:100, 20:150] = (200, 30, 30)  # the image crop; the LiDAR views follow
    tile[:, CROP_W + 10:] = (0, 0, 255)
    from PIL import Image

    (tmp_path / 'tiles').mkdir()
    Image.fromarray(tile).save(tmp_path / 'tiles' / 'class_04_0.png')
    Image.fromarray(tile).save(tmp_path / 'tiles' / 'class_04_1.png')
    crops = read_gallery(tmp_path)
    assert list(crops) == [4] and len(crops[4]) == 2 and crops[4][0][1] is True
    from dsseg_core.points3d.naming import _load_image

    arr = _load_image(crops[4][0][0], True)
    assert arr.shape == (90, 130, 3)  # black bars and LiDAR views cut off
    assert (arr == (200, 30, 30)).all()
    with pytest.raises(DatasetError, match='no crops'):
        read_gallery(tmp_path / 'tiles')
    with pytest.raises(DatasetError, match='not found'):
        read_gallery(tmp_path / 'missing')


def test_vocabulary_file_and_errors(tmp_path, repo_root) -> None:
    vocab = load_vocabulary(repo_root / 'config' / 'vocabulary.yaml')
    assert len(vocab) >= 20
    assert {'road', 'car', 'building', 'vegetation', 'person', 'pole'} <= set(vocab)
    assert all(isinstance(p, list) and p for p in vocab.values())
    bad = tmp_path / 'v.yaml'
    bad.write_text('car: 3\n')
    with pytest.raises(ConfigError, match='prompts must be'):
        load_vocabulary(bad)
    bad.write_text('- car\n')
    with pytest.raises(ConfigError, match='expected a mapping'):
        load_vocabulary(bad)


def test_tiny_open_clip_end_to_end_cli_and_local_weights(tmp_path, capsys) -> None:
    cfg_path = tmp_path / 'tiny-test-clip.json'
    cfg_path.write_text(json.dumps(TINY_CLIP))
    bundle = load_clip(str(cfg_path), None)
    assert bundle.image_size == (32, 32)
    weights = tmp_path / 'tiny.pt'
    torch.save(bundle.model.state_dict(), weights)
    again = load_clip(str(cfg_path), str(weights))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bundle.model.encode_image(x), again.model.encode_image(x))
    gal = tmp_path / 'gallery'
    for c, col in ((0, (90, 90, 90)), (3, (30, 160, 40))):
        for i in range(2):
            _png(gal / str(c) / f'{i}.png', col)
    vocab = tmp_path / 'vocab.yaml'
    vocab.write_text('classes:\n  road: [road, street]\n  tree: [tree]\n  car: [car]\n')
    out = tmp_path / 'names.yaml'
    rc = main(['name-classes', str(gal), '--vocabulary', str(vocab), '--clip', str(cfg_path),
               '--pretrained', str(weights), '--out', str(out)])
    assert rc == 0
    names = yaml.safe_load(out.read_text())
    assert set(names) == {0, 3} and set(names.values()) <= {'road', 'tree', 'car'}
    assert 'wrote' in capsys.readouterr().out
    rc = main(['name-classes', str(gal), '--vocabulary', str(vocab), '--clip', str(cfg_path),
               '--pretrained', str(tmp_path / 'missing.pt')])
    assert rc == 1
    assert 'weights file not found' in capsys.readouterr().err
    with pytest.raises(ModelError):
        load_clip('no-such-clip-model', None)

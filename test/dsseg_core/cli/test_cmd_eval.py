"""``dsseg eval``: a run directory against a generic labelled folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

torch = pytest.importorskip('torch')
pytest.importorskip('timm')

from dsseg_core.cli import main  # noqa: E402


def test_eval_writes_metrics_confusion_and_naming(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from dsseg_core.segmenter import load_predictor
    from dsseg_core.segmenter.checkpoint import save_run
    from dsseg_core.segmenter.model import build_segmenter, tiny_config
    from dsseg_core.segmenter.train import TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig(model=tiny_config(3), inference={'window': 32, 'stride': 32})
    run = save_run(build_segmenter(cfg.model), cfg, tmp_path / 'run')
    images, gt = tmp_path / 'images', tmp_path / 'gt'
    images.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(0)
    predictor = load_predictor(run)
    conf = np.zeros((3, 2), dtype=np.int64)
    for i in range(2):
        rgb = rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
        label = rng.integers(0, 2, size=(24, 40)).astype(np.uint8)
        Image.fromarray(rgb).save(images / f'{i}_leftImg8bit.png')
        Image.fromarray(label).save(gt / f'{i}.png')
        ids, _ = predictor.predict(rgb)
        np.add.at(conf, (ids.ravel(), label.ravel()), 1)
    (gt / 'classes.yaml').write_text(yaml.safe_dump({0: 'road', 1: 'car'}))
    assert main(['eval', str(run), '--gt', str(gt), '--images', str(images),
                 '--policy', 'many-to-one']) == 0
    out = capsys.readouterr().out
    assert 'many_to_one matching' in out and 'unmatched predicted classes' in out
    metrics = json.loads((run / 'eval' / 'metrics.json').read_text())
    assert metrics['num_images'] == 2 and metrics['policy'] == 'many_to_one'
    # many-to-one: every used predicted class goes to the gt class it overlaps most
    mapping = conf.argmax(axis=1)
    hits = sum(conf[p, mapping[p]] for p in range(3))
    assert metrics['pixel_accuracy'] == pytest.approx(hits / conf.sum(), abs=1e-6)
    assert (run / 'eval' / 'confusion.png').is_file()
    naming = yaml.safe_load((run / 'eval' / 'naming.yaml').read_text())
    assert set(naming) == {0, 1, 2} and set(naming.values()) <= {'road', 'car', 'class_00',
                                                                 'class_01', 'class_02'}

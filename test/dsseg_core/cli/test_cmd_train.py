"""``dsseg train``: a short run from a config file, then --resume extends it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

pytest.importorskip('torch')
pytest.importorskip('timm')

from dsseg_core.cli import main  # noqa: E402


def write_tiny_dataset(root: Path, num_images: int = 2) -> Path:
    """Two 32x64 images in the pseudo-labelled dataset format (ARCHITECTURE.md)."""
    rng = np.random.default_rng(0)
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    lines = []
    for i in range(num_images):
        labels = rng.integers(0, 3, size=(32, 64)).astype(np.uint8)
        labels[:, ::2] = 255
        rgb = (labels[..., None] % 3 * 80).repeat(3, axis=2).astype(np.uint8)
        Image.fromarray(rgb).save(root / 'images' / f'{i}.png')
        Image.fromarray(labels).save(root / 'labels' / f'{i}.png')
        lines.append(json.dumps({'id': str(i), 'image': f'images/{i}.png',
                                 'labels': f'labels/{i}.png', 'camera': 'cam'}))
    (root / 'index.jsonl').write_text('\n'.join(lines) + '\n')
    (root / 'dataset.yaml').write_text(yaml.safe_dump({'num_classes': 3, 'ignore_index': 255,
                                                       'label_dtype': 'uint8'}))
    return root


def test_train_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dsseg_core.segmenter.model import tiny_config

    data = write_tiny_dataset(tmp_path / 'ds')
    cfg = tmp_path / 'train.yaml'
    cfg.write_text(yaml.safe_dump({'train': {
        'model': tiny_config(3).model_dump(mode='json'), 'batch_size': 2,
        'data': {'crop': [32, 64], 'num_workers': 0},
        'optim': {'warmup_steps': 1}, 'ema': {'start_step': 1}}}))
    run = tmp_path / 'run'
    assert main(['train', str(data), '--out', str(run), '--config', str(cfg),
                 '--max-steps', '2', '--device', 'cpu']) == 0
    assert 'trained 2 steps' in capsys.readouterr().out
    saved = yaml.safe_load((run / 'config.yaml').read_text())['train']
    assert saved['max_steps'] == 2 and saved['model']['num_classes'] == 3
    assert yaml.safe_load((run / 'classes.yaml').read_text()) == {0: 'class_00', 1: 'class_01',
                                                                 2: 'class_02'}
    # a second run into the same folder without --resume is refused
    assert main(['train', str(data), '--out', str(run), '--config', str(cfg),
                 '--max-steps', '2']) == 1
    assert '--resume' in capsys.readouterr().err
    assert main(['train', str(data), '--out', str(run), '--resume', '--config', str(cfg)]) == 1
    assert main(['train', str(data), '--out', str(run), '--resume', '--max-steps', '3']) == 0
    rows = (run / 'metrics.csv').read_text().splitlines()
    assert [r.split(',')[0] for r in rows[1:]] == ['0', '1', '2']
    assert json.loads((run / 'checkpoints' / 'latest.json').read_text())['step'] == 3

"""Fixtures of the segmenter tests: tiny pseudo-labelled datasets written in the real format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

# Colours of the synthetic classes: distinct and far apart, so a tiny ViT can learn them.
PALETTE = np.array([[200, 40, 40], [40, 180, 60], [50, 60, 210], [220, 210, 60],
                    [150, 60, 170]], dtype=np.float32)


def write_dataset(root: Path, num_images: int = 4, height: int = 64, width: int = 128,
                  num_classes: int = 3, block: int = 16, labelled_frac: float = 0.3,
                  seed: int = 0, noise: float = 20.0) -> Path:
    """A dataset in the ARCHITECTURE.md format: blocks of class colours + noise, sparse labels.

    Each ``block x block`` cell has one class; its pixels have that class's colour plus
    Gaussian noise. ``labelled_frac`` of the pixels carry the class, the rest are 255.
    """
    rng = np.random.default_rng(seed)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'labels').mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(num_images):
        cells = rng.integers(0, num_classes, size=(height // block, width // block))
        dense = np.kron(cells, np.ones((block, block), dtype=np.int64))
        rgb = PALETTE[dense] + rng.normal(0.0, noise, size=(height, width, 3))
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        labels = dense.astype(np.uint8)
        labels[rng.random((height, width)) >= labelled_frac] = 255
        sid = f'{i:06d}'
        Image.fromarray(rgb).save(root / 'images' / f'{sid}.png')
        Image.fromarray(labels).save(root / 'labels' / f'{sid}.png')
        lines.append(json.dumps({'id': sid, 'image': f'images/{sid}.png',
                                 'labels': f'labels/{sid}.png', 'points': f'points/{sid}.npz',
                                 'bag': 'synthetic', 'stamp_ns': i * 100_000_000,
                                 'camera': 'cam', 'width': width, 'height': height}))
    (root / 'index.jsonl').write_text('\n'.join(lines) + '\n')
    (root / 'dataset.yaml').write_text(yaml.safe_dump({
        'format_version': 1, 'num_classes': num_classes, 'ground_class': 0,
        'ignore_index': 255, 'label_dtype': 'uint8', 'cameras': ['cam'], 'bags': ['synthetic']}))
    (root / 'classes.yaml').write_text(yaml.safe_dump(
        {0: 'ground', **{k: f'class_{k:02d}' for k in range(1, num_classes)}}))
    return root


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = 'dataset', **kwargs) -> Path:  # noqa: ANN003
        return write_dataset(tmp_path / name, **kwargs)

    return make

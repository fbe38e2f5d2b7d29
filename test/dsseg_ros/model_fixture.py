"""A randomly initialised tiny segmenter saved as a run dir, and a test copy of dsseg.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

#: Inference settings small enough for CPU tests on 1242x375 KITTI images.
FAST_MODEL = {'short_side': 64, 'window_size': 64, 'window_stride': 64}


def save_tiny_run(run_dir: Path, num_classes: int = 5) -> Path:
    import torch

    from dsseg_core.segmenter.checkpoint import save_run
    from dsseg_core.segmenter.model import build_segmenter, tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(num_classes=num_classes)
    cfg = cfg.model_copy(update={'pretrained': False})
    return save_run(build_segmenter(cfg), cfg, run_dir)


def test_config(repo_root: Path, out: Path, model_dir: Path, **section_updates: dict) -> Path:
    """The shipped config/dsseg.yaml with the tiny model and fast inference settings."""
    data = yaml.safe_load((repo_root / 'config' / 'dsseg.yaml').read_text())
    params = data['/**']['ros__parameters']
    params['segmenter']['model'].update({'path': str(model_dir), **FAST_MODEL})
    for section, values in section_updates.items():
        params.setdefault(section, {}).update(values)
    out.write_text(yaml.safe_dump(data))
    return out


test_config.__test__ = False  # not a pytest test

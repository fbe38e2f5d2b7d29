"""Run directories: round trip, corrupt and mismatched checkpoints give CheckpointError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip('torch')
pytest.importorskip('timm')

from dsseg_core.errors import CheckpointError  # noqa: E402
from dsseg_core.segmenter.checkpoint import (  # noqa: E402
    load_class_names,
    load_model,
    load_run_config,
    save_run,
)
from dsseg_core.segmenter.model import build_segmenter, tiny_config  # noqa: E402


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    model = build_segmenter(tiny_config(4))
    return save_run(model, tiny_config(4), tmp_path / 'run', class_names=['a', 'b', 'c', 'd'])


def test_save_and_load_round_trip(run_dir: Path) -> None:
    torch.manual_seed(3)
    original = build_segmenter(tiny_config(4)).eval()
    loaded = load_model(run_dir)
    assert not loaded.training
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    assert load_class_names(run_dir, 4) == ['a', 'b', 'c', 'd']
    cfg = load_run_config(run_dir)
    assert cfg.model == tiny_config(4)
    assert sorted(p.name for p in run_dir.iterdir()) == ['classes.yaml', 'config.yaml',
                                                         'model.safetensors']


def test_corrupt_weights_name_the_file(run_dir: Path) -> None:
    path = run_dir / 'model.safetensors'
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='model.safetensors'):
        load_model(run_dir)
    path.unlink()
    with pytest.raises(CheckpointError, match='not found'):
        load_model(run_dir)


def test_config_changed_after_training_names_the_mismatch(run_dir: Path) -> None:
    path = run_dir / 'config.yaml'
    data = yaml.safe_load(path.read_text())
    data['train']['model']['num_classes'] = 7
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match=r'model.safetensors.*shape mismatch.*cls_emb'):
        load_model(run_dir)
    data['train']['model']['decoder'] = 'linear'
    data['train']['model']['num_classes'] = 4
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match='missing tensors'):
        load_model(run_dir)


def test_invalid_run_config_is_a_checkpoint_error(run_dir: Path) -> None:
    (run_dir / 'config.yaml').write_text('train:\n  model:\n    no_such_key: 1\n')
    with pytest.raises(CheckpointError, match='no_such_key'):
        load_model(run_dir)

"""Training: a tiny model learns, resume is exact, the EMA phase switches on, DDP agrees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip('torch')
pytest.importorskip('timm')

from dsseg_core.errors import CheckpointError, ConfigError  # noqa: E402
from dsseg_core.segmenter.checkpoint import load_state_dict_file  # noqa: E402
from dsseg_core.segmenter.data import SegmentationDataset  # noqa: E402
from dsseg_core.segmenter.inference import load_predictor  # noqa: E402
from dsseg_core.segmenter.model import build_segmenter, tiny_config  # noqa: E402
from dsseg_core.segmenter.train import OptimConfig, TrainConfig, lr_at, train  # noqa: E402


def small_cfg(**kwargs) -> TrainConfig:  # noqa: ANN003
    base = {
        'model': tiny_config(3).model_dump(), 'batch_size': 2, 'max_steps': 6,
        'device': 'cpu', 'checkpoint_every': 100,
        'data': {'crop': [32, 64], 'scale_range': [0.7, 1.3], 'color_jitter': 0.2,
                 'num_workers': 0},
        'optim': {'lr': 1e-3, 'warmup_steps': 2},
        'ema': {'enabled': True, 'start_step': 2, 'momentum': 0.5},
        'inference': {'window': [64, 128], 'stride': [64, 128]},
    }
    for key, value in kwargs.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return TrainConfig.model_validate(base)


def test_tiny_model_overfits_sparse_labels(make_dataset, tmp_path: Path) -> None:  # noqa: ANN001
    root = make_dataset(num_images=4, num_classes=3, labelled_frac=0.3)
    cfg = small_cfg(
        model=tiny_config(3, patch_size=8).model_dump(), batch_size=2, max_steps=40,
        data={'crop': [64, 128], 'scale_range': [1.0, 1.0], 'color_jitter': 0.0},
        optim={'lr': 3e-3, 'warmup_steps': 5, 'weight_decay': 0.0},
        ema={'start_step': 30, 'momentum': 0.8, 'export': 'student'})
    result = train(root, tmp_path / 'run', cfg, progress=False)
    losses = np.array([float(r['loss_sparse']) for r in result.metrics])
    assert result.steps == 40 and len(losses) == 40
    assert losses[-5:].mean() < 0.5 * losses[0]  # ~0.3 vs ~1.07 (chance: ln 3 = 1.10)
    soft = np.array([float(r['loss_soft']) for r in result.metrics])
    assert np.all(soft[:30] == 0) and np.all(soft[30:] > 0)  # phase switch at step 30
    predictor = load_predictor(tmp_path / 'run')
    dataset = SegmentationDataset(root)
    correct = total = 0
    for i in range(len(dataset)):
        sample = dataset.load(i)
        ids, _ = predictor.predict(sample.image)
        labelled = sample.labels >= 0
        correct += int((ids[labelled] == sample.labels[labelled]).sum())
        total += int(labelled.sum())
    assert correct / total > 0.9
    header = (tmp_path / 'run' / 'metrics.csv').read_text().splitlines()[0]
    assert header.startswith('step,epoch,lr,loss,loss_sparse,loss_soft')


def test_resume_after_interruption_reproduces_the_uninterrupted_run(make_dataset,  # noqa: ANN001
                                                                      tmp_path: Path) -> None:
    root = make_dataset(num_images=3, num_classes=3)
    cfg = small_cfg(model={**tiny_config(3).model_dump(), 'drop_path': 0.1,
                           'decoder_dropout': 0.1})
    train(root, tmp_path / 'full', cfg, progress=False)

    def interrupt(step: int, row: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(root, tmp_path / 'split', cfg, progress=False, on_step=interrupt)
    latest = yaml.safe_load((tmp_path / 'split' / 'checkpoints' / 'latest.json').read_text())
    assert latest['step'] == 3
    with pytest.raises(CheckpointError, match='--resume'):
        train(root, tmp_path / 'split', cfg, progress=False)
    result = train(root, tmp_path / 'split', cfg, progress=False, resume=True)
    assert result.steps == 6
    for name in ('model.safetensors', 'checkpoints/step_00000006/student.safetensors',
                 'checkpoints/step_00000006/teacher.safetensors',
                 'checkpoints/step_00000006/optimizer.safetensors'):
        full = load_state_dict_file(tmp_path / 'full' / name)
        split = load_state_dict_file(tmp_path / 'split' / name)
        assert full.keys() == split.keys()
        for key in full:
            assert torch.equal(full[key], split[key]), f'{name}: {key}'
    rows = [(tmp_path / d / 'metrics.csv').read_text().splitlines() for d in ('full', 'split')]
    losses = [[line.split(',')[3] for line in r[1:]] for r in rows]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    # teacher != student once the EMA runs (momentum 0.5)
    student = load_state_dict_file(tmp_path / 'full/checkpoints/step_00000006/student.safetensors')
    teacher = load_state_dict_file(tmp_path / 'full/checkpoints/step_00000006/teacher.safetensors')
    assert not torch.equal(student['decoder.cls_emb'], teacher['decoder.cls_emb'])


def test_resume_of_a_finished_run_does_nothing(make_dataset, tmp_path: Path) -> None:  # noqa: ANN001
    root = make_dataset(num_images=2)
    cfg = small_cfg(max_steps=2, ema={'enabled': False})
    train(root, tmp_path / 'run', cfg, progress=False)
    before = (tmp_path / 'run' / 'model.safetensors').read_bytes()
    result = train(root, tmp_path / 'run', cfg, progress=False, resume=True)
    assert result.steps == 2
    assert (tmp_path / 'run' / 'model.safetensors').read_bytes() == before
    assert len((tmp_path / 'run' / 'metrics.csv').read_text().splitlines()) == 3


def test_num_classes_must_match_the_dataset(make_dataset, tmp_path: Path) -> None:  # noqa: ANN001
    root = make_dataset(num_images=2, num_classes=3)
    cfg = small_cfg(model={**tiny_config(3).model_dump(), 'num_classes': 5})
    with pytest.raises(ConfigError, match='num_classes'):
        train(root, tmp_path / 'run', cfg, progress=False)


def test_a_bad_sample_fails_before_the_run_dir_is_written(make_dataset,  # noqa: ANN001
                                                          tmp_path: Path) -> None:
    from PIL import Image

    from dsseg_core.errors import DatasetError

    root = make_dataset(num_images=3, num_classes=3)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / 'labels' / '000002.png')
    with pytest.raises(DatasetError, match=r'000002\.png: label image 16x16'):
        train(root, tmp_path / 'run', small_cfg(), progress=False)
    assert not (tmp_path / 'run').exists()


def test_learning_rate_schedule() -> None:
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule='cosine', min_lr_ratio=0.1)
    assert lr_at(0, 110, cfg) == pytest.approx(0.1)
    assert lr_at(9, 110, cfg) == pytest.approx(1.0)
    assert lr_at(10, 110, cfg) == pytest.approx(1.0)
    assert lr_at(60, 110, cfg) == pytest.approx(0.55)
    assert lr_at(110, 110, cfg) == pytest.approx(0.1)
    poly = OptimConfig(lr=1.0, warmup_steps=0, schedule='poly', poly_power=1.0)
    assert lr_at(50, 100, poly) == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get('DSSEG_SKIP_DDP_TEST') == '1',
                    reason='DSSEG_SKIP_DDP_TEST=1: skips the 2-process torchrun test (~45 s)')
def test_ddp_two_cpu_processes_match_one_process(make_dataset, tmp_path: Path) -> None:  # noqa: ANN001
    """torchrun, gloo, 2 ranks x batch 1 == 1 process x batch 2 (fully labelled, no dropout)."""
    root = make_dataset(num_images=4, num_classes=3, labelled_frac=1.0)
    common = {'max_steps': 2, 'ema': {'enabled': False},
              'data': {'crop': [64, 128], 'scale_range': [1.0, 1.0], 'color_jitter': 0.0}}
    single = small_cfg(batch_size=2, **common)
    train(root, tmp_path / 'single', single, progress=False)
    cfg_path = tmp_path / 'ddp.yaml'
    cfg_path.write_text(yaml.safe_dump({'train': small_cfg(batch_size=1, **common)
                                        .model_dump(mode='json')}))
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
           '2', '-m', 'dsseg_core', 'train', str(root), '--out', str(tmp_path / 'ddp'),
           '--config', str(cfg_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    a = load_state_dict_file(tmp_path / 'single' / 'model.safetensors')
    b = load_state_dict_file(tmp_path / 'ddp' / 'model.safetensors')
    torch.manual_seed(single.seed)  # train() seeds the same way before building the model
    init = build_segmenter(single.model).state_dict()
    moved = torch.sqrt(sum(((a[k] - init[k]) ** 2).sum() for k in a))
    differ = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a))
    print(f'DDP vs single: |diff| {float(differ):.3g}, |update| {float(moved):.3g}')
    assert moved > 0
    # Adam amplifies float noise of near-zero gradients a little; unsynchronised ranks or a
    # wrong data split would differ by the order of the update itself.
    assert differ < 1e-2 * moved
    state = yaml.safe_load((tmp_path / 'ddp/checkpoints/step_00000002/state.json').read_text())
    assert state['world_size'] == 2


def test_inference_scale_follows_the_training_scale() -> None:
    cfg = TrainConfig.model_validate({'data': {'base_short_side': 320}})
    assert cfg.inference.short_side == 320
    cfg = TrainConfig.model_validate({'data': {'base_short_side': 320},
                                      'inference': {'short_side': 400}})
    assert cfg.inference.short_side == 400
    with pytest.raises(ValueError, match='max_steps or epochs'):
        TrainConfig(max_steps=3, epochs=1)

"""Export: ONNX and TorchScript outputs agree with the eager model; predictors agree too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('timm')
pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from dsseg_core.errors import CheckpointError, DependencyError  # noqa: E402
from dsseg_core.segmenter import load_predictor  # noqa: E402
from dsseg_core.segmenter.checkpoint import save_run  # noqa: E402
from dsseg_core.segmenter.export import (  # noqa: E402
    OnnxPredictor,
    build_tensorrt_engine,
    export_model,
)
from dsseg_core.segmenter.model import build_segmenter, tiny_config  # noqa: E402
from dsseg_core.segmenter.train import TrainConfig  # noqa: E402


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = TrainConfig(model=tiny_config(4),
                      inference={'window': [32, 64], 'stride': [24, 48], 'batch_size': 2})
    model = build_segmenter(cfg.model)
    return save_run(model, cfg, tmp_path_factory.mktemp('export') / 'run',
                    class_names=['w', 'x', 'y', 'z'])


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
def test_exported_logits_match_eager(run_dir: Path, fmt: str) -> None:
    result = export_model(run_dir, fmt)
    assert result.path.is_file() and (result.height, result.width) == (32, 64)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    print(f'{fmt}: max |exported - eager| = {result.max_abs_diff:.3g}')
    exported = load_predictor(result.path)
    eager = load_predictor(run_dir)
    assert exported.class_names == ['w', 'x', 'y', 'z'] and exported.fixed_input == (32, 64)
    rgb = np.random.default_rng(0).integers(0, 256, size=(50, 90, 3), dtype=np.uint8)
    np.testing.assert_allclose(exported.logits(rgb), eager.logits(rgb), atol=1e-4)
    ids, conf = exported.predict(rgb)
    assert ids.shape == (50, 90) and conf.shape == (50, 90)


def test_onnx_batch_is_dynamic_and_small_images_are_padded(run_dir: Path, tmp_path: Path
                                                           ) -> None:
    path = export_model(run_dir, 'onnx', out=tmp_path / 'm.onnx', height=48, width=48,
                        check=False).path
    predictor = OnnxPredictor(path, batch_size=3)
    assert predictor.fixed_input == (48, 48)
    assert predictor._forward(np.zeros((3, 3, 48, 48), np.float32)).shape == (3, 4, 48, 48)
    ids, conf = predictor.predict(np.full((20, 30, 3), 128, dtype=np.uint8))
    assert ids.shape == (20, 30)


def test_broken_exports_are_checkpoint_errors(tmp_path: Path) -> None:
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not an onnx file')
    with pytest.raises(CheckpointError, match='bad.onnx'):
        load_predictor(bad)
    with pytest.raises(CheckpointError, match='not found'):
        load_predictor(tmp_path / 'missing.onnx')


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None,
                    reason='TensorRT installed: the guarded-import error path does not apply')
def test_tensorrt_without_tensorrt_is_a_dependency_error(tmp_path: Path) -> None:
    with pytest.raises(DependencyError, match='TensorRT'):
        build_tensorrt_engine(tmp_path / 'm.onnx')

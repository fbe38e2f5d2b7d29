"""``dsseg export``: ONNX and TorchScript files that load_predictor accepts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('timm')
pytest.importorskip('onnxruntime')

from dsseg_core.cli import main  # noqa: E402


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    from dsseg_core.segmenter.checkpoint import save_run
    from dsseg_core.segmenter.model import build_segmenter, tiny_config

    torch.manual_seed(0)
    return save_run(build_segmenter(tiny_config(3)), tiny_config(3), tmp_path / 'run')


def test_export_onnx_and_torchscript(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dsseg_core.segmenter import load_predictor

    assert main(['export', str(run_dir), '--height', '32', '--width', '48']) == 0
    out = capsys.readouterr().out
    assert 'max |exported - eager| logits' in out
    onnx_path = run_dir / 'model_32x48.onnx'
    assert load_predictor(onnx_path).fixed_input == (32, 48)
    target = run_dir / 'ts.pt'
    assert main(['export', str(run_dir), '--format', 'torchscript', '--height', '32',
                 '--width', '32', '--out', str(target)]) == 0
    assert load_predictor(target).num_classes == 3


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None,
                    reason='TensorRT installed')
def test_export_tensorrt_without_tensorrt_fails_cleanly(run_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    assert main(['export', str(run_dir), '--format', 'tensorrt', '--height', '32',
                 '--width', '32', '--no-check']) == 1
    assert 'TensorRT' in capsys.readouterr().err
    assert (run_dir / 'model_32x32.onnx').is_file()  # the ONNX step still happened

"""Inference: numpy resize equals torch's, sliding windows, softmax, Predictor, load_predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsseg_core.errors import CheckpointError, ModelError
from dsseg_core.segmenter.inference import (
    InferenceConfig,
    WindowedPredictor,
    resize_bilinear,
    softmax_argmax,
    window_starts,
)


class PixelwisePredictor(WindowedPredictor):
    """Logits are a per-pixel function of the input, so windows must not change the result."""

    def __init__(self, config: InferenceConfig, fixed: tuple[int, int] | None = None) -> None:
        super().__init__(num_classes=3, class_names=['a', 'b', 'c'], mean=(0.5, 0.5, 0.5),
                         std=(0.25, 0.25, 0.25), config=config)
        self.fixed_input = fixed
        self.calls: list[tuple[int, ...]] = []

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(batch.shape)
        if self.fixed_input is not None:
            assert batch.shape[2:] == self.fixed_input
        return batch * np.array([1.0, 2.0, -1.0], dtype=np.float32).reshape(1, 3, 1, 1)


def test_resize_bilinear_matches_torch_interpolate() -> None:
    torch = pytest.importorskip('torch')
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 13, 29)).astype(np.float32)
    for size in [(26, 58), (7, 11), (13, 40), (50, 5)]:
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode='bilinear',
                                              align_corners=False).numpy()
        np.testing.assert_allclose(resize_bilinear(x, *size), ref, atol=1e-5)


def test_window_starts_cover_and_end_at_the_border() -> None:
    assert window_starts(100, 128, 64).tolist() == [0]
    assert window_starts(128, 128, 64).tolist() == [0]
    assert window_starts(300, 128, 100).tolist() == [0, 100, 172]
    starts = window_starts(1242, 512, 341)
    assert starts[-1] + 512 == 1242 and starts[0] == 0
    assert np.all(np.diff(starts) <= 341)


def test_softmax_argmax_confidence_is_max_probability() -> None:
    logits = np.array([[[1.0, 0.0]], [[2.0, 0.0]], [[0.0, 3.0]]], dtype=np.float32)
    ids, conf = softmax_argmax(logits)
    assert ids.dtype == np.uint8 and ids.tolist() == [[1, 2]]
    e = np.exp(logits[:, 0, 0])
    assert conf[0, 0] == pytest.approx(e.max() / e.sum(), rel=1e-6)
    ids, _ = softmax_argmax(np.zeros((300, 2, 2), dtype=np.float32))
    assert ids.dtype == np.uint16


@pytest.mark.parametrize('fixed', [None, (32, 48)])
def test_sliding_windows_average_to_the_whole_image_result(fixed: tuple[int, int] | None
                                                           ) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(70, 130, 3), dtype=np.uint8)
    whole = PixelwisePredictor(InferenceConfig(window=(256, 256), stride=256))
    windows = PixelwisePredictor(InferenceConfig(window=(32, 48), stride=(20, 30),
                                                 batch_size=3), fixed=fixed)
    np.testing.assert_allclose(windows.logits(rgb), whole.logits(rgb), atol=1e-5)
    assert len(whole.calls) == 1 and whole.calls[0] == (1, 3, 70, 130)
    assert sum(c[0] for c in windows.calls) == 3 * 4  # rows 0, 20, 38; cols 0, 30, 60, 82
    ids, conf = windows.predict(rgb)
    assert ids.shape == (70, 130) and conf.dtype == np.float32
    assert np.all((conf > 1 / 3 - 1e-6) & (conf <= 1.0))


def test_fixed_input_pads_small_images() -> None:
    rgb = np.full((10, 20, 3), 200, dtype=np.uint8)
    fixed = PixelwisePredictor(InferenceConfig(window=16, stride=16), fixed=(32, 32))
    flexible = PixelwisePredictor(InferenceConfig(window=16, stride=16))
    np.testing.assert_allclose(fixed.logits(rgb), flexible.logits(rgb), atol=1e-6)
    assert fixed.calls == [(1, 3, 32, 32)]


def test_short_side_resize_returns_input_resolution() -> None:
    rgb = np.zeros((40, 80, 3), dtype=np.uint8)
    rgb[:, 40:] = 255
    pred = PixelwisePredictor(InferenceConfig(short_side=20, window=64, stride=64))
    logits = pred.logits(rgb)
    assert pred.calls == [(1, 3, 20, 40)]
    assert logits.shape == (3, 40, 80)
    assert logits[0, 0, 0] == pytest.approx(-2.0) and logits[0, 0, -1] == pytest.approx(2.0)


def test_bad_images_are_rejected() -> None:
    pred = PixelwisePredictor(InferenceConfig())
    with pytest.raises(ModelError, match='uint8'):
        pred.predict(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ModelError, match='shape'):
        pred.predict(np.zeros((4, 4, 2), dtype=np.uint8))
    assert pred.predict(np.zeros((4, 4), dtype=np.uint8))[0].shape == (4, 4)  # mono expands


def test_predictor_of_a_run_dir_matches_the_model(tmp_path: Path) -> None:
    torch = pytest.importorskip('torch')
    pytest.importorskip('timm')
    from dsseg_core.segmenter import load_predictor
    from dsseg_core.segmenter.checkpoint import save_run
    from dsseg_core.segmenter.model import build_segmenter, tiny_config

    torch.manual_seed(0)
    model = build_segmenter(tiny_config(4)).eval()
    names = ['road', 'car', 'tree', 'sky']
    save_run(model, tiny_config(4), tmp_path / 'run', class_names=names)
    predictor = load_predictor(tmp_path / 'run', window=64, stride=48)
    assert predictor.num_classes == 4 and predictor.class_names == names
    rgb = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    x = (rgb.astype(np.float32) / 255 - np.array(model.mean, dtype=np.float32)) \
        / np.array(model.std, dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].numpy()
    np.testing.assert_allclose(predictor.logits(rgb), ref, atol=1e-5)
    ids, conf = predictor.predict(rgb)
    assert np.array_equal(ids, ref.argmax(0).astype(np.uint8))
    bf16 = load_predictor(tmp_path / 'run', precision='bf16', window=64, stride=48)
    assert np.mean(bf16.predict(rgb)[0] == ids) > 0.8
    with pytest.raises(CheckpointError, match='config.yaml'):
        load_predictor(tmp_path / 'nothing')


def test_torch_predictor_keeps_the_chain_on_its_device_with_the_shared_semantics(
        tmp_path: Path) -> None:
    """The torch backend's on-device stitch/upsample/softmax equals the shared numpy path."""
    torch = pytest.importorskip('torch')
    pytest.importorskip('timm')
    from dsseg_core.segmenter import load_predictor
    from dsseg_core.segmenter.checkpoint import save_run
    from dsseg_core.segmenter.model import build_segmenter, tiny_config

    torch.manual_seed(1)
    model = build_segmenter(tiny_config(5)).eval()
    save_run(model, tiny_config(5), tmp_path / 'run')
    # Short-side resize + overlapping windows + upsampling back: every step of the chain.
    predictor = load_predictor(tmp_path / 'run', short_side=40, window=32, stride=24)
    rgb = np.random.default_rng(3).integers(0, 256, size=(75, 170, 3), dtype=np.uint8)
    shared = WindowedPredictor.logits(predictor, rgb)  # the numpy implementation
    np.testing.assert_allclose(predictor.logits(rgb), shared, atol=1e-4)
    ids, conf = predictor.predict(rgb)
    ref_ids, ref_conf = softmax_argmax(shared)
    assert ids.dtype == np.uint8 and ids.shape == (75, 170)
    assert np.mean(ids == ref_ids) > 0.999
    np.testing.assert_allclose(conf, ref_conf, atol=1e-4)

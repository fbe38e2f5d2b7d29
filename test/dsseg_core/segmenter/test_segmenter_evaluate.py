"""Evaluation: a tiny labelled folder gives the mIoU of a hand calculation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dsseg_core.errors import ConfigError, DatasetError
from dsseg_core.segmenter.evaluate import (
    CITYSCAPES19_NAMES,
    EvalConfig,
    evaluate_predictor,
    find_ground_truth,
    write_outputs,
)
from dsseg_core.segmenter.inference import InferenceConfig, WindowedPredictor

PRED_A = [[0, 0, 1, 1], [2, 2, 3, 3]]
GT_A = [[0, 0, 1, 255], [2, 1, 2, 2]]
PRED_B = [[0, 1, 1, 1], [3, 3, 2, 0]]
GT_B = [[0, 1, 1, 0], [2, 2, 2, 0]]


class RedChannelPredictor(WindowedPredictor):
    """Predicts class ``red // 50`` at every pixel (4 pseudo-classes)."""

    def __init__(self) -> None:
        super().__init__(num_classes=4, class_names=[f'class_{i:02d}' for i in range(4)],
                         mean=(0, 0, 0), std=(1, 1, 1), config=InferenceConfig(window=64))

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        cls = np.round(batch[:, 0] * 255 / 50).astype(np.int64)
        return (np.arange(4)[None, :, None, None] == cls[:, None]).astype(np.float32) * 5


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gt, images = tmp_path / 'gt', tmp_path / 'images'
    gt.mkdir()
    images.mkdir()
    for name, pred, label in (('a', PRED_A, GT_A), ('b', PRED_B, GT_B)):
        rgb = np.zeros((2, 4, 3), dtype=np.uint8)
        rgb[..., 0] = np.array(pred) * 50
        Image.fromarray(rgb).save(images / f'{name}.png')
        Image.fromarray(np.array(label, dtype=np.uint8)).save(gt / f'{name}.png')
    (gt / 'classes.yaml').write_text(yaml.safe_dump(['road', 'car', 'sky']))
    return gt, images


# Confusion (pred rows, gt cols): P0 [4,0,0], P1 [1,3,0], P2 [0,1,2], P3 [0,0,4].
# Hungarian: P0->road, P1->car, P3->sky, P2 unmatched.
@pytest.mark.parametrize('policy, unmatched, iou, acc', [
    ('hungarian', 'wrong', [4 / 5, 3 / 5, 4 / 6], 11 / 15),
    ('hungarian', 'ignore', [4 / 5, 3 / 4, 4 / 4], 11 / 12),
    ('many_to_one', 'wrong', [4 / 5, 3 / 5, 6 / 7], 13 / 15),
])
def test_miou_matches_hand_calculation(folders: tuple[Path, Path], policy: str,
                                       unmatched: str, iou: list[float], acc: float) -> None:
    gt, images = folders
    result = evaluate_predictor(RedChannelPredictor(), gt, images_dir=images,
                                cfg=EvalConfig(policy=policy, unmatched=unmatched))
    assert result.num_images == 2
    assert result.confusion.tolist() == [[4, 0, 0], [1, 3, 0], [0, 1, 2], [0, 0, 4]]
    np.testing.assert_allclose(result.iou, iou)
    assert result.miou == pytest.approx(np.mean(iou))
    assert result.pixel_acc == pytest.approx(acc)


def test_outputs_state_the_policy_and_name_the_classes(folders: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    gt, images = folders
    result = evaluate_predictor(RedChannelPredictor(), gt, images_dir=images)
    paths = write_outputs(result, tmp_path / 'out')
    metrics = json.loads(paths['metrics'].read_text())
    assert metrics['miou'] == pytest.approx((0.8 + 0.6 + 4 / 6) / 3, abs=1e-6)
    assert metrics['policy'] == 'hungarian' and metrics['unmatched_policy'] == 'wrong'
    assert metrics['unmatched_classes'] == [2]
    assert metrics['per_class_iou']['car'] == pytest.approx(0.6)
    naming = yaml.safe_load(paths['naming'].read_text())
    assert naming == {0: 'road', 1: 'car', 2: 'class_02', 3: 'sky'}
    with Image.open(paths['confusion']) as im:
        assert im.format == 'PNG' and im.width > 3 * 12


def test_cityscapes_label_ids_are_mapped(tmp_path: Path) -> None:
    gt = tmp_path / 'gtFine' / 'val' / 'city'
    gt.mkdir(parents=True)
    raw = np.array([[7, 8, 26, 0], [9, 33, 23, 255]], dtype=np.uint8)
    Image.fromarray(raw).save(gt / 'city_000000_000019_gtFine_labelIds.png')
    found = find_ground_truth(tmp_path / 'gtFine')
    assert found.fmt == 'cityscapes19' and found.class_names == CITYSCAPES19_NAMES
    assert found.read('city_000000_000019').tolist() == [[0, 1, 13, 255], [255, 18, 10, 255]]
    found27 = find_ground_truth(tmp_path, EvalConfig(gt_format='cityscapes27'))
    assert len(found27.class_names) == 27
    assert found27.read('city_000000_000019').tolist() == [[0, 1, 19, 255], [2, 26, 16, 255]]


def test_missing_inputs_are_clear_errors(folders: tuple[Path, Path], tmp_path: Path) -> None:
    gt, images = folders
    (gt / 'classes.yaml').unlink()
    with pytest.raises(ConfigError, match='classes'):
        find_ground_truth(gt)
    with pytest.raises(DatasetError, match='not found'):
        find_ground_truth(tmp_path / 'nope')
    (gt / 'classes.yaml').write_text('[road, car, sky]')
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(DatasetError, match='has ground truth'):
        evaluate_predictor(RedChannelPredictor(), gt, images_dir=empty)


def test_images_of_a_pseudo_labelled_dataset(make_dataset, tmp_path: Path) -> None:  # noqa: ANN001
    root = make_dataset(num_images=3, num_classes=3, height=32, width=32)
    gt = tmp_path / 'gt'
    gt.mkdir()
    for sid in ('000000', '000002'):  # ground truth for two of the three samples
        Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(gt / f'{sid}.png')
    (gt / 'classes.yaml').write_text('[road]')
    result = evaluate_predictor(RedChannelPredictor(), gt, dataset_dir=root)
    assert result.num_images == 2
    assert result.confusion.sum() == 2 * 32 * 32

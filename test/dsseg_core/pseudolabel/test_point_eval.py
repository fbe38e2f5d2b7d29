from __future__ import annotations

import numpy as np
import pytest
from lidar_scene import STREET, simulate_scan

from dsseg_core.pseudolabel.pipeline import PseudoLabelConfig
from dsseg_core.pseudolabel.point_eval import evaluate_point_labels, pseudo_label_scan


def test_perfect_and_permuted_predictions_score_one() -> None:
    gt = np.repeat(np.arange(5), 20)
    gt[:5] = -1  # ignored
    pred = np.array([3, 1, 4, 0, 2])[np.clip(gt, 0, None)]
    for policy in ('hungarian', 'many_to_one'):
        res = evaluate_point_labels(pred, gt, 19, policy)
        assert res.miou == pytest.approx(1.0) and res.accuracy == pytest.approx(1.0)
        assert np.isnan(res.iou[5:]).all()  # absent classes are left out
        assert policy in res.policy_text


def test_unlabelled_points_count_as_wrong() -> None:
    gt = np.array([0] * 50 + [1] * 50)
    pred = np.array([0] * 25 + [-1] * 25 + [1] * 50)
    res = evaluate_point_labels(pred, gt, 2, 'hungarian')
    assert res.coverage == pytest.approx(0.75)
    assert res.iou[0] == pytest.approx(0.5) and res.iou[1] == pytest.approx(1.0)
    assert res.accuracy == pytest.approx(0.75)


def test_scan_only_pseudo_labels_follow_the_objects() -> None:
    xyz, ring, truth = simulate_scan(STREET, num_beams=32, num_azimuth=512)
    cfg = PseudoLabelConfig()
    cfg.range_image.width = 512
    labels = pseudo_label_scan(xyz, None, None, k=3, seed=0, cfg=cfg)
    assert labels.shape == (len(xyz),) and labels.dtype == np.int32
    assert (labels[truth == 0] == 0).mean() > 0.9  # ground -> class 0
    assert set(np.unique(labels)) <= {-1, 0, 1, 2, 3}
    for box in range(1, len(STREET) + 1):  # each box is mostly one pseudo-class
        lab = labels[truth == box]
        lab = lab[lab > 0]
        assert len(lab) and np.bincount(lab).max() / len(lab) > 0.8
    res = evaluate_point_labels(labels, np.where(truth >= 0, truth, -1), 5, 'many_to_one')
    assert res.miou > 0.5


def test_scan_without_objects_gives_ground_only() -> None:
    xyz, _, _ = simulate_scan([], num_beams=16, num_azimuth=256)
    cfg = PseudoLabelConfig()
    cfg.range_image.width = 256
    labels = pseudo_label_scan(xyz, None, None, k=19, cfg=cfg)
    assert set(np.unique(labels)) <= {-1, 0} and (labels == 0).mean() > 0.9

from __future__ import annotations

import numpy as np
import pytest

from dsseg_core.matching import (
    confusion_matrix,
    evaluate_matching,
    match_classes,
    remap_confusion,
    scores_from_confusion,
)


def test_confusion_matrix_counts_and_skips_ignored() -> None:
    pred = np.array([0, 0, 1, 1, 2, -1, 1, 0])
    gt = np.array([0, 0, 1, 0, 1, 1, 255, 1])
    conf = confusion_matrix(pred, gt, num_pred=3, num_gt=2)
    # (-1, 1) and (1, 255) are dropped
    assert conf.tolist() == [[2, 1], [1, 1], [0, 1]]
    assert conf.sum() == 6
    conf2 = confusion_matrix(pred, gt, 3, 2, ignore_gt=None, ignore_pred=0)
    assert conf2[0].sum() == 0 and conf2.sum() == 3


def test_hungarian_recovers_a_permutation() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, 1000)
    perm = np.array([3, 0, 4, 1, 2])
    pred = perm[gt]
    conf = confusion_matrix(pred, gt, 5, 5)
    mapping = match_classes(conf, 'hungarian')
    assert np.array_equal(mapping[perm], np.arange(5))
    res = evaluate_matching(conf, 'hungarian')
    assert res.miou == pytest.approx(1.0) and res.pixel_acc == pytest.approx(1.0)


def test_split_classes_many_to_one_vs_hungarian() -> None:
    # gt class 0 predicted as 0 or 1 (split), gt class 1 as 2
    gt = np.array([0] * 60 + [1] * 40)
    pred = np.array([0] * 30 + [1] * 30 + [2] * 40)
    conf = confusion_matrix(pred, gt, 3, 2)
    m2o = match_classes(conf, 'many_to_one')
    assert m2o.tolist() == [0, 0, 1]
    assert evaluate_matching(conf, 'many_to_one').miou == pytest.approx(1.0)
    hun = match_classes(conf, 'hungarian')
    assert (hun >= 0).sum() == 2 and hun[2] == 1
    strict = evaluate_matching(conf, 'hungarian', unmatched='wrong')
    # class 0: tp 30, gt 60, pred 30 -> 0.5 ; class 1: 1.0
    assert strict.iou.tolist() == pytest.approx([0.5, 1.0])
    assert strict.pixel_acc == pytest.approx(0.7)
    lenient = evaluate_matching(conf, 'hungarian', unmatched='ignore')
    assert lenient.iou.tolist() == pytest.approx([1.0, 1.0])


def test_scores_by_hand_and_absent_class_is_nan() -> None:
    conf = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # gt class 2 absent
    iou, miou, acc = scores_from_confusion(conf)
    assert iou[0] == pytest.approx(5 / (7 + 6 - 5))
    assert iou[1] == pytest.approx(3 / (4 + 5 - 3))
    assert np.isnan(iou[2])
    assert miou == pytest.approx((iou[0] + iou[1]) / 2)
    assert acc == pytest.approx(8 / 11)


def test_remap_confusion_and_bad_policy() -> None:
    conf = np.array([[4, 0], [0, 2], [1, 1]])
    folded = remap_confusion(conf, np.array([1, 0, -1]), 'wrong')
    assert folded.tolist() == [[0, 2], [4, 0], [1, 1]]
    with pytest.raises(ValueError, match='policy'):
        match_classes(conf, 'greedy')

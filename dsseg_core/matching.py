"""Matching unnamed predicted classes to ground-truth classes, and the scores that follow.

Shared by the pseudo-label evaluation (``dsseg eval-points``) and the image-model evaluation.

* :func:`confusion_matrix` counts ``(pred, gt)`` pairs; ``conf[p, g]``.
* :func:`match_classes` maps every predicted class to a ground-truth class (or ``-1``):

  - ``'hungarian'``: one-to-one assignment maximising the matched pixel/point count
    (``scipy.optimize.linear_sum_assignment``). With more predicted classes than ground-truth
    classes some predicted classes stay unmatched (``-1``).
  - ``'many_to_one'``: every predicted class goes to the ground-truth class it overlaps most
    (majority vote); several predicted classes may share a ground-truth class.

* :func:`remap_confusion` folds a ``(P, G)`` confusion into ``(G, G)`` through a mapping.
  Pixels of an unmatched predicted class either count as wrong (``unmatched='wrong'``, strict:
  they are false negatives of their ground-truth class) or are dropped (``unmatched='ignore'``,
  the lenient protocol of the released Drive&Segment code). Always report which one was used.
* :func:`scores_from_confusion` gives per-class IoU, mIoU and pixel accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    'MatchScores',
    'confusion_matrix',
    'evaluate_matching',
    'match_classes',
    'remap_confusion',
    'scores_from_confusion',
]

POLICIES = ('hungarian', 'many_to_one')


def confusion_matrix(
    pred: np.ndarray,
    gt: np.ndarray,
    num_pred: int,
    num_gt: int,
    ignore_gt: int | tuple[int, ...] | None = 255,
    ignore_pred: int | tuple[int, ...] | None = None,
) -> np.ndarray:
    """``(num_pred, num_gt)`` int64 counts of ``pred == p and gt == g``.

    Entries equal to an ignore value, negative, or out of range (``>= num_*``) are skipped, so
    ``-1`` (unknown point) and ``255`` (unlabelled pixel) never count.
    """
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f'pred and gt differ in size: {pred.size} vs {gt.size}')
    p = pred.astype(np.int64)
    g = gt.astype(np.int64)
    keep = (p >= 0) & (p < num_pred) & (g >= 0) & (g < num_gt)
    for values, arr in ((ignore_gt, g), (ignore_pred, p)):
        if values is None:
            continue
        for v in np.atleast_1d(values):
            keep &= arr != int(v)
    idx = p[keep] * num_gt + g[keep]
    return np.bincount(idx, minlength=num_pred * num_gt).reshape(num_pred, num_gt)


def match_classes(conf: np.ndarray, policy: str = 'hungarian') -> np.ndarray:
    """Mapping ``(P,) int64`` predicted class → ground-truth class (``-1`` = unmatched).

    Predicted classes with no overlap at all map to ``-1`` under ``'many_to_one'``.
    """
    conf = np.asarray(conf)
    if conf.ndim != 2:
        raise ValueError(f'confusion must be 2-D (pred, gt), got shape {conf.shape}')
    num_pred, _ = conf.shape
    mapping = np.full(num_pred, -1, dtype=np.int64)
    if policy == 'hungarian':
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(conf.astype(np.float64), maximize=True)
        mapping[rows] = cols
    elif policy == 'many_to_one':
        has = conf.sum(axis=1) > 0
        mapping[has] = np.argmax(conf[has], axis=1)
    else:
        raise ValueError(f'unknown matching policy {policy!r}; use one of {POLICIES}')
    return mapping


def remap_confusion(conf: np.ndarray, mapping: np.ndarray, unmatched: str = 'wrong'
                    ) -> np.ndarray:
    """Fold a ``(P, G)`` confusion into ``(G, G)`` (rows = mapped prediction).

    ``unmatched='wrong'``: an unmatched predicted class's pixels are counted as misses of their
    ground-truth class (they add to the row sum of no class but to the column sum of their gt).
    ``unmatched='ignore'``: they are dropped entirely.
    """
    conf = np.asarray(conf, dtype=np.int64)
    num_gt = conf.shape[1]
    out = np.zeros((num_gt + 1, num_gt), dtype=np.int64)  # last row: unmatched
    rows = np.where(mapping >= 0, mapping, num_gt)
    np.add.at(out, rows, conf)
    if unmatched == 'ignore':
        return out[:num_gt]
    if unmatched != 'wrong':
        raise ValueError(f"unmatched must be 'wrong' or 'ignore', got {unmatched!r}")
    return out


@dataclass
class MatchScores:
    """Scores after matching: ``iou`` per gt class (NaN where the class is absent)."""

    iou: np.ndarray
    miou: float
    pixel_acc: float
    mapping: np.ndarray
    policy: str
    unmatched: str


def scores_from_confusion(conf: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(per-class IoU, mIoU, pixel accuracy)`` of a ``(G, G)`` or ``(G + 1, G)`` confusion.

    Rows are predictions, columns ground truth. An extra last row (unmatched predictions)
    counts as misses. IoU of a class absent from the ground truth is NaN and left out of the
    mean (predictions matched to it still count as misses of their own gt class).
    """
    conf = np.asarray(conf, dtype=np.float64)
    num_gt = conf.shape[1]
    tp = np.diag(conf[:num_gt, :num_gt])
    gt_total = conf.sum(axis=0)
    pred_total = conf[:num_gt].sum(axis=1)
    union = gt_total + pred_total - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = np.where(gt_total > 0, tp / np.maximum(union, 1), np.nan)
    valid = ~np.isnan(iou)
    miou = float(np.mean(iou[valid])) if valid.any() else float('nan')
    total = conf.sum()
    acc = float(tp.sum() / total) if total > 0 else float('nan')
    return iou, miou, acc


def evaluate_matching(conf: np.ndarray, policy: str = 'hungarian', unmatched: str = 'wrong'
                      ) -> MatchScores:
    """Match, fold and score a ``(P, G)`` confusion in one call."""
    mapping = match_classes(conf, policy)
    iou, miou, acc = scores_from_confusion(remap_confusion(conf, mapping, unmatched))
    return MatchScores(iou=iou, miou=miou, pixel_acc=acc, mapping=mapping, policy=policy,
                       unmatched=unmatched)

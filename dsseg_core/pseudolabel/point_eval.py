"""Quality of point pseudo-classes against SemanticKITTI ground truth (``dsseg eval-points``).

Without a prediction file the scan is pseudo-labelled on its own, LiDAR only: ground
(class 0) + proposals + weight-free geometric descriptors + k-means (classes 1..k). The
point pseudo-classes are then matched to the 19 SemanticKITTI classes:

* ``hungarian`` — one-to-one (``linear_sum_assignment``), reported with k = 19;
* ``many_to_one`` — each pseudo-class to its majority class, reported with k = 30.

Counting policy (strict, printed with every number): points of ignored gt classes are left
out; points with no pseudo-class (unsegmented, ``-1``) and points of a pseudo-class left
unmatched by the Hungarian assignment count as *wrong* (misses of their gt class). The
``coverage`` line says which share of evaluated points had a pseudo-class at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from dsseg_core.errors import DatasetError
from dsseg_core.matching import (
    confusion_matrix,
    match_classes,
    remap_confusion,
    scores_from_confusion,
)

__all__ = ['PointEvalResult', 'evaluate_point_labels', 'pseudo_label_scan']

log = logging.getLogger(__name__)


@dataclass
class PointEvalResult:
    policy: str
    num_pred_classes: int
    iou: np.ndarray  # (19,) NaN = class absent
    miou: float
    accuracy: float
    coverage: float
    points: int
    mapping: np.ndarray  # pred class -> gt train id (-1 unmatched)
    policy_text: str


def pseudo_label_scan(xyz: np.ndarray, intensity: np.ndarray | None, ring: np.ndarray | None,
                      k: int, seed: int = 0, cfg=None) -> np.ndarray:  # noqa: ANN001
    """Point pseudo-classes of one scan, LiDAR only: 0 ground, 1..k clusters, -1 none."""
    from dsseg_core.pseudolabel.clustering import ClusteringConfig, fit_centroids
    from dsseg_core.pseudolabel.descriptors import DescriptorSpec
    from dsseg_core.pseudolabel.descriptors.geometric import geometric_descriptors
    from dsseg_core.pseudolabel.pipeline import PseudoLabelConfig, segment_scan

    cfg = cfg or PseudoLabelConfig()
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    ground, segment = segment_scan(xyz, ring, cfg)
    labels = np.full(len(xyz), -1, dtype=np.int32)
    labels[ground] = 0
    num_segments = int(segment.max()) + 1 if len(segment) else 1
    if num_segments <= 1:
        log.warning('no non-ground segment in the scan: only the ground class is predicted')
        return labels
    desc = geometric_descriptors(xyz, segment, num_segments, ground, intensity,
                                 cfg.descriptors.geometric)[1:]
    dcfg = cfg.descriptors.model_copy(update={'use_colour': False})
    spec = DescriptorSpec.from_config(dcfg.model_copy(
        update={'dino': dcfg.dino.model_copy(update={'enabled': False})}))
    ccfg = ClusteringConfig(**{**cfg.clustering.model_dump(), 'k': k, 'seed': seed})
    centroids = fit_centroids(desc, spec, ccfg, cfg.descriptors.group_weights)
    lut = np.concatenate([[0], centroids.assign(desc)]).astype(np.int32)
    has = segment >= 0
    labels[has] = lut[segment[has]]
    return labels


def evaluate_point_labels(pred: np.ndarray, gt_train: np.ndarray, num_gt: int,
                          policy: str) -> PointEvalResult:
    """Match pseudo-classes ``pred`` (``-1`` none) to ``gt_train`` (``-1`` ignored) and score."""
    pred = np.asarray(pred).astype(np.int64).ravel()
    gt = np.asarray(gt_train).astype(np.int64).ravel()
    if pred.shape != gt.shape:
        raise DatasetError(f'prediction has {pred.size} points, labels {gt.size}; they must '
                           'belong to the same scan')
    num_pred = int(pred.max()) + 1 if (pred >= 0).any() else 1
    evaluated = gt >= 0
    pred_ext = np.where(pred >= 0, pred, num_pred)  # extra row: no pseudo-class
    conf = confusion_matrix(pred_ext, gt, num_pred + 1, num_gt, ignore_gt=None)
    mapping = np.full(num_pred + 1, -1, dtype=np.int64)
    mapping[:num_pred] = match_classes(conf[:num_pred], policy)
    iou, miou, acc = scores_from_confusion(remap_confusion(conf, mapping, 'wrong'))
    covered = float((pred[evaluated] >= 0).mean()) if evaluated.any() else 0.0
    text = (f'{policy} matching of {num_pred} pseudo-classes to {num_gt} classes; ignored gt '
            'points left out; unmatched pseudo-classes and unlabelled points count as wrong')
    return PointEvalResult(policy=policy, num_pred_classes=num_pred, iou=iou, miou=miou,
                           accuracy=acc, coverage=covered, points=int(evaluated.sum()),
                           mapping=mapping[:num_pred], policy_text=text)

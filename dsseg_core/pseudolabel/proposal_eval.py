"""Evaluation of ground and LiDAR object proposals against SemanticKITTI-style ground truth.

Ground truth per point: raw semantic id (SemanticKITTI ids) + instance id (0 = none).
Points with raw id ``unlabeled`` (0) or ``outlier`` (1) are ignored everywhere.

* **Instances**: points of a "thing" class (car, bicycle, motorcycle, truck, other-vehicle,
  person, bicyclist, motorcyclist; moving classes folded) with an instance id > 0, keyed by
  (class, instance id). Instances with fewer than ``min_instance_points`` points or whose
  centroid is farther than ``max_range`` are not evaluated (counted as ``skipped``).
* **Recall@IoU**: an instance is found if some proposal has point IoU >= ``iou_threshold``
  with it (proposal size counts only its non-ignored points).
* **Over-segmentation rate**: share of evaluated instances of which two or more proposals
  each hold at least ``overlap_fraction`` of the instance's points.
* **Under-segmentation rate**: share of proposals in which two or more ground-truth entities
  each make up at least ``overlap_fraction`` of the proposal's labelled points; an entity is a
  thing instance, or a stuff class as a whole (two buildings in one proposal do not count).
  Reported over all proposals and over "thing proposals" (those holding at least
  ``overlap_fraction`` of thing points).
* **Ground precision / recall**: predicted ground vs the raw classes road, parking, sidewalk,
  other-ground, lane-marking and terrain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from dsseg_core.errors import DatasetError
from dsseg_core.semantickitti import (
    CLASS_NAMES,
    GROUND_RAW_IDS,
    RAW_CLASS_NAMES,
    THING_TRAIN_IDS,
    to_train_ids,
)

__all__ = ['ProposalEval', 'evaluate_proposals']


@dataclass
class ProposalEval:
    """Scores of one scan (or accumulated counts, see :meth:`merge`)."""

    num_points: int = 0
    num_labelled: int = 0
    num_proposals: int = 0
    num_instances: int = 0
    num_instances_skipped: int = 0
    instances_found: int = 0
    instances_over_segmented: int = 0
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> total/found
    proposals_under_segmented: int = 0
    thing_proposals: int = 0
    thing_proposals_under_segmented: int = 0
    ground_tp: int = 0
    ground_fp: int = 0
    ground_fn: int = 0
    ground_fp_classes: dict[str, int] = field(default_factory=dict)
    nonground_labelled: int = 0
    nonground_in_proposals: int = 0
    iou_threshold: float = 0.5
    overlap_fraction: float = 0.1

    @staticmethod
    def _ratio(a: int, b: int) -> float:
        return float(a) / b if b else float('nan')

    @property
    def thing_recall(self) -> float:
        return self._ratio(self.instances_found, self.num_instances)

    @property
    def car_recall(self) -> float:
        c = self.per_class.get('car', {})
        return self._ratio(c.get('found', 0), c.get('total', 0))

    @property
    def over_segmentation_rate(self) -> float:
        return self._ratio(self.instances_over_segmented, self.num_instances)

    @property
    def under_segmentation_rate(self) -> float:
        return self._ratio(self.proposals_under_segmented, self.num_proposals)

    @property
    def thing_under_segmentation_rate(self) -> float:
        return self._ratio(self.thing_proposals_under_segmented, self.thing_proposals)

    @property
    def ground_precision(self) -> float:
        return self._ratio(self.ground_tp, self.ground_tp + self.ground_fp)

    @property
    def ground_recall(self) -> float:
        return self._ratio(self.ground_tp, self.ground_tp + self.ground_fn)

    @property
    def proposal_coverage(self) -> float:
        """Share of labelled non-ground (GT) points that lie in some proposal."""
        return self._ratio(self.nonground_in_proposals, self.nonground_labelled)

    def merge(self, other: ProposalEval) -> ProposalEval:
        """Sum the counts of two evaluations (several scans)."""
        out = ProposalEval(iou_threshold=self.iou_threshold,
                           overlap_fraction=self.overlap_fraction)
        for name in ('num_points', 'num_labelled', 'num_proposals', 'num_instances',
                     'num_instances_skipped', 'instances_found', 'instances_over_segmented',
                     'proposals_under_segmented', 'thing_proposals',
                     'thing_proposals_under_segmented', 'ground_tp', 'ground_fp', 'ground_fn',
                     'nonground_labelled', 'nonground_in_proposals'):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        for src in (self.per_class, other.per_class):
            for cls, d in src.items():
                tgt = out.per_class.setdefault(cls, {'total': 0, 'found': 0})
                tgt['total'] += d['total']
                tgt['found'] += d['found']
        for src in (self.ground_fp_classes, other.ground_fp_classes):
            for cls, v in src.items():
                out.ground_fp_classes[cls] = out.ground_fp_classes.get(cls, 0) + v
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ('thing_recall', 'car_recall', 'over_segmentation_rate',
                     'under_segmentation_rate', 'thing_under_segmentation_rate',
                     'ground_precision', 'ground_recall', 'proposal_coverage'):
            d[name] = getattr(self, name)
        return d


def _pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (a, b) pairs with counts; a, b non-negative int64."""
    if a.size == 0:
        e = np.zeros(0, np.int64)
        return e, e, e
    key = a * (int(b.max()) + 1) + b
    uk, cnt = np.unique(key, return_counts=True)
    return uk // (int(b.max()) + 1), uk % (int(b.max()) + 1), cnt


def evaluate_proposals(segments: np.ndarray, ground_pred: np.ndarray,
                       semantic_raw: np.ndarray, instance: np.ndarray, *,
                       xyz: np.ndarray | None = None, max_range: float | None = None,
                       min_instance_points: int = 1, iou_threshold: float = 0.5,
                       overlap_fraction: float = 0.1) -> ProposalEval:
    """Score ``segments`` (N,) int (-1 = none) and ``ground_pred`` (N,) bool of one scan."""
    segments = np.asarray(segments).astype(np.int64)
    ground_pred = np.asarray(ground_pred, bool)
    semantic_raw = np.asarray(semantic_raw).astype(np.int64) & 0xFFFF
    instance = np.asarray(instance).astype(np.int64)
    n = segments.shape[0]
    for name, arr in (('ground_pred', ground_pred), ('semantic_raw', semantic_raw),
                      ('instance', instance)):
        if arr.shape != (n,):
            raise DatasetError(f'evaluate_proposals: {name} has shape {arr.shape}, segments '
                               f'({n},); labels must belong to the evaluated scan')
    res = ProposalEval(num_points=n, iou_threshold=iou_threshold,
                       overlap_fraction=overlap_fraction)
    labelled = semantic_raw > 1
    res.num_labelled = int(labelled.sum())
    train = to_train_ids(semantic_raw)

    # ground
    gt_ground = np.isin(semantic_raw, GROUND_RAW_IDS) & labelled
    res.ground_tp = int((ground_pred & gt_ground).sum())
    fp = ground_pred & labelled & ~gt_ground
    res.ground_fp = int(fp.sum())
    res.ground_fn = int((~ground_pred & gt_ground).sum())
    ids, cnt = np.unique(semantic_raw[fp], return_counts=True)
    res.ground_fp_classes = {RAW_CLASS_NAMES.get(int(i), str(int(i))): int(c)
                             for i, c in zip(ids, cnt, strict=True)}
    nonground = labelled & ~gt_ground
    res.nonground_labelled = int(nonground.sum())
    res.nonground_in_proposals = int((nonground & (segments >= 0)).sum())

    # entities: thing instances 0..I-1, stuff classes I + train id; -1 ignored
    is_thing = np.isin(train, THING_TRAIN_IDS) & (instance > 0) & labelled
    inst_key = np.where(is_thing, train * (1 << 20) + instance, -1)
    inst_ids, inst_idx = np.unique(inst_key[is_thing], return_inverse=True)
    num_inst = inst_ids.size
    entity = np.full(n, -1, np.int64)
    entity[is_thing] = inst_idx
    stuff = labelled & ~is_thing & (train >= 0)
    entity[stuff] = num_inst + train[stuff]

    has_seg = segments >= 0
    res.num_proposals = int(np.unique(segments[has_seg]).size) if has_seg.any() else 0
    seg_ids = np.unique(segments[has_seg]) if has_seg.any() else np.zeros(0, np.int64)
    seg_compact = np.full(n, -1, np.int64)
    seg_compact[has_seg] = np.searchsorted(seg_ids, segments[has_seg])
    seg_size = np.bincount(seg_compact[has_seg & labelled], minlength=seg_ids.size)

    # instance sizes, classes, centroid ranges
    inst_size = np.bincount(inst_idx, minlength=num_inst)
    inst_class = (inst_ids // (1 << 20)).astype(np.int64)
    evaluated = inst_size >= min_instance_points
    if max_range is not None and xyz is not None and num_inst:
        p = np.asarray(xyz)[is_thing, :3].astype(np.float64)
        cx = np.bincount(inst_idx, weights=p[:, 0], minlength=num_inst) / inst_size
        cy = np.bincount(inst_idx, weights=p[:, 1], minlength=num_inst) / inst_size
        evaluated &= np.hypot(cx, cy) <= max_range
    res.num_instances = int(evaluated.sum())
    res.num_instances_skipped = int(num_inst - res.num_instances)

    # instance x proposal intersections
    both = is_thing & has_seg
    ia, sb, inter = _pair_counts(entity[both], seg_compact[both])
    best_iou = np.zeros(num_inst)
    n_big = np.zeros(num_inst, np.int64)
    if ia.size:
        iou = inter / (inst_size[ia] + seg_size[sb] - inter)
        np.maximum.at(best_iou, ia, iou)
        big = inter >= overlap_fraction * inst_size[ia]
        n_big = np.bincount(ia[big], minlength=num_inst)
    found = evaluated & (best_iou >= iou_threshold)
    res.instances_found = int(found.sum())
    res.instances_over_segmented = int((evaluated & (n_big >= 2)).sum())
    for cid in np.unique(inst_class[evaluated]):
        sel = evaluated & (inst_class == cid)
        res.per_class[CLASS_NAMES[int(cid)]] = {'total': int(sel.sum()),
                                                'found': int((found & sel).sum())}

    # proposal x entity composition
    pe = has_seg & (entity >= 0)
    sa, eb, cnt = _pair_counts(seg_compact[pe], entity[pe])
    if sa.size:
        big = cnt >= overlap_fraction * seg_size[sa]
        n_ent = np.bincount(sa[big], minlength=seg_ids.size)
        under = n_ent >= 2
        res.proposals_under_segmented = int(under.sum())
        thing_pts = np.bincount(sa[eb < num_inst], weights=cnt[eb < num_inst],
                                minlength=seg_ids.size)
        thingy = (thing_pts >= overlap_fraction * np.maximum(seg_size, 1)) & (seg_size > 0)
        res.thing_proposals = int(thingy.sum())
        res.thing_proposals_under_segmented = int((thingy & under).sum())
    return res

"""``dsseg label-points``: image model -> labels of every LiDAR point of a drive (UOV 2D->3D).

Per frame (``dsseg_core.frames.iter_frames``): the image model labels every camera image, the
labels are transferred to the points (``transfer.transfer_labels``: projection, z-buffer,
confidence-weighted vote over cameras), then smoothed along the geometry
(``smoothing.smooth_labels``; ground from ``pseudolabel.ground.segment_ground`` or RANSAC).

Output: a point dataset (read by ``dsseg train-3d``)::

    OUT/dataset.yaml   format_version, kind: points, num_classes, ignore_label: -1, cameras, bags
    OUT/classes.yaml   {id: name} of the image model
    OUT/config.yaml    resolved label_points + frames config
    OUT/index.jsonl    {"id", "points": "points/<id>.npz", "bag", "stamp_ns", "frame_index",
                        "labelled_fraction", "in_view_fraction"}
    OUT/points/<id>.npz  xyz float32 (N,3), intensity float32, ring int32 (if any),
                         labels int32 (smoothed, -1 unknown), confidence float32,
                         transfer_labels int32, transfer_confidence float32, n_views uint8,
                         ground bool

Resumable: a frame whose npz exists is not predicted again (``resume=True``); every file is
written atomically and the index is rebuilt at the end from the files present.

Fallbacks (documented, counted in the summary): a scan that no camera sees (no overlap) is
written with all labels -1 (training ignores it); if no scan at all gets a label the run fails
with a DatasetError (the calibration or the topics are probably wrong).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field

from dsseg_core.atomic import atomic_path, write_text_atomic
from dsseg_core.config import StageConfig, save_config
from dsseg_core.errors import CalibrationError, DatasetError, MessageError
from dsseg_core.points3d.smoothing import SmoothingConfig, smooth_labels

__all__ = [
    'LabelPointsConfig',
    'LabelPointsSummary',
    'ScanLabels',
    'label_points',
    'label_scan',
    'signed_labels',
]

log = logging.getLogger(__name__)

SECTION = 'label_points'
FORMAT_VERSION = 1


class LabelPointsConfig(StageConfig):
    """Section ``label_points``."""

    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    ground_method: Literal['segment_ground', 'ransac', 'none'] = 'segment_ground'
    min_depth: float = Field(1.0, gt=0.0, description='points nearer to a camera are not '
                                                       'labelled by it (m)')
    use_zbuffer: bool = True
    min_pixel_confidence: float = Field(0.0, ge=0.0, le=1.0,
                                        description='pixels below this confidence are ignored')
    cameras: list[str] = Field(default_factory=list, description='cameras to use; [] = all')


@dataclass
class ScanLabels:
    """Transferred and smoothed labels of one scan."""

    labels: np.ndarray  # (N,) int32 smoothed, -1 unknown
    confidence: np.ndarray  # (N,) float32
    transfer_labels: np.ndarray  # (N,) int32 straight from the images, -1 unseen
    transfer_confidence: np.ndarray
    n_views: np.ndarray  # (N,) uint8
    ground: np.ndarray | None  # (N,) bool

    @property
    def in_view(self) -> np.ndarray:
        return self.n_views > 0


def signed_labels(ids: np.ndarray) -> np.ndarray:
    """Label image as int32 with -1 = ignore (255 for uint8, 65535 for uint16, negatives)."""
    ids = np.asarray(ids)
    out = ids.astype(np.int32)
    if ids.dtype == np.uint8:
        out[ids == 255] = -1
    elif ids.dtype == np.uint16:
        out[ids == 65535] = -1
    return np.where(out < 0, -1, out).astype(np.int32)


def label_scan(xyz: np.ndarray, views: Sequence[Any], cfg: LabelPointsConfig | None = None,
               num_classes: int | None = None, ring: np.ndarray | None = None,
               ground_mask: np.ndarray | None = None) -> ScanLabels:
    """Transfer image labels ``views`` (``transfer.CameraView``) to ``xyz`` and smooth them.

    Raises CalibrationError for a view without calibration or a label image whose size is not
    the calibration's. A scan no view overlaps gives all -1 (see module doc).
    """
    from dsseg_core.points3d.transfer import CameraView, transfer_labels

    cfg = cfg or LabelPointsConfig()
    xyz = np.asarray(xyz, np.float32)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise MessageError(f'label_scan: xyz must be (N, 3), got {xyz.shape}')
    xyz = xyz[:, :3]
    checked = []
    for k, v in enumerate(views):
        if getattr(v, 'calib', None) is None:
            raise CalibrationError(f'views[{k}]: camera has no calibration; give a calibration '
                                   'file (frames.calibration_file) or camera_info topics')
        conf = v.confidence
        cls = np.asarray(v.class_ids)
        if cfg.min_pixel_confidence > 0 and conf is not None:
            conf_arr = np.asarray(conf)
            if conf_arr.shape == cls.shape:  # else transfer_labels reports the mismatch
                cls = np.where(conf_arr >= cfg.min_pixel_confidence, signed_labels(cls), -1)
        checked.append(CameraView(v.calib, cls, conf))
    tr = transfer_labels(xyz, checked, min_depth=cfg.min_depth, use_zbuffer=cfg.use_zbuffer)
    scfg = cfg.smoothing
    if ground_mask is None and scfg.method == 'geometric':
        if cfg.ground_method == 'segment_ground':
            from dsseg_core.pseudolabel.ground import segment_ground

            ground_mask = segment_ground(xyz, ring)
        elif cfg.ground_method == 'none':
            scfg = scfg.model_copy(update={'ground': 'none'})
    if ground_mask is not None and scfg.ground != 'none':
        scfg = scfg.model_copy(update={'ground': 'given'})
    if not (tr.labels >= 0).any():
        n = xyz.shape[0]
        return ScanLabels(np.full(n, -1, np.int32), np.zeros(n, np.float32), tr.labels,
                          tr.confidence, tr.n_views, ground_mask)
    sm = smooth_labels(xyz, tr.labels, tr.confidence, scfg, ground_mask=ground_mask,
                       num_classes=num_classes)
    return ScanLabels(sm.labels, sm.confidence, tr.labels, tr.confidence, tr.n_views,
                      sm.ground_mask if sm.ground_mask is not None else ground_mask)


@dataclass
class LabelPointsSummary:
    out: Path
    frames: int = 0
    reused: int = 0
    no_overlap: int = 0
    labelled_points: int = 0
    points: int = 0
    transferred_points: int = 0
    bags: list[str] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)


def _bag_key(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    name = p.stem if p.is_file() else p.name
    return ''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in name) or 'bag'


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as fh:
            np.savez_compressed(fh, **arrays)


def label_points(bags: Iterable[str | os.PathLike[str]], predictor: Any, out: str | Path,
                 cfg: LabelPointsConfig | None = None, frames_cfg: Any = None,
                 resume: bool = False,
                 progress: Callable[[int], None] | None = None) -> LabelPointsSummary:
    """Label every scan of ``bags`` with ``predictor`` (``.predict(rgb) -> (ids, conf)``)."""
    from dsseg_core.frames import FramesConfig, iter_frames
    from dsseg_core.points3d.transfer import CameraView

    cfg = cfg or LabelPointsConfig()
    frames_cfg = frames_cfg or FramesConfig()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume and (out / 'points').is_dir():
        raise DatasetError(f'{out}: already holds labelled points; pass --resume to continue '
                           'or choose another --out')
    (out / 'points').mkdir(parents=True, exist_ok=True)
    save_config({SECTION: cfg.model_dump(mode='json'),
                 'frames': frames_cfg.model_dump(mode='json')}, out / 'config.yaml')
    num_classes = int(getattr(predictor, 'num_classes', 0)) or None
    summary = LabelPointsSummary(out=out)
    entries: list[dict[str, Any]] = []
    cameras: set[str] = set()
    for bag in bags:
        key = _bag_key(bag)
        summary.bags.append(str(bag))
        for frame in iter_frames(bag, frames_cfg):
            sid = f'{key}_{frame.index:06d}'
            rel = f'points/{sid}.npz'
            path = out / rel
            use = [c for name, c in frame.cameras.items()
                   if not cfg.cameras or name in cfg.cameras]
            cameras.update(c.name for c in use)
            if resume and path.is_file():
                try:
                    with np.load(path) as data:
                        labels = data['labels']
                        n_views = data['n_views']
                    summary.reused += 1
                except (OSError, ValueError, KeyError):
                    labels = None
                if labels is not None:
                    entries.append(_entry(sid, rel, bag, frame, labels, n_views))
                    summary.frames += 1
                    if progress:
                        progress(1)
                    continue
            views = []
            for cam in use:
                ids, conf = predictor.predict(cam.image)
                if np.asarray(ids).shape != cam.image.shape[:2]:
                    raise CalibrationError(
                        f'{bag}: camera {cam.name}: the image model returned a '
                        f'{np.asarray(ids).shape} label image for a {cam.image.shape[:2]} '
                        'image; the predictor must return full-resolution labels')
                views.append(CameraView(cam.calib, signed_labels(ids),
                                        None if conf is None else np.asarray(conf, np.float32)))
            cloud = frame.cloud
            res = label_scan(cloud.xyz, views, cfg, num_classes, ring=cloud.ring)
            if not res.in_view.any():
                summary.no_overlap += 1
                log.warning('%s: frame %d: no camera sees any point of the scan; written with '
                            'all labels unknown', bag, frame.index)
            arrays = {'xyz': cloud.xyz.astype(np.float32), 'labels': res.labels,
                      'confidence': res.confidence, 'transfer_labels': res.transfer_labels,
                      'transfer_confidence': res.transfer_confidence, 'n_views': res.n_views}
            if cloud.intensity is not None:
                arrays['intensity'] = cloud.intensity.astype(np.float32)
            if cloud.ring is not None:
                arrays['ring'] = cloud.ring.astype(np.int32)
            if res.ground is not None:
                arrays['ground'] = res.ground
            _write_npz(path, **arrays)
            entries.append(_entry(sid, rel, bag, frame, res.labels, res.n_views))
            summary.frames += 1
            if progress:
                progress(1)
    for e in entries:
        summary.points += e.pop('_n')
        summary.labelled_points += e.pop('_labelled')
        summary.transferred_points += e.pop('_in_view')
    summary.cameras = sorted(cameras)
    if summary.frames == 0:
        raise DatasetError(f'no frames in {", ".join(summary.bags)}; check the topics '
                           '(dsseg frames BAG lists them)')
    if summary.labelled_points == 0:
        raise DatasetError(f'{out}: no point got a label in {summary.frames} frame(s): either no '
                           'camera sees the LiDAR points (check the calibration: T_cam_lidar '
                           'direction, frames.calibration_file, and the camera topics) or the '
                           'image model marked every pixel as ignored')
    text = ''.join(json.dumps(e) + '\n' for e in entries)
    write_text_atomic(out / 'index.jsonl', text)
    names = list(getattr(predictor, 'class_names', []) or
                 [f'class_{i:02d}' for i in range(num_classes or 0)])
    nc = num_classes or len(names)
    write_text_atomic(out / 'classes.yaml', yaml.safe_dump(
        {i: str(n) for i, n in enumerate(names)}, sort_keys=False, allow_unicode=True))
    write_text_atomic(out / 'dataset.yaml', yaml.safe_dump({
        'format_version': FORMAT_VERSION, 'kind': 'points', 'num_classes': int(nc),
        'ignore_label': -1, 'cameras': summary.cameras, 'bags': summary.bags,
        'num_samples': summary.frames}, sort_keys=False))
    return summary


def _entry(sid: str, rel: str, bag: Any, frame: Any, labels: np.ndarray,
           n_views: np.ndarray) -> dict[str, Any]:
    n = int(labels.shape[0])
    lab = int((labels >= 0).sum())
    inv = int((n_views > 0).sum())
    return {'id': sid, 'points': rel, 'bag': str(bag), 'stamp_ns': int(frame.stamp_ns),
            'frame_index': int(frame.index),
            'labelled_fraction': round(lab / max(n, 1), 4),
            'in_view_fraction': round(inv / max(n, 1), 4),
            '_n': n, '_labelled': lab, '_in_view': inv}

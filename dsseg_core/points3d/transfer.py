"""2D→3D label transfer: project LiDAR points into labelled camera images and vote.

Each visible point reads the class (and confidence) of the pixel it falls on in every camera
that sees it; several cameras are fused by a confidence-weighted vote (per point, confidences
are summed per class and the largest sum wins; ties go to the smaller class id), not "last
camera wins". Points seen by no camera (or only on ignored pixels) get ``unknown``.

Unless ``DSSEG_JIT=0``, each camera's projection, z-buffer and pixel lookup, and the vote, run
as numba kernels (:mod:`dsseg_core.projection_kernels`,
:mod:`dsseg_core.points3d.transfer_kernels`: one pass each, no (N,) temporaries); the
vectorised numpy code below is the reference and gives the same arrays.
"""
# Matrix names follow the maths (K, D, R, T, P): ruff pep8-naming is relaxed for them.


from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dsseg_core.calibration import CameraCalibration
from dsseg_core.errors import CalibrationError, MessageError
from dsseg_core.jit import jit_enabled
from dsseg_core.points3d.transfer_kernels import lookup_votes_kernel, vote_kernel
from dsseg_core.projection import (
    DEFAULT_DEPTH_TOLERANCE,
    DEFAULT_ZBUFFER_RADIUS_PX,
    _as_points,
    project_points,
    project_points_kernel,
    zbuffer_scratch,
    zbuffer_visible,
)
from dsseg_core.projection_kernels import MODEL_CODES, zbuffer_kernel

__all__ = ['CameraView', 'TransferResult', 'transfer_labels', 'view_votes']

log = logging.getLogger(__name__)


@dataclass
class CameraView:
    """One labelled image: ``class_ids`` (H, W) int (uint8/uint16 with 255/65535 = ignore, or
    any signed int with negatives = ignore), optional per-pixel ``confidence`` (H, W) float32
    (None = 1 everywhere), and the calibration of that image size."""

    calib: CameraCalibration
    class_ids: np.ndarray
    confidence: np.ndarray | None = None


@dataclass
class TransferResult:
    """Per-point result: ``labels`` int32 (N,) (``unknown`` where no vote), ``confidence``
    float32 (N,) (winning class's summed confidence / number of votes; 0 where unknown),
    ``n_views`` uint8 (N,) (number of cameras that voted for the point).

    Unpacks as ``labels, confidence = transfer_labels(...)``.
    """

    labels: np.ndarray
    confidence: np.ndarray
    n_views: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.labels
        yield self.confidence


def _default_ignore(dtype: np.dtype) -> int | None:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    return None


def _check_view(view: CameraView, k: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    if not isinstance(view.calib, CameraCalibration):
        raise CalibrationError(f'views[{k}]: calib must be a CameraCalibration')
    cam = view.calib.camera
    name = cam.name or f'views[{k}]'
    cls = np.asarray(view.class_ids)
    if cls.ndim != 2 or not np.issubdtype(cls.dtype, np.integer):
        raise MessageError(
            f'camera {name!r}: class_ids must be an (H, W) integer image, got '
            f'{cls.dtype} {cls.shape}'
        )
    if cls.shape != (cam.height, cam.width):
        raise CalibrationError(
            f'camera {name!r}: label image is {cls.shape[1]}x{cls.shape[0]} but the calibration '
            f'is for {cam.width}x{cam.height}; resize the label image or use '
            f'calib.camera.resized({cls.shape[1]}, {cls.shape[0]})'
        )
    conf = None
    if view.confidence is not None:
        conf = np.asarray(view.confidence)
        if conf.shape != cls.shape:
            raise MessageError(
                f'camera {name!r}: confidence image is {conf.shape} but class_ids is {cls.shape}'
            )
    return cls, conf, name


def view_votes(
    xyz: np.ndarray,
    view: CameraView,
    min_depth: float = 0.5,
    use_zbuffer: bool = True,
    radius_px: int = DEFAULT_ZBUFFER_RADIUS_PX,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
    ignore_index: int | None = None,
    _k: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Votes of one camera: ``(point_index int64, class int64, confidence float32)`` for the
    visible points that fall on labelled (not ignored) pixels."""
    cls_img, conf_img, _ = _check_view(view, _k)
    cam = view.calib.camera
    ignore = _default_ignore(cls_img.dtype) if ignore_index is None else ignore_index
    if jit_enabled() and cam.distortion_model in MODEL_CODES and (
            not use_zbuffer or _zbuffer_args_ok(radius_px, depth_tolerance)):
        return _view_votes_jit(_as_points(xyz), view.calib, cls_img, conf_img, min_depth,
                               use_zbuffer, radius_px, depth_tolerance, ignore)
    proj = project_points(xyz, view.calib, min_depth=min_depth)
    rows, cols = proj.pixels()
    pidx = proj.point_index
    if use_zbuffer and len(proj):
        keep = np.flatnonzero(zbuffer_visible(proj, cam.width, cam.height, radius_px,
                                              depth_tolerance))
        rows, cols, pidx = rows[keep], cols[keep], pidx[keep]
    flat = rows * cam.width + cols
    cls = np.take(cls_img.reshape(-1), flat).astype(np.int64, copy=False)
    valid = cls >= 0
    if ignore is not None:
        valid &= cls != ignore
    if conf_img is None:
        conf = np.ones(int(valid.sum()), dtype=np.float32)
    else:
        conf = np.take(conf_img.reshape(-1), flat[valid]).astype(np.float32, copy=False)
    return pidx[valid], cls[valid], conf


def _zbuffer_args_ok(radius_px: int, depth_tolerance: float) -> bool:
    """Whether :func:`zbuffer_visible` accepts these (else the numpy path raises its error)."""
    return radius_px >= 0 and 0.0 <= depth_tolerance < 1.0


#: Label image dtypes the kernel reads as they are; others are cast to int64 first.
_KERNEL_CLASS_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32),
                        np.dtype(np.int64))
_NO_CONFIDENCE = np.ones((1, 1), np.float32)
_NO_VISIBILITY = np.ones(1, bool)


def _view_votes_jit(pts: np.ndarray, calib: CameraCalibration, cls_img: np.ndarray,
                    conf_img: np.ndarray | None, min_depth: float, use_zbuffer: bool,
                    radius_px: int, depth_tolerance: float, ignore: int | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel path of :func:`view_votes`: projection, z-buffer and pixel lookup kernels."""
    cam = calib.camera
    pts = np.ascontiguousarray(pts)
    if cls_img.dtype in _KERNEL_CLASS_DTYPES:
        cls_img = np.ascontiguousarray(cls_img)
    else:
        cls_img = np.ascontiguousarray(cls_img, np.int64)
    conf = _NO_CONFIDENCE if conf_img is None else np.ascontiguousarray(conf_img, np.float32)
    index, uv, depth = project_points_kernel(pts, calib, min_depth)
    use_visible = bool(use_zbuffer) and index.size > 0
    visible = (zbuffer_kernel(uv, depth, cam.width, cam.height, int(radius_px),
                              np.float32(1.0 - depth_tolerance),
                              zbuffer_scratch(cam.width, cam.height, int(radius_px)))
               if use_visible else _NO_VISIBILITY)
    return lookup_votes_kernel(index, uv, visible, use_visible, cam.width, cam.height, cls_img,
                               ignore is not None, np.int64(0 if ignore is None else ignore),
                               conf, conf_img is not None)


def transfer_labels(
    xyz: np.ndarray,
    views: Sequence[CameraView] | CameraView,
    min_depth: float = 0.5,
    use_zbuffer: bool = True,
    unknown: int = -1,
    *,
    radius_px: int = DEFAULT_ZBUFFER_RADIUS_PX,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
    ignore_index: int | None = None,
) -> TransferResult:
    """Label LiDAR points (N, 3+) from one or more labelled camera images.

    ``ignore_index`` None = 255 for uint8 / 65535 for uint16 label images (negative ids are
    always ignored). ``use_zbuffer`` removes points hidden behind nearer ones
    (:func:`dsseg_core.projection.zbuffer_visible` with ``radius_px``, ``depth_tolerance``).
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise MessageError(f'points: expected an (N, 3) array, got shape {xyz.shape}')
    if isinstance(views, CameraView):
        views = [views]
    n = xyz.shape[0]
    if jit_enabled():
        pts = np.ascontiguousarray(_as_points(xyz))  # once for all views
        votes = [view_votes(pts, v, min_depth, use_zbuffer, radius_px, depth_tolerance,
                            ignore_index, _k=k) for k, v in enumerate(views)]
        if len(votes) == 1:
            pidx, cls, conf = votes[0]
        elif votes:
            pidx, cls, conf = (np.concatenate(column) for column in zip(*votes, strict=True))
        else:
            pidx, cls, conf = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        one_camera = sum(1 for v in votes if v[0].size) <= 1
        return TransferResult(*vote_kernel(n, pidx, cls, conf, int(unknown), one_camera))
    labels = np.full(n, unknown, dtype=np.int32)
    confidence = np.zeros(n, dtype=np.float32)
    n_views = np.zeros(n, dtype=np.uint8)
    votes = [view_votes(xyz, v, min_depth, use_zbuffer, radius_px, depth_tolerance,
                        ignore_index, _k=k) for k, v in enumerate(views)]
    votes = [v for v in votes if v[0].size]
    if not votes:
        return TransferResult(labels, confidence, n_views)
    if len(votes) == 1:
        # One camera: a point is seen at most once, no vote needed.
        pidx, cls, conf = votes[0]
        labels[pidx] = cls
        confidence[pidx] = conf
        n_views[pidx] = 1
        return TransferResult(labels, confidence, n_views)
    pidx = np.concatenate([v[0] for v in votes])
    cls = np.concatenate([v[1] for v in votes])
    conf = np.concatenate([v[2] for v in votes])
    nvotes = np.bincount(pidx, minlength=n)
    n_views[:] = np.minimum(nvotes, 255).astype(np.uint8)
    # Points with a single vote (most of them: cameras overlap little) need no vote.
    single = nvotes[pidx] == 1
    labels[pidx[single]] = cls[single]
    confidence[pidx[single]] = conf[single]
    multi = ~single
    if multi.any():
        pt, lab, win_sum = _vote(pidx[multi], cls[multi], conf[multi].astype(np.float64))
        labels[pt] = lab
        confidence[pt] = (win_sum / nvotes[pt]).astype(np.float32)
    return TransferResult(labels, confidence, n_views)


def _vote(pidx: np.ndarray, cls: np.ndarray, conf: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence-weighted vote over (point, class, confidence) rows without a dense (N, C)
    array: sort by (point, class), sum per pair, keep each point's largest sum (ties: smaller
    class). Returns (points, winning class, winning summed confidence)."""
    cmin = int(cls.min())
    span = int(cls.max()) - cmin + 1
    key = pidx * span + (cls - cmin)
    order = np.argsort(key, kind='stable')
    skey = key[order]
    starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
    sums = np.add.reduceat(conf[order], starts)
    ukey = skey[starts]
    upt = ukey // span
    ucls = ukey % span + cmin
    pstarts = np.flatnonzero(np.r_[True, upt[1:] != upt[:-1]])
    best = np.maximum.reduceat(sums, pstarts)
    counts = np.diff(np.r_[pstarts, upt.size])
    is_best = sums >= np.repeat(best, counts)
    # First (smallest class) best row of each point.
    cand = np.flatnonzero(is_best)
    first = np.r_[True, upt[cand[1:]] != upt[cand[:-1]]]
    win = cand[first]
    return upt[win], ucls[win], sums[win]

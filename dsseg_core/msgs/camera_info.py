"""sensor_msgs/CameraInfo → :class:`dsseg_core.calibration.CameraModel`.

Intrinsics come from ``k`` (row-major 3x3) and ``d``; ``distortion_model`` is one of
``plumb_bob``, ``rational_polynomial``, ``equidistant`` (aliases accepted by
:func:`~dsseg_core.calibration.normalize_distortion_model`), or empty: an empty model with an
all-zero (or empty) ``d`` means an undistorted camera (``'none'``), an empty model with 5 / 8
non-zero coefficients is read as plumb_bob / rational_polynomial (with a warning).

Binning and region of interest are applied the way image_geometry does, so the returned model
describes the images actually published: ROI offsets are subtracted from the principal point,
then ``fx, cx`` are divided by ``binning_x`` and ``fy, cy`` by ``binning_y``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dsseg_core.calibration import CameraModel
from dsseg_core.errors import CalibrationError
from dsseg_core.msgs.buffer import header_frame_id

__all__ = ['camera_model_from_camera_info']

log = logging.getLogger(__name__)

_BY_COUNT = {5: 'plumb_bob', 8: 'rational_polynomial'}


def _floats(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(list(value) if not isinstance(value, np.ndarray) else value,
                          dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise CalibrationError(f'CameraInfo.{what} is not a list of numbers ({err})') from err


def camera_model_from_camera_info(msg: Any, frame_id: str | None = None,
                                  name: str = '') -> CameraModel:
    """Build a validated :class:`CameraModel` from a CameraInfo-like message.

    ``frame_id`` overrides ``msg.header.frame_id``. Raises :class:`CalibrationError` naming
    the CameraInfo field for an uncalibrated camera (zero ``k``, zero width/height), a
    malformed ``k``/``d`` or an unknown distortion model.
    """
    topic = f'CameraInfo ({name})' if name else 'CameraInfo'
    try:
        width, height = int(msg.width), int(msg.height)
        # ROS 1 CameraInfo spells the matrices K and D.
        k = _floats(msg.k if hasattr(msg, 'k') else msg.K, 'k')
        d = _floats(msg.d if hasattr(msg, 'd') else msg.D, 'd')
        model = str(msg.distortion_model or '')
    except AttributeError as err:
        raise CalibrationError(f'{topic}: not a CameraInfo-like message ({err})') from err
    if width <= 0 or height <= 0:
        raise CalibrationError(
            f'{topic}: width={width}, height={height}; the camera driver publishes no image '
            'size: calibrate the camera (camera_calibration) or give a calibration file'
        )
    if k.size != 9:
        raise CalibrationError(f'{topic}: k has {k.size} numbers, expected 9 (row-major 3x3)')
    if not np.any(k):
        raise CalibrationError(
            f'{topic}: k is all zeros (the camera is not calibrated); run camera_calibration '
            'and publish its result, or give a calibration file (frames.calibration)'
        )
    intrinsics = k.reshape(3, 3).copy()
    if not model.strip():
        if not np.any(d):
            model, d = 'none', np.zeros(0)
        elif d.size in _BY_COUNT:
            model = _BY_COUNT[d.size]
            log.warning('%s: empty distortion_model with %d coefficients; assuming %s',
                        topic, d.size, model)
        else:
            raise CalibrationError(
                f'{topic}: distortion_model is empty but d has {d.size} non-zero '
                'coefficients; set distortion_model to plumb_bob, rational_polynomial or '
                'equidistant'
            )

    roi = getattr(msg, 'roi', None)
    rw, rh = int(getattr(roi, 'width', 0) or 0), int(getattr(roi, 'height', 0) or 0)
    if rw > 0 and rh > 0 and (rw, rh) != (width, height):
        intrinsics[0, 2] -= int(roi.x_offset)
        intrinsics[1, 2] -= int(roi.y_offset)
        width, height = rw, rh
    bx = max(int(getattr(msg, 'binning_x', 0) or 0), 1)
    by = max(int(getattr(msg, 'binning_y', 0) or 0), 1)
    if bx > 1 or by > 1:
        intrinsics[0, :] /= bx
        intrinsics[1, :] /= by
        width, height = width // bx, height // by

    frame = frame_id if frame_id is not None else header_frame_id(msg)
    try:
        return CameraModel(width=width, height=height, K=intrinsics, D=d,
                           distortion_model=model, frame_id=frame, name=name)
    except CalibrationError as err:
        raise CalibrationError(f'{topic}: {err}') from err

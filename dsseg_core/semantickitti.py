"""SemanticKITTI scans and labels: loading, the standard 19-class mapping and class names.

* ``.bin`` scans: float32 ``N x 4`` (x, y, z, remission), LiDAR frame, metres.
* ``.label`` files: uint32 per point; lower 16 bits = semantic (raw) class id, upper 16 bits =
  instance id (0 = no instance).

The evaluation mapping is the public ``learning_map`` of the SemanticKITTI API's
``semantic-kitti.yaml``: moving classes are folded into their static class, ``unlabeled``,
``outlier``, ``other-structure`` and ``other-object`` are ignored. dsseg uses 0-based train ids
(``0 = car`` ... ``18 = traffic-sign``) and ``-1`` for ignored points (the point-label convention
of ``docs/ARCHITECTURE.md``); :data:`LEARNING_MAP` keeps the original 1-based ids (0 = ignore).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsseg_core.errors import DatasetError

__all__ = [
    'CLASS_NAMES',
    'GROUND_RAW_IDS',
    'IGNORE_TRAIN_ID',
    'LEARNING_MAP',
    'NUM_CLASSES',
    'RAW_CLASS_NAMES',
    'THING_TRAIN_IDS',
    'SemanticKittiLabels',
    'load_labels',
    'load_scan',
    'to_train_ids',
]

#: Raw SemanticKITTI class ids and names (``semantic-kitti.yaml`` ``labels``).
RAW_CLASS_NAMES: dict[int, str] = {
    0: 'unlabeled', 1: 'outlier', 10: 'car', 11: 'bicycle', 13: 'bus', 15: 'motorcycle',
    16: 'on-rails', 18: 'truck', 20: 'other-vehicle', 30: 'person', 31: 'bicyclist',
    32: 'motorcyclist', 40: 'road', 44: 'parking', 48: 'sidewalk', 49: 'other-ground',
    50: 'building', 51: 'fence', 52: 'other-structure', 60: 'lane-marking', 70: 'vegetation',
    71: 'trunk', 72: 'terrain', 80: 'pole', 81: 'traffic-sign', 99: 'other-object',
    252: 'moving-car', 253: 'moving-bicyclist', 254: 'moving-person',
    255: 'moving-motorcyclist', 256: 'moving-on-rails', 257: 'moving-bus',
    258: 'moving-truck', 259: 'moving-other-vehicle',
}

#: Raw id -> 1-based train id, 0 = ignored (``semantic-kitti.yaml`` ``learning_map``).
LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17,
    80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}

#: The 19 evaluation classes, indexed by dsseg's 0-based train id.
CLASS_NAMES: tuple[str, ...] = (
    'car', 'bicycle', 'motorcycle', 'truck', 'other-vehicle', 'person', 'bicyclist',
    'motorcyclist', 'road', 'parking', 'sidewalk', 'other-ground', 'building', 'fence',
    'vegetation', 'trunk', 'terrain', 'pole', 'traffic-sign',
)
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_TRAIN_ID = -1

#: 0-based train ids of the countable "thing" classes (vehicles and people).
THING_TRAIN_IDS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)

#: Raw ids of ground surfaces: road, parking, sidewalk, other-ground, lane-marking, terrain.
GROUND_RAW_IDS: tuple[int, ...] = (40, 44, 48, 49, 60, 72)

_LUT_SIZE = 1 << 16
_TRAIN_LUT = np.full(_LUT_SIZE, IGNORE_TRAIN_ID, dtype=np.int32)
for _raw, _train in LEARNING_MAP.items():
    _TRAIN_LUT[_raw] = _train - 1  # 0 (ignored) becomes -1


def to_train_ids(semantic_raw: np.ndarray) -> np.ndarray:
    """Map raw semantic ids (any int array; upper bits are masked off) to 0-based train ids.

    Returns int32 in ``0..18``; ignored and unknown raw ids become ``-1``.
    """
    raw = np.asarray(semantic_raw).astype(np.int64) & 0xFFFF
    return _TRAIN_LUT[raw]


@dataclass
class SemanticKittiLabels:
    """Per-point ground truth of one scan."""

    semantic_raw: np.ndarray  # (N,) int32, raw SemanticKITTI ids
    instance: np.ndarray  # (N,) int32, 0 = no instance

    @property
    def train_ids(self) -> np.ndarray:
        """(N,) int32 0-based train ids, -1 = ignored."""
        return to_train_ids(self.semantic_raw)

    def __len__(self) -> int:
        return int(self.semantic_raw.shape[0])


def load_scan(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI/SemanticKITTI ``.bin`` scan.

    Returns ``(xyz (N,3) float32, remission (N,) float32)``.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.float32)
    except FileNotFoundError as err:
        raise DatasetError(f'{path}: scan file not found') from err
    except OSError as err:
        raise DatasetError(f'{path}: cannot read scan: {err.strerror}') from err
    if data.size % 4:
        raise DatasetError(
            f'{path}: size {data.size * 4} bytes is not a multiple of 16; expected float32 '
            'N x 4 (x, y, z, remission) as in KITTI velodyne .bin files'
        )
    data = data.reshape(-1, 4)
    return np.ascontiguousarray(data[:, :3]), np.ascontiguousarray(data[:, 3])


def load_labels(path: str | os.PathLike[str],
                num_points: int | None = None) -> SemanticKittiLabels:
    """Read a SemanticKITTI ``.label`` file; ``num_points`` (the scan's N) is checked if given."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype='<u4')
    except FileNotFoundError as err:
        raise DatasetError(f'{path}: label file not found') from err
    except OSError as err:
        raise DatasetError(f'{path}: cannot read labels: {err.strerror}') from err
    if num_points is not None and data.size != num_points:
        raise DatasetError(
            f'{path}: {data.size} labels for a scan of {num_points} points; the .label file '
            'must belong to the same scan (same sequence and index)'
        )
    semantic = (data & 0xFFFF).astype(np.int32)
    instance = (data >> 16).astype(np.int32)
    return SemanticKittiLabels(semantic_raw=semantic, instance=instance)

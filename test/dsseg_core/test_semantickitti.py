from __future__ import annotations

import numpy as np
import pytest

from dsseg_core.errors import DatasetError
from dsseg_core.semantickitti import (
    CLASS_NAMES,
    GROUND_RAW_IDS,
    LEARNING_MAP,
    NUM_CLASSES,
    RAW_CLASS_NAMES,
    THING_TRAIN_IDS,
    load_labels,
    load_scan,
    to_train_ids,
)


def test_standard_mapping_folds_moving_classes_and_ignores_void():
    raw = np.array([10, 252, 60, 40, 0, 1, 52, 99, 81, 259, 13, 254, 72, 12345])
    train = to_train_ids(raw)
    names = [CLASS_NAMES[t] if t >= 0 else None for t in train]
    assert names == ['car', 'car', 'road', 'road', None, None, None, None, 'traffic-sign',
                     'other-vehicle', 'other-vehicle', 'person', 'terrain', None]
    assert train.dtype == np.int32


def test_mapping_masks_instance_bits_and_covers_all_raw_ids():
    packed = np.array([(7 << 16) | 10, (3 << 16) | 254], dtype=np.uint32)
    assert to_train_ids(packed).tolist() == [0, 5]
    assert set(LEARNING_MAP) == set(RAW_CLASS_NAMES)
    assert NUM_CLASSES == 19
    assert sorted(set(LEARNING_MAP.values()) - {0}) == list(range(1, 20))
    assert [CLASS_NAMES[t] for t in THING_TRAIN_IDS] == [
        'car', 'bicycle', 'motorcycle', 'truck', 'other-vehicle', 'person', 'bicyclist',
        'motorcyclist']
    assert {RAW_CLASS_NAMES[r] for r in GROUND_RAW_IDS} == {
        'road', 'parking', 'sidewalk', 'other-ground', 'lane-marking', 'terrain'}


def test_load_scan_and_labels_roundtrip(tmp_path):
    pts = np.arange(20, dtype=np.float32).reshape(5, 4)
    pts.tofile(tmp_path / 'a.bin')
    lab = np.array([10, (2 << 16) | 10, 40, 0, (9 << 16) | 254], dtype='<u4')
    lab.tofile(tmp_path / 'a.label')
    xyz, rem = load_scan(tmp_path / 'a.bin')
    assert xyz.shape == (5, 3) and xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz, pts[:, :3])
    np.testing.assert_array_equal(rem, pts[:, 3])
    gt = load_labels(tmp_path / 'a.label', num_points=5)
    assert gt.semantic_raw.tolist() == [10, 10, 40, 0, 254]
    assert gt.instance.tolist() == [0, 2, 0, 0, 9]
    assert gt.train_ids.tolist() == [0, 0, 8, -1, 5]
    assert len(gt) == 5


def test_bad_files_raise_dataset_errors(tmp_path):
    np.zeros(7, np.float32).tofile(tmp_path / 'bad.bin')
    with pytest.raises(DatasetError, match='bad.bin'):
        load_scan(tmp_path / 'bad.bin')
    with pytest.raises(DatasetError, match='not found'):
        load_scan(tmp_path / 'missing.bin')
    np.zeros(3, '<u4').tofile(tmp_path / 'a.label')
    with pytest.raises(DatasetError, match='3 labels for a scan of 4 points'):
        load_labels(tmp_path / 'a.label', num_points=4)
    with pytest.raises(DatasetError, match='not found'):
        load_labels(tmp_path / 'missing.label')


def test_real_semantickitti_scan(semantickitti_dir):
    xyz, rem = load_scan(semantickitti_dir / 'velodyne' / '000000.bin')
    gt = load_labels(semantickitti_dir / 'labels' / '000000.label', num_points=xyz.shape[0])
    assert xyz.shape == (124668, 3)
    assert 0.0 <= rem.min() and rem.max() <= 1.0
    train = gt.train_ids
    assert (train == CLASS_NAMES.index('road')).mean() > 0.05
    things = np.isin(train, THING_TRAIN_IDS) & (gt.instance > 0)
    assert np.unique(gt.instance[things]).size == 14

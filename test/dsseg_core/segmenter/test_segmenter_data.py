"""Training data: the dataset format, augmentations, and the resumable/sharded sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsseg_core.errors import DatasetError
from dsseg_core.segmenter.data import (
    IGNORE,
    DataConfig,
    SegmentationDataset,
    StepBatchSampler,
    augment,
)


def test_dataset_reads_the_format(make_dataset) -> None:  # noqa: ANN001
    root = make_dataset(num_images=3, num_classes=3, labelled_frac=0.5)
    ds = SegmentationDataset(root)
    assert len(ds) == 3 and ds.num_classes == 3
    assert ds.class_names == ['ground', 'class_01', 'class_02']
    sample = ds.load(1)
    raw = np.asarray(Image.open(root / 'labels' / '000001.png'))
    assert sample.image.shape == (64, 128, 3) and sample.image.dtype == np.uint8
    assert np.array_equal(sample.labels == IGNORE, raw == 255)
    assert np.array_equal(sample.labels[raw != 255], raw[raw != 255])


def test_dataset_errors_name_the_file(make_dataset) -> None:  # noqa: ANN001
    root = make_dataset(num_images=2, num_classes=3)
    label = np.asarray(Image.open(root / 'labels' / '000000.png')).copy()
    label[0, 0] = 9
    Image.fromarray(label).save(root / 'labels' / '000000.png')
    with pytest.raises(DatasetError, match=r'000000.png.*label value 9'):
        SegmentationDataset(root).load(0)
    with (root / 'index.jsonl').open('a') as fh:
        fh.write('{broken\n')
    with pytest.raises(DatasetError, match=r'index.jsonl:3'):
        SegmentationDataset(root)
    (root / 'index.jsonl').write_text(json.dumps({'id': 'x', 'labels': 'labels/x.png'}) + '\n')
    with pytest.raises(DatasetError, match="no 'image'"):
        SegmentationDataset(root)
    with pytest.raises(DatasetError, match='dataset.yaml'):
        SegmentationDataset(root / 'images')


def test_augment_keeps_image_and_labels_aligned() -> None:
    # Each pixel's colour encodes its class, so after any crop/scale/flip the (nearest)
    # label must agree with the colour of its pixel wherever the pixel is not a blend.
    rng = np.random.default_rng(0)
    classes = np.kron(rng.integers(0, 3, size=(6, 10)), np.ones((10, 10), dtype=np.int64))
    rgb = (classes[..., None] * np.array([100, 50, 20])).astype(np.uint8)
    cfg = DataConfig(crop=(48, 64), scale_range=(0.5, 2.0), hflip=True, color_jitter=0.0)
    mean, std = np.zeros(3, np.float32), np.ones(3, np.float32)
    for seed in range(10):
        img, lab = augment(rgb, classes, cfg, np.random.default_rng(seed), mean, std)
        assert img.shape == (3, 48, 64) and lab.shape == (48, 64) and lab.dtype == np.int64
        valid = lab != IGNORE
        assert valid.any()
        colour_class = img[0] * 255 / 100
        exact = np.abs(colour_class - np.round(colour_class)) < 1e-3
        check = valid & exact
        assert np.mean(np.round(colour_class[check]) == lab[check]) > 0.99
        assert np.all(img[:, ~valid] == 0)  # padding is the mean colour


def test_augment_is_a_pure_function_of_the_rng_seed() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    labels = np.random.default_rng(2).integers(0, 4, size=(30, 50))
    cfg = DataConfig(crop=24, color_jitter=0.3)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.2, np.float32)
    a = augment(rgb, labels, cfg, np.random.default_rng([0, 1, 2]), mean, std)
    b = augment(rgb, labels, cfg, np.random.default_rng([0, 1, 2]), mean, std)
    c = augment(rgb, labels, cfg, np.random.default_rng([0, 1, 3]), mean, std)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_sampler_order_is_pure_and_shards_are_disjoint() -> None:
    full = StepBatchSampler(10, 2, seed=5, start_step=0, end_step=10)
    resumed = StepBatchSampler(10, 2, seed=5, start_step=4, end_step=10)
    assert list(full)[4:] == list(resumed)
    assert full.steps_per_epoch == 5
    epoch0 = [i for batch in list(full)[:5] for i, e in batch]
    assert sorted(epoch0) == list(range(10))  # each sample once per epoch
    assert list(full)[0] != list(full)[5]  # epochs are shuffled differently
    ranks = [StepBatchSampler(10, 2, seed=5, start_step=0, end_step=2, rank=r, world_size=2)
             for r in (0, 1)]
    seen = [i for s in ranks for batch in s for i, _ in batch]
    assert len(seen) == len(set(seen)) == 8  # 2 steps x 2 ranks x 2: no sample twice
    single = StepBatchSampler(10, 4, seed=5, start_step=0, end_step=2)
    for step in range(2):  # ranks split exactly the global batch a single process would see
        assert ranks[0].batch_for_step(step) + ranks[1].batch_for_step(step) == \
            single.batch_for_step(step)
    tiny = StepBatchSampler(3, 4, seed=0, start_step=0, end_step=1)
    assert len(next(iter(tiny))) == 4  # a dataset smaller than a batch repeats


def test_dataset_item_is_deterministic_per_epoch(make_dataset) -> None:  # noqa: ANN001
    ds = SegmentationDataset(make_dataset(num_images=2), DataConfig(crop=(32, 32)), seed=3)
    a, b, c = ds[(1, 0)], ds[(1, 0)], ds[(1, 1)]
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert isinstance(Path(ds.root), Path)


def test_validate_checks_every_sample_from_headers(make_dataset) -> None:  # noqa: ANN001
    root = make_dataset(num_images=3, num_classes=3)
    SegmentationDataset(root).validate()   # a good dataset passes
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / 'labels' / '000002.png')
    with pytest.raises(DatasetError, match=r'000002\.png: label image 16x16 does not match '
                                           r'its image 128x64'):
        SegmentationDataset(root).validate()
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(root / 'labels' / '000002.png')
    with pytest.raises(DatasetError, match=r'000002\.png: label image .* 3 channels'):
        SegmentationDataset(root).validate()
    (root / 'images' / '000001.png').unlink()
    with pytest.raises(DatasetError, match=r'000001\.png: image file of sample .* missing'):
        SegmentationDataset(root).validate()
    (root / 'images' / '000001.png').write_bytes(b'not a png')
    with pytest.raises(DatasetError, match=r'000001\.png: cannot read the image'):
        SegmentationDataset(root).validate()

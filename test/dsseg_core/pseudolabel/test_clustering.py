from __future__ import annotations

import logging

import numpy as np
import pytest

from dsseg_core.errors import DatasetError
from dsseg_core.pseudolabel.clustering import Centroids, ClusteringConfig, fit_centroids
from dsseg_core.pseudolabel.descriptors import DescriptorSpec


def _blobs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (3, 25))
    truth = rng.integers(0, 3, n)
    return centres[truth] + rng.normal(0, 0.3, (n, 25)), truth


SPEC = DescriptorSpec(('geometric', 'colour'), (16, 9))


def test_kmeans_finds_blobs_and_is_seeded() -> None:
    desc, truth = _blobs()
    cfg = ClusteringConfig(k=3, seed=7, n_init=2)
    c = fit_centroids(desc, SPEC, cfg)
    lab = c.assign(desc)
    assert set(lab.tolist()) == {1, 2, 3}
    # each blob is exactly one class
    for t in range(3):
        assert len(set(lab[truth == t].tolist())) == 1
    again = fit_centroids(desc, SPEC, cfg)
    assert np.array_equal(again.centroids, c.centroids)
    assert c.num_classes == 4 and c.k == 3


def test_centroids_roundtrip(tmp_path) -> None:
    desc, _ = _blobs()
    c = fit_centroids(desc, SPEC, ClusteringConfig(k=4, seed=1, n_init=1))
    path = tmp_path / 'centroids.npz'
    c.save(path)
    back = Centroids.load(path)
    assert back.spec == SPEC and back.k == 4 and back.seed == 1
    new = desc + 0.01
    assert np.array_equal(back.assign(new), c.assign(new))


def test_k_larger_than_segments_is_reduced_with_warning(caplog) -> None:
    desc, _ = _blobs(5)
    with caplog.at_level(logging.WARNING):
        c = fit_centroids(desc, SPEC, ClusteringConfig(k=30, n_init=1))
    assert c.k == 5 and c.requested_k == 30
    assert 'larger than the number of distinct' in caplog.text
    assert sorted(c.assign(desc).tolist()) == [1, 2, 3, 4, 5]


def test_no_descriptors_and_bad_files(tmp_path) -> None:
    with pytest.raises(DatasetError, match='no segment descriptors'):
        fit_centroids(np.zeros((0, 25)), SPEC, ClusteringConfig())
    with pytest.raises(DatasetError, match='not found'):
        Centroids.load(tmp_path / 'missing.npz')
    bad = tmp_path / 'bad.npz'
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(DatasetError, match='not a dsseg centroids'):
        Centroids.load(bad)
    desc, _ = _blobs()
    c = fit_centroids(desc, SPEC, ClusteringConfig(k=3, n_init=1))
    with pytest.raises(DatasetError, match='features'):
        c.assign(np.zeros((2, 7)))

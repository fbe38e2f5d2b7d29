"""Union-find connected components: the same labels as scipy's ``connected_components``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from dsseg_core.pseudolabel.components import connected_components, uf_find, uf_labels, uf_union


def _scipy(n: int, a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray]:
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n)).tocsr()
    k, labels = scipy_components(graph, directed=False)
    return k, labels


@pytest.mark.parametrize('seed', range(6))
def test_random_graphs_match_scipy(kernel_path, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    m = int(rng.integers(0, 2 * n))
    a = rng.integers(0, n, m)
    # mostly local edges (as in an image), some long ones, self-loops and duplicates
    b = np.clip(a + rng.integers(-3, 4, m), 0, n - 1)
    far = rng.random(m) < 0.05
    b[far] = rng.integers(0, n, int(far.sum()))
    a = np.concatenate([a, a[:10]])
    b = np.concatenate([b, b[:10]])
    k, labels = connected_components(n, a, b)
    k_ref, ref = _scipy(n, a, b)
    assert k == k_ref
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, ref)


def test_numbering_follows_the_smallest_node(kernel_path):
    # components {0, 5}, {1}, {2, 3, 4}; edges given largest node first
    k, labels = connected_components(6, np.array([5, 4, 4]), np.array([0, 2, 3]))
    assert k == 3
    assert labels.tolist() == [0, 1, 2, 2, 2, 0]
    k, labels = connected_components(4, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert k == 4 and labels.tolist() == [0, 1, 2, 3]


def test_union_keeps_the_smallest_root_and_labels_walk_parents():
    parent = np.arange(8, dtype=np.int32)
    uf_union(parent, 7, 6)
    uf_union(parent, 6, 3)
    uf_union(parent, 5, 4)
    uf_union(parent, 4, 7)
    assert uf_find(parent, 7) == 3 and uf_find(parent, 5) == 3
    # every parent is smaller than its child: uf_labels needs no find
    assert (parent <= np.arange(8)).all()
    k, labels = uf_labels(parent)
    assert k == 4
    assert labels.tolist() == [0, 1, 2, 3, 3, 3, 3, 3]

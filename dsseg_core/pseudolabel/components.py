"""Connected components of image graphs: a union-find kernel numbered like scipy.

The ground and proposal stages label the connected components of graphs over range-image
pixels (an edge joins two neighbouring pixels that pass a test). The numpy path builds the edge
list and calls ``scipy.sparse.csgraph.connected_components``; the kernels instead join pixels
as they test them, with a union-find forest over the flat pixel ids:

* ``uf_find`` returns a node's root and compresses the path it walked (every node on it then
  points at the root directly);
* ``uf_union`` links the two roots, always hanging the larger id under the smaller one, so a
  component's root is its smallest node;
* ``uf_labels`` numbers the components 0..K-1 in order of their smallest node, walking the
  nodes in id order: a node that is its own root opens the next label, every other node takes
  its parent's label. In a forest built by ``uf_union`` a parent always has a smaller id than
  its child (roots are smallest, compression points at roots), so the parent is labelled
  already, with its root's label: no ``find`` is needed. This is the order scipy's
  ``connected_components`` gives (its search starts from the unlabelled node of smallest id),
  so labels, and the segment ids derived from them, are identical.

Union by smallest id with full path compression costs amortised O(log n) per operation at
worst, in practice a few steps: image graphs are 4-neighbourhoods with short paths.

numba caches a kernel that calls these functions with the caller; after editing this module,
delete the ``__pycache__`` folders so that the callers are compiled again.
"""

from __future__ import annotations

import numpy as np

from dsseg_core.jit import jit_enabled, njit

__all__ = ['connected_components', 'uf_find', 'uf_labels', 'uf_union']


@njit
def uf_find(parent: np.ndarray, i: int) -> int:
    """Root of node ``i`` (with path compression)."""
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit
def uf_union(parent: np.ndarray, a: int, b: int) -> None:
    """Join the components of nodes ``a`` and ``b``; the smaller root becomes the root."""
    ra = uf_find(parent, a)
    rb = uf_find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@njit
def uf_labels(parent: np.ndarray) -> tuple[int, np.ndarray]:
    """``(K, labels (n,) int32)``: components numbered in order of their smallest node (the
    forest must come from ``uf_union``: every parent id smaller than its child's)."""
    n = parent.shape[0]
    labels = np.empty(n, np.int32)
    k = 0
    for i in range(n):
        q = parent[i]
        if q == i:
            labels[i] = k
            k += 1
        else:
            labels[i] = labels[q]
    return k, labels


@njit
def _edges_components(n: int, a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray]:
    parent = np.arange(n).astype(np.int64)
    for e in range(a.shape[0]):
        uf_union(parent, a[e], b[e])
    return uf_labels(parent)


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray]:
    """Components of the undirected graph on ``n`` nodes with edges ``(a[i], b[i])``.

    Returns ``(K, labels (n,) int32)``, labels numbered in order of each component's smallest
    node (as ``scipy.sparse.csgraph.connected_components``, which the numpy path calls).
    """
    a = np.ascontiguousarray(a, np.int64)
    b = np.ascontiguousarray(b, np.int64)
    if jit_enabled():
        return _edges_components(int(n), a, b)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n)).tocsr()
    k, labels = scipy_components(graph, directed=False)
    return int(k), labels.astype(np.int32)

"""Numba kernels of :mod:`dsseg_core.points3d.smoothing` (one pass over the points each).

* ``active_cells_kernel``: which points lie within one coarse cell (3x3x3 dilation) of a
  labelled point (``_active_points``: ``np.floor`` cells, ``binary_dilation``), without the
  dense dilation of the whole grid.
* ``voxel_kernel``: voxel index of every point (numbered in increasing key order, like
  ``np.unique(..., return_inverse=True)``) through a hash table instead of a sort, and the
  centroids summed in point order in float64 (like ``np.bincount``).
* ``edge_gate_kernel``: the geometric gate of the neighbour graph (``_edge_ok`` at both ends,
  ground/non-ground cut), in float32 with the numpy path's operation order.
* ``sym3_vectors_kernel``: eigenvectors of symmetric 3x3 matrices from cross products
  (``_sym3_eig``'s ``vector``), without the (V, 3, 3) temporaries.
* ``adjacency_csr_kernel``: the kept edges as a CSR matrix with sorted rows, as scipy builds it.

Same results as the numpy code they replace (tests compare them on real scans).
"""

from __future__ import annotations

import numpy as np

from dsseg_core.jit import njit

__all__ = [
    'active_cells_kernel',
    'adjacency_csr_kernel',
    'edge_gate_kernel',
    'sym3_vectors_kernel',
    'voxel_kernel',
]


@njit
def _cell_bounds(xyz, size):
    """Smallest cell ``lo`` (3,) int64 and grid dims (3,) of ``np.floor(xyz / size)``: floor and
    division by ``size > 0`` are monotonic, so they are those of the coordinate extrema."""
    n = xyz.shape[0]
    lo_x = np.empty(3, xyz.dtype)
    hi_x = np.empty(3, xyz.dtype)
    for d in range(3):
        lo_x[d] = xyz[0, d]
        hi_x[d] = xyz[0, d]
    for i in range(1, n):
        for d in range(3):
            c = xyz[i, d]
            if c < lo_x[d]:
                lo_x[d] = c
            if c > hi_x[d]:
                hi_x[d] = c
    lo = np.empty(3, np.int64)
    dims = np.empty(3, np.int64)
    for d in range(3):
        lo[d] = np.int64(np.floor(lo_x[d] / size))
        dims[d] = np.int64(np.floor(hi_x[d] / size)) - lo[d] + 1
    return lo, dims


@njit
def _cell_key(xyz, i, size, lo, dims):
    """Flat index ``(cx * dy + cy) * dz + cz`` of point ``i``'s cell (float32 arithmetic)."""
    cx = np.int64(np.floor(xyz[i, 0] / size)) - lo[0]
    cy = np.int64(np.floor(xyz[i, 1] / size)) - lo[1]
    cz = np.int64(np.floor(xyz[i, 2] / size)) - lo[2]
    return (cx * dims[1] + cy) * dims[2] + cz


@njit
def active_cells_kernel(xyz, labelled, reach, max_cells):
    """``(ok, active)``: ``active`` (N,) bool = the point's cell (size ``reach``, float32) is
    within one cell (26-neighbourhood) of a cell holding a labelled point; ``ok`` False (and
    ``active`` empty) when the grid would have more than ``max_cells`` cells. ``xyz`` finite,
    N > 0."""
    n = xyz.shape[0]
    lo, dims = _cell_bounds(xyz, reach)
    total = dims[0] * dims[1] * dims[2]
    if total > max_cells:
        return False, np.zeros(0, np.bool_)
    key = np.empty(n, np.int32)  # < max_cells; small, so no fresh pages to fault in
    seed = np.zeros(total, np.bool_)
    for i in range(n):
        k = _cell_key(xyz, i, reach, lo, dims)
        key[i] = k
        if labelled[i]:
            seed[k] = True
    grown = np.zeros((dims[0], dims[1], dims[2]), np.bool_)
    plane = dims[1] * dims[2]
    for k in range(total):
        if not seed[k]:
            continue
        a = k // plane
        b = (k // dims[2]) % dims[1]
        c = k % dims[2]
        for x in range(max(a - 1, 0), min(a + 2, dims[0])):
            for y in range(max(b - 1, 0), min(b + 2, dims[1])):
                for z in range(max(c - 1, 0), min(c + 2, dims[2])):
                    grown[x, y, z] = True
    flat = grown.reshape(total)
    active = np.empty(n, np.bool_)
    for i in range(n):
        active[i] = flat[key[i]]
    return True, active


@njit
def _hash_slot(key, mask):
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
                    & np.uint64(mask))


@njit
def voxel_kernel(xyz, size):
    """``(inverse int64 (N,), centroids float64 (V, 3))`` of ``voxel_downsample``: voxels
    numbered by increasing key ``(cx * dy + cy) * dz + cz`` (cells minus their minimum, like
    the numpy path), centroids = float64 sums in point order / counts. ``xyz`` finite, N > 0.
    """
    n = xyz.shape[0]
    lo, dims = _cell_bounds(xyz, size)
    # Open-addressing hash table key -> first-seen voxel number, grown at half load.
    cap = 64
    while cap < n // 4:
        cap *= 2
    table_key = np.empty(cap, np.int64)
    table_id = np.full(cap, -1, np.int64)
    unique_keys = np.empty(16, np.int64)
    first = np.empty(n, np.int64)
    v = 0
    for i in range(n):
        key = _cell_key(xyz, i, size, lo, dims)
        slot = _hash_slot(key, cap - 1)
        while table_id[slot] >= 0 and table_key[slot] != key:
            slot = (slot + 1) & (cap - 1)
        if table_id[slot] < 0:
            if v == unique_keys.shape[0]:
                grown_keys = np.empty(2 * v, np.int64)
                grown_keys[:v] = unique_keys
                unique_keys = grown_keys
            unique_keys[v] = key
            table_id[slot] = v
            table_key[slot] = key
            v += 1
            if 2 * v > cap:  # rehash into a table twice the size
                cap *= 2
                table_key = np.empty(cap, np.int64)
                table_id = np.full(cap, -1, np.int64)
                for j in range(v):
                    s = _hash_slot(unique_keys[j], cap - 1)
                    while table_id[s] >= 0:
                        s = (s + 1) & (cap - 1)
                    table_id[s] = j
                    table_key[s] = unique_keys[j]
                first[i] = v - 1
                continue
        first[i] = table_id[slot]
    # Renumber by increasing key (np.unique's order).
    order = np.argsort(unique_keys[:v])
    rank = np.empty(v, np.int64)
    for r in range(v):
        rank[order[r]] = r
    inverse = first  # renumbered in place
    sums = np.zeros((v, 3), np.float64)
    count = np.zeros(v, np.float64)
    for i in range(n):
        j = rank[first[i]]
        inverse[i] = j
        count[j] += 1.0
        for d in range(3):
            sums[j, d] += np.float64(xyz[i, d])
    for j in range(v):
        for d in range(3):
            sums[j, d] = sums[j, d] / count[j]
    return inverse, sums


@njit
def _gate(kind, ux, uy, uz, dx, dy, dz, nx, ny, nz, linear_cos, planar_cos, scatter):
    """``_edge_ok`` for one edge end (float32, numpy's operation order)."""
    if kind == 1:
        return abs(ux * dx + uy * dy + uz * dz) >= linear_cos
    if kind == 2:
        return abs(ux * nx + uy * ny + uz * nz) <= planar_cos
    return scatter


@njit
def edge_gate_kernel(cent32, nbr, valid, inv_d, kind, direction, normal, vground, use_ground,
                     linear_cos, planar_cos, scatter):
    """(V, k) bool: edges i -> nbr[i, j] that are valid, compatible with the structure of both
    ends (``kind``, float32 ``direction`` / ``normal``) along the float32 offset
    ``(cent32[nbr] - cent32[i]) * inv_d``, and (``use_ground``) join voxels on the same side of
    the ground mask ``vground``."""
    v, k = nbr.shape
    keep = np.zeros((v, k), np.bool_)
    for i in range(v):
        ki = kind[i]
        for j in range(k):
            if not valid[i, j]:
                continue
            b = nbr[i, j]
            w = inv_d[i, j]
            ux = (cent32[b, 0] - cent32[i, 0]) * w
            uy = (cent32[b, 1] - cent32[i, 1]) * w
            uz = (cent32[b, 2] - cent32[i, 2]) * w
            if not _gate(ki, ux, uy, uz, direction[i, 0], direction[i, 1], direction[i, 2],
                         normal[i, 0], normal[i, 1], normal[i, 2], linear_cos, planar_cos,
                         scatter):
                continue
            if not _gate(kind[b], ux, uy, uz, direction[b, 0], direction[b, 1],
                         direction[b, 2], normal[b, 0], normal[b, 1], normal[b, 2],
                         linear_cos, planar_cos, scatter):
                continue
            if use_ground and vground[i] != vground[b]:
                continue
            keep[i, j] = True
    return keep


@njit
def sym3_vectors_kernel(cxx, cxy, cxz, cyy, cyz, czz, lam):
    """(V, 3) unit eigenvectors of the symmetric 3x3 matrices ``c`` for eigenvalues ``lam``
    (``vector`` of ``_sym3_eig``): the longest of the three cross products of the rows of
    ``c - lam I`` (first of equal lengths; NaN counts as longest, as ``argmax``), normalised;
    (0, 0, 1) when shorter than 1e-12. Same float64 operations as ``np.cross`` and
    ``np.linalg.norm``."""
    v = lam.shape[0]
    out = np.zeros((v, 3), np.float64)
    cand = np.empty((3, 3), np.float64)
    for i in range(v):
        a0, a1, a2 = cxx[i] - lam[i], cxy[i], cxz[i]
        b0, b1, b2 = cxy[i], cyy[i] - lam[i], cyz[i]
        c0, c1, c2 = cxz[i], cyz[i], czz[i] - lam[i]
        # np.cross(r0, r1), np.cross(r0, r2), np.cross(r1, r2)
        cand[0, 0] = a1 * b2 - a2 * b1
        cand[0, 1] = a2 * b0 - a0 * b2
        cand[0, 2] = a0 * b1 - a1 * b0
        cand[1, 0] = a1 * c2 - a2 * c1
        cand[1, 1] = a2 * c0 - a0 * c2
        cand[1, 2] = a0 * c1 - a1 * c0
        cand[2, 0] = b1 * c2 - b2 * c1
        cand[2, 1] = b2 * c0 - b0 * c2
        cand[2, 2] = b0 * c1 - b1 * c0
        best = 0
        best_norm = 0.0
        for j in range(3):
            x, y, z = cand[j, 0], cand[j, 1], cand[j, 2]
            norm = np.sqrt(x * x + y * y + z * z)
            if j == 0:
                best_norm = norm
            elif best_norm == best_norm and (norm != norm or norm > best_norm):
                best = j
                best_norm = norm
        if best_norm > 1e-12:
            out[i, 0] = cand[best, 0] / best_norm
            out[i, 1] = cand[best, 1] / best_norm
            out[i, 2] = cand[best, 2] / best_norm
        else:
            out[i, 2] = 1.0
    return out


@njit
def adjacency_csr_kernel(nbr, keep):
    """CSR ``(indptr, indices)`` of the kept edges ``i -> nbr[i, j]`` with each row's columns
    sorted (the canonical form ``scipy.sparse.csr_matrix((data, (rows, cols)))`` reaches, so
    products sum in the same order)."""
    v, k = nbr.shape
    indptr = np.zeros(v + 1, np.int64)
    for i in range(v):
        c = 0
        for j in range(k):
            if keep[i, j]:
                c += 1
        indptr[i + 1] = indptr[i] + c
    indices = np.empty(indptr[v], np.int64)
    for i in range(v):
        start = indptr[i]
        m = 0
        for j in range(k):
            if keep[i, j]:
                col = nbr[i, j]
                # insertion into the sorted row
                t = start + m
                while t > start and indices[t - 1] > col:
                    indices[t] = indices[t - 1]
                    t -= 1
                indices[t] = col
                m += 1
    return indptr, indices

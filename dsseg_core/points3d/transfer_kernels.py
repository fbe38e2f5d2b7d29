"""Numba kernels of :mod:`dsseg_core.points3d.transfer`: one camera's votes, and the vote.

``lookup_votes_kernel`` reads the label (and confidence) pixel of every visible projected
point (after the projection and z-buffer kernels of :mod:`dsseg_core.projection_kernels`).
``vote_kernel`` fuses the votes of all cameras: points with one vote take it, points with
several sum the confidences per class (the summation order of numpy's ``np.add.reduceat``: the
first vote plus numpy's pairwise sum of the others, in camera order) and keep the largest sum,
ties to the smaller class. Both give the same arrays as the numpy path of
:func:`dsseg_core.points3d.transfer.transfer_labels`.
"""

from __future__ import annotations

import numpy as np

from dsseg_core.jit import njit
from dsseg_core.projection_kernels import pixel_rows_cols

__all__ = ['lookup_votes_kernel', 'vote_kernel']


@njit
def lookup_votes_kernel(index, uv, visible, use_visible, width, height, cls_img, has_ignore,
                        ignore, conf_img, has_conf):
    """Votes of one camera: ``(point_index int64, class int64, confidence float32)`` of the
    projected points (``index``, ``uv``; only those ``visible`` when ``use_visible``) whose
    pixel of ``cls_img`` (H, W) integer holds a class >= 0 and (``has_ignore``) != ``ignore``;
    confidence from ``conf_img`` (H, W) float32 when ``has_conf``, else 1."""
    m = index.shape[0]
    rows, cols = pixel_rows_cols(uv, width, height)
    out_index = np.empty(m, np.int64)
    out_cls = np.empty(m, np.int64)
    out_conf = np.empty(m, np.float32)
    k = 0
    for i in range(m):
        if use_visible and not visible[i]:
            continue
        c = np.int64(cls_img[rows[i], cols[i]])
        if c < 0 or (has_ignore and c == ignore):
            continue
        out_index[k] = index[i]
        out_cls[k] = c
        out_conf[k] = conf_img[rows[i], cols[i]] if has_conf else np.float32(1.0)
        k += 1
    return out_index[:k].copy(), out_cls[:k].copy(), out_conf[:k].copy()


@njit
def _pairwise_block(a, start, n):
    """numpy's pairwise summation of ``a[start:start + n]`` for ``n <= 128`` (one block)."""
    if n < 8:
        res = 0.0
        for i in range(start, start + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    while i < n - (n % 8):
        j = start + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@njit
def _pairwise_sum(a, start, n):
    """numpy's pairwise summation (``DOUBLE_pairwise_sum``) of ``a[start:start + n]``: blocks
    of <= 128, larger ranges split in two halves (multiple of 8) and added. The recursion runs
    on an explicit stack (numba's cache cannot load recursive functions)."""
    if n <= 128:
        return _pairwise_block(a, start, n)
    depth = 64
    node_start = np.empty(depth, np.int64)
    node_n = np.empty(depth, np.int64)
    node_state = np.empty(depth, np.int64)
    values = np.empty(depth, np.float64)
    top = 0
    nv = 0
    node_start[0], node_n[0], node_state[0] = start, n, 0
    while top >= 0:
        s, m, state = node_start[top], node_n[top], node_state[top]
        if m <= 128:
            values[nv] = _pairwise_block(a, s, m)
            nv += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if state == 0:
            node_state[top] = 1
            top += 1
            node_start[top], node_n[top], node_state[top] = s, half, 0
        elif state == 1:
            node_state[top] = 2
            top += 1
            node_start[top], node_n[top], node_state[top] = s + half, m - half, 0
        else:
            values[nv - 2] = values[nv - 2] + values[nv - 1]
            nv -= 1
            top -= 1
    return values[0]


@njit
def vote_kernel(n, pidx, cls, conf, unknown, one_camera):
    """Fuse votes ``(pidx int64, cls int64, conf float32)`` (cameras concatenated in order;
    a camera votes at most once per point) of ``n`` points into ``(labels int32, confidence
    float32, n_views uint8)``; ``unknown`` where no vote (or a NaN sum). ``one_camera``: all
    votes come from one camera (no point twice): they are copied, nothing is counted."""
    labels = np.full(n, unknown, np.int32)
    confidence = np.zeros(n, np.float32)
    n_views = np.zeros(n, np.uint8)
    total = pidx.shape[0]
    if one_camera:
        for v in range(total):
            p = pidx[v]
            labels[p] = cls[v]
            confidence[p] = conf[v]
            n_views[p] = 1
        return labels, confidence, n_views
    count = np.zeros(n + 1, np.int64)
    for v in range(total):
        count[pidx[v] + 1] += 1
    multi = False
    for p in range(n):
        c = count[p + 1]
        n_views[p] = min(c, 255)
        if c > 1:
            multi = True
    if not multi:
        for v in range(total):
            p = pidx[v]
            labels[p] = cls[v]
            confidence[p] = conf[v]
        return labels, confidence, n_views
    # Votes grouped by point, camera order kept (a stable counting sort).
    for p in range(n):
        count[p + 1] += count[p]
    fill = count[:n].copy()
    order = np.empty(total, np.int64)
    for v in range(total):
        p = pidx[v]
        order[fill[p]] = v
        fill[p] += 1
    seg = np.empty(total, np.float64)
    for p in range(n):
        start = count[p]
        nv = count[p + 1] - start
        if nv == 0:
            continue
        if nv == 1:
            v = order[start]
            labels[p] = cls[v]
            confidence[p] = conf[v]
            continue
        best_cls = np.int64(0)
        best_sum = -np.inf
        found = False
        is_nan = False
        # Distinct classes of this point in increasing order; per class the sum of its votes.
        prev = np.iinfo(np.int64).min
        while True:
            cur = np.iinfo(np.int64).max
            for j in range(start, start + nv):
                c = cls[order[j]]
                if c > prev and c < cur:
                    cur = c
            if cur == np.iinfo(np.int64).max:
                break
            k = 0
            for j in range(start, start + nv):
                v = order[j]
                if cls[v] == cur:
                    seg[k] = np.float64(conf[v])
                    k += 1
            s = seg[0] + _pairwise_sum(seg, 1, k - 1)
            if s != s:
                is_nan = True
            elif not found or s > best_sum:
                best_sum = s
                best_cls = cur
                found = True
            prev = cur
        if found and not is_nan:
            labels[p] = best_cls
            confidence[p] = np.float32(best_sum / np.float64(nv))
    return labels, confidence, n_views

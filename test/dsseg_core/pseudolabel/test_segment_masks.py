from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from dsseg_core.pseudolabel.segment_masks import (
    SegmentMaskConfig,
    segment_mask_image,
    splat_zbuffer,
)


def _brute_zbuffer(uv, depth, radius, w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    best_d = np.full((h, w), np.inf)
    best_i = np.full((h, w), -1)
    for i in np.lexsort((np.arange(len(depth)), depth))[::-1]:  # far first, near overwrites
        cx, cy = np.floor(uv[i]).astype(int)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius[i] ** 2
        best_d[inside] = depth[i]
        best_i[inside] = i
    return best_d, best_i


def test_splat_zbuffer_matches_brute_force(kernel_path: str) -> None:
    rng = np.random.default_rng(1)
    w, h, n = 40, 30, 60
    uv = rng.uniform(0, [w, h], (n, 2)).astype(np.float32)
    depth = rng.uniform(2, 30, n).astype(np.float32)
    radius = np.clip(30.0 / depth, 1.0, 6.0)  # depth-scaled: never grows with depth
    d, idx = splat_zbuffer(uv, depth, radius, w, h)
    bd, bi = _brute_zbuffer(uv, depth, radius, w, h)
    assert np.array_equal(np.isinf(d), np.isinf(bd))
    assert np.allclose(d[np.isfinite(d)], bd[np.isfinite(bd)])
    assert np.array_equal(idx, bi)


def _wall_and_pole(gap_px: int = 0):
    """A far wall (segment 1, 20 m) of dense points and a near pole (segment 2, 5 m)."""
    ys, xs = np.mgrid[2:58:4, 2:98:2]
    wall = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    ys, xs = np.mgrid[10:50:4, 46:54:2]
    pole = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    uv = np.concatenate([wall, pole]).astype(np.float32)
    depth = np.concatenate([np.full(len(wall), 20.0), np.full(len(pole), 5.0)]).astype(
        np.float32)
    seg = np.concatenate([np.full(len(wall), 1), np.full(len(pole), 2)])
    return uv, depth, seg


def test_masks_densify_and_respect_depth_discontinuities(kernel_path: str) -> None:
    uv, depth, seg = _wall_and_pole()
    cfg = SegmentMaskConfig(radius_m=0.1, min_radius_px=2.5, max_radius_px=3.0, guard_px=3)
    out = segment_mask_image(uv, depth, seg, 100, 60, fx=100.0, cfg=cfg)
    # densified: the wall between its 4-px rows is filled
    assert (out[20:40, 10:30] == 1).all()
    # the pole's interior belongs to the pole, never to the wall behind it
    assert (out[14:46, 48:52] == 2).all()
    # no wall pixel within the guard band (3 px) around the pole's silhouette
    dist = distance_transform_edt(out != 2)
    assert dist[out == 1].min() > 3
    # the wall still surrounds the pole just outside the band
    assert ((dist > 3) & (dist <= 6) & (out == 1)).sum() > 50
    # without the guard the wall would touch the pole
    out0 = segment_mask_image(uv, depth, seg, 100, 60, fx=100.0,
                              cfg=cfg.model_copy(update={'guard_px': 0}))
    assert distance_transform_edt(out0 != 2)[out0 == 1].min() <= 1.5


def test_same_segment_is_not_cut_on_grazing_surfaces(kernel_path: str) -> None:
    # a road: depth grows quickly with image row, one segment -> no guard holes
    ys, xs = np.mgrid[30:60:3, 0:100:2]
    uv = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1).astype(np.float32)
    depth = (200.0 / (ys.ravel() - 25.0)).astype(np.float32)
    out = segment_mask_image(uv, depth, np.zeros(len(uv), int), 100, 60, fx=100.0,
                             cfg=SegmentMaskConfig(min_radius_px=2.5, guard_px=4))
    assert (out[31:58, 2:98] == 0).all()


def test_unsegmented_points_occlude_but_do_not_label(kernel_path: str) -> None:
    uv, depth, seg = _wall_and_pole()
    seg = np.where(seg == 2, -1, seg)
    out = segment_mask_image(uv, depth, seg, 100, 60, fx=100.0)
    assert not (out[14:46, 48:52] >= 0).any()
    assert (out == 1).sum() > 1000


@pytest.mark.parametrize('n', [0, 1])
def test_empty_and_tiny_inputs(kernel_path: str, n: int) -> None:
    uv = np.full((n, 2), 5.2, np.float32)
    out = segment_mask_image(uv, np.full(n, 10.0), np.zeros(n, int), 20, 10, fx=50.0)
    assert out.shape == (10, 20)
    assert (out >= 0).sum() == (0 if n == 0 else (out == 0).sum())
    if n:
        assert out[5, 5] == 0


def test_min_pixels_drops_small_segments(kernel_path: str) -> None:
    uv, depth, seg = _wall_and_pole()
    full = segment_mask_image(uv, depth, seg, 100, 60, fx=100.0)
    n_pole, n_wall = (full == 2).sum(), (full == 1).sum()
    assert 0 < n_pole < n_wall
    out = segment_mask_image(uv, depth, seg, 100, 60, fx=100.0,
                             cfg=SegmentMaskConfig(min_pixels=int(n_pole) + 1))
    assert not (out == 2).any() and (out == 1).sum() == n_wall


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match='differ in length'):
        segment_mask_image(np.zeros((3, 2)), np.ones(2), np.zeros(3), 10, 10, fx=10.0)

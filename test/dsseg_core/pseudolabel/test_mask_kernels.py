"""Compiled segment-mask kernels against the numpy reference path (pixel-identical)."""

from __future__ import annotations

import numpy as np
import pytest

from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.pseudolabel.mask_kernels import pack_depth
from dsseg_core.pseudolabel.pipeline import _label_image
from dsseg_core.pseudolabel.segment_masks import (
    SegmentMaskConfig,
    drop_segments,
    segment_mask_image,
    segment_pixel_counts,
    splat_zbuffer,
)

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed')


@pytest.fixture(scope='module')
def kitti_masks_inputs(sample_segmented_frames):
    """Projected, visible, segmented points of 3 frames of the sample drive."""
    return [(f['uv'], f['depth'], f['point_segment'], f['width'], f['height'], f['fx'],
             f['num_segments']) for f in sample_segmented_frames]


@pytest.mark.parametrize('guard_px', [0, 1, 3, 6])
def test_segment_masks_identical_on_kitti(both_paths, kitti_masks_inputs, guard_px) -> None:
    cfg = SegmentMaskConfig(guard_px=guard_px)
    for uv, depth, seg, w, h, fx, _ in kitti_masks_inputs:
        jit, ref = both_paths(
                         lambda: segment_mask_image(uv, depth, seg, w, h, fx, cfg))  # noqa: B023
        assert jit.dtype == ref.dtype == np.int32
        assert (ref >= 0).sum() > 100_000
        np.testing.assert_array_equal(jit, ref)


def test_splat_zbuffer_identical_on_kitti(both_paths, kitti_masks_inputs) -> None:
    for uv, depth, _, w, h, fx, _ in kitti_masks_inputs:
        radius = np.clip(0.08 * fx / depth, 3.2, 6.0)
        (dj, ij), (dr, ir) = both_paths(
                                   lambda: splat_zbuffer(uv, depth, radius, w, h))  # noqa: B023
        assert ij.dtype == ir.dtype == np.int64 and dj.dtype == dr.dtype == np.float32
        np.testing.assert_array_equal(ij, ir)
        np.testing.assert_array_equal(dj, dr)


def test_splat_ties_go_to_the_smaller_offset_rank(both_paths) -> None:
    """Equal depths: the pixel belongs to the point whose centre is at the smaller offset
    rank (numpy writes the offsets in rank order with a strict <), in both paths."""
    # points 0 and 1 at equal depth, centres (10, 10) and (12, 10): pixel (11, 10) is at
    # offset (+1, 0) of point 0 and (-1, 0) of point 1; (-1, 0) comes first in rank order
    uv = np.array([[10.5, 10.5], [12.5, 10.5], [30.5, 10.5]], np.float32)
    depth = np.array([5.0, 5.0, 5.0], np.float32)
    radius = np.array([2.0, 2.0, 2.0])
    (dj, ij), (dr, ir) = both_paths(lambda: splat_zbuffer(uv, depth, radius, 40, 20))
    np.testing.assert_array_equal(ij, ir)
    np.testing.assert_array_equal(dj, dr)
    assert ir[10, 11] == 1 and ir[10, 10] == 0 and ir[10, 12] == 1
    # many random ties on a coarse depth grid, several points per centre, NaN and negative
    rng = np.random.default_rng(5)
    n = 3000
    uv = rng.uniform(-8, [88, 68], (n, 2)).astype(np.float32)  # some outside the image
    depth = rng.integers(1, 5, n).astype(np.float32)
    depth[::97] = np.nan
    depth[::89] = -depth[::89]
    radius = rng.uniform(0.5, 4.0, n)
    (dj, ij), (dr, ir) = both_paths(lambda: splat_zbuffer(uv, depth, radius, 80, 60))
    np.testing.assert_array_equal(ij, ir)
    np.testing.assert_array_equal(dj, dr)
    assert (ir >= 0).mean() > 0.9


def test_far_outside_points_are_ignored(both_paths) -> None:
    """Centres farther outside the image than the largest radius cannot reach it (the numpy
    path used to wrap them into the previous row)."""
    uv = np.array([[-20.5, 5.5], [5.5, 5.5], [45.5, 5.5], [5.5, -30.0]], np.float32)
    depth = np.array([1.0, 9.0, 1.0, 1.0], np.float32)
    radius = np.array([3.0, 2.0, 3.0, 3.0])
    for d, idx in both_paths(lambda: splat_zbuffer(uv, depth, radius, 40, 12)):
        assert set(np.unique(idx)) == {-1, 1}
        assert np.isinf(d[idx < 0]).all()


def test_guard_reproduces_scipy_empty_window_cut(both_paths) -> None:
    """scipy's minimum_filter works on doubles: a (2g+1)-row column of empty pixels (key
    INT64_MAX -> 2**63) comes back as INT64_MIN, so pixels next to such a column are cut.
    The kernel reproduces that exactly (both paths, same maps)."""
    h, w = 30, 40
    ys, xs = np.mgrid[0:h:2, 0:w:2]
    keep = ~((xs >= 18) & (xs <= 26))  # a 7+ px wide gap of empty columns
    uv = np.stack([xs[keep] + 0.5, ys[keep] + 0.5], 1).astype(np.float32)
    depth = np.full(len(uv), 10.0, np.float32)
    seg = np.where(uv[:, 0] < 20, 1, 2)
    cfg = SegmentMaskConfig(min_radius_px=1.5, max_radius_px=1.5, guard_px=3)
    jit, ref = both_paths(lambda: segment_mask_image(uv, depth, seg, w, h, 100.0, cfg))
    np.testing.assert_array_equal(jit, ref)
    # the segment next to the gap is cut back (scipy behaviour), far from it it is kept
    assert (ref[5:25, 2:12] == 1).all()
    assert (ref[:, 16:20] == -1).all()


def test_depth_rounding_half_to_even(both_paths) -> None:
    """The depth key rounds depth * 1000 (float32) half to even, like np.round."""
    d = np.float32(np.arange(1, 4000) / 1000.0 + 0.0005)
    halves = d[(d * np.float32(1000.0)) % 1 == 0.5]
    assert len(halves) > 10
    uv = np.stack([np.arange(len(halves)) % 50 * 3 + 1.5,
                   np.arange(len(halves)) // 50 * 3 + 1.5], 1).astype(np.float32)
    seg = np.arange(len(halves)) % 3
    cfg = SegmentMaskConfig(min_radius_px=2.0, max_radius_px=2.0, guard_px=2,
                            rel_depth_tol=0.0, abs_depth_tol=0.0)
    h = int(uv[:, 1].max()) + 3
    jit, ref = both_paths(
                     lambda: segment_mask_image(uv, halves, seg, 152, h, 100.0, cfg))
    np.testing.assert_array_equal(jit, ref)


def test_pack_depth_orders_like_floats() -> None:
    vals = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 2.0000002, np.inf],
                    np.float32)
    keys = [pack_depth(v) for v in vals]
    assert keys == sorted(keys) and keys[3] == keys[4]


@pytest.mark.parametrize('num_segments', [1, 5, 40])
def test_pixel_counts_drop_and_labels(both_paths, monkeypatch, num_segments) -> None:
    rng = np.random.default_rng(num_segments)
    seg_map = rng.integers(-1, num_segments + 2, (37, 53)).astype(np.int32)  # some ids >= S
    counts_j, counts_r = both_paths(
                               lambda: segment_pixel_counts(seg_map, num_segments))
    np.testing.assert_array_equal(counts_j, counts_r)
    assert counts_r.sum() == ((seg_map >= 0) & (seg_map < num_segments)).sum()
    drop = rng.random(num_segments) < 0.5

    def dropped():
        m = seg_map.copy()
        drop_segments(m, drop)
        return m

    mj, mr = both_paths(dropped)
    np.testing.assert_array_equal(mj, mr)
    assert not np.isin(mr, np.flatnonzero(drop)).any()
    lut = rng.integers(-1, 6, num_segments + 1)

    def labels():
        hist = np.zeros(6, np.int64)
        img, n = _label_image(seg_map, lut, 255, np.dtype(np.uint8), hist)
        return img, n, hist

    (ij, nj, hj), (ir, nr, hr) = both_paths(labels)
    np.testing.assert_array_equal(ij, ir)
    assert ij.dtype == np.uint8 and nj == nr == (ir != 255).sum()
    np.testing.assert_array_equal(hj, hr)


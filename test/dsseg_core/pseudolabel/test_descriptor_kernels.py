"""Compiled descriptor kernels against the numpy reference path.

Geometric descriptors: bit-identical (the kernel reproduces ``np.add.reduceat``'s summation).
Colour statistics: bit-identical where numpy's float32 arithmetic is glibc's ``cbrtf`` and an
FMA BLAS (checked by probing, else skipped), within 1e-6 relative everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from dsseg_core.jit import HAVE_NUMBA
from dsseg_core.pseudolabel.descriptor_kernels import (
    cbrt32,
    fma32,
    ground_cells_kernel,
    reduceat_sum,
)
from dsseg_core.pseudolabel.descriptors.colour import (
    _M_RGB2XYZ,
    _M_XYZ_WHITE,
    _SRGB_TO_LINEAR,
    colour_statistics,
)
from dsseg_core.pseudolabel.descriptors.geometric import (
    geometric_descriptors,
    local_ground_height,
)

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason='numba is not installed')


@pytest.fixture(scope='module')
def kitti_frames(sample_segmented_frames):
    """3 frames of the sample drive with their segment maps (pipeline up to the masks)."""
    return sample_segmented_frames


# ------------------------------------------------------------------------------ geometric


@pytest.mark.parametrize('seed', range(4))
def test_reduceat_sum_is_numpys(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=5000) * 1e3 + rng.normal(size=5000)
    bounds = np.unique(np.concatenate([[0], rng.integers(1, 5000, 30)]))
    ref = np.add.reduceat(x, bounds)
    ends = np.append(bounds[1:], len(x))
    got = np.array([reduceat_sum(x, int(a), int(b - a)) for a, b in zip(bounds, ends,
                                                                        strict=True)])
    np.testing.assert_array_equal(got, ref)  # bit for bit (pairwise summation)
    sequential = [np.cumsum(x[a:b])[-1] for a, b in zip(bounds, ends, strict=True)]
    assert not np.array_equal(got, sequential)  # the summation order matters here


def test_geometric_identical_on_kitti(both_paths, kitti_frames) -> None:
    for fr in kitti_frames:
        ns = fr['num_segments']
        seen = np.zeros(ns + 1, bool)
        seen[fr['seg_map'][fr['seg_map'] >= 0]] = True
        seen[0] = True
        seg_seen = np.where(seen[fr['segment']], fr['segment'], -1)
        for inten in (fr['intensity'], None):
            jit, ref = both_paths(lambda s=seg_seen, i=inten, f=fr, n=ns:
                                  geometric_descriptors(f['xyz'], s, n, f['ground'], i))
            assert np.isfinite(ref[seen[:ns]]).all()
            np.testing.assert_array_equal(jit, ref)  # bit for bit, NaN rows included


def test_geometric_synthetic_edge_cases(both_paths) -> None:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(3000, 3)) * [10, 10, 1]
    seg = rng.integers(-1, 40, 3000)
    seg[seg == 7] = -1  # an empty segment
    seg[:3] = 41  # beyond num_segments=40 in the second case: ignored there
    for args in [(xyz, seg, 45, seg == 0, rng.random(3000)),
                 (xyz.astype(np.float32), seg, 40, None, None),
                 (xyz[:1], seg[:1], 3, None, None),
                 (xyz, np.full(3000, -1), 5, None, None)]:
        jit, ref = both_paths(lambda a=args: geometric_descriptors(*a))
        np.testing.assert_array_equal(jit, ref)


def test_ground_cells_match_numpy(both_paths) -> None:
    rng = np.random.default_rng(2)
    ground = np.column_stack([rng.uniform(-40, 40, 5000), rng.uniform(-30, 30, 5000),
                              rng.normal(-1.7, 0.2, 5000)])
    ground[:100, 2] = np.round(ground[:100, 2], 1)  # ties in z
    query = rng.uniform(-60, 60, (300, 2))
    jit, ref = both_paths(lambda: local_ground_height(query, ground, ground[:, 2], 4.0))
    np.testing.assert_array_equal(jit, ref)
    # a far outlier makes the dense grid too large: the kernel declines, numpy takes over
    far = np.vstack([ground, [[1e6, 0.0, 5.0]]])
    gx, gy, med = ground_cells_kernel(far, np.ones(len(far), bool), 4.0, 1 << 16)
    assert len(gx) == len(gy) == len(med) == 0
    jit, ref = both_paths(lambda: local_ground_height(query, far, far[:, 2], 4.0))
    np.testing.assert_array_equal(jit, ref)


# ------------------------------------------------------------------------------ colour


def _numpy_arithmetic_is_reproduced() -> bool:
    """True when numpy's float32 arithmetic is the one the colour kernel reproduces:
    glibc's classic ``cbrtf`` and a BLAS whose float32 matrix product uses FMA."""
    probe = np.float32(np.linspace(0.009, 1.2, 20001))
    if not np.array_equal(np.cbrt(probe), np.array([cbrt32(v) for v in probe], np.float32)):
        return False
    lin = _SRGB_TO_LINEAR[np.arange(768).reshape(-1, 3) % 256]
    xyz = (lin[None] @ _M_XYZ_WHITE)[0]
    m = _M_XYZ_WHITE
    for (r, g, b), row in zip(lin, xyz, strict=True):
        for j in range(3):
            if fma32(b, m[2, j], fma32(g, m[1, j], np.float32(r * m[0, j]))) != row[j]:
                return False
    return True


def test_cbrt32_is_within_one_ulp_of_libm() -> None:
    x = np.float32(np.geomspace(1e-6, 1e3, 200001))
    got = np.array([cbrt32(v) for v in x[::7]], np.float32)
    ref = np.cbrt(x[::7])
    ulps = np.abs(got.view(np.int32) - ref.view(np.int32))
    assert ulps.max() <= 1
    exact = np.cbrt(x.astype(np.float64))
    assert np.abs(got - exact[::7]).max() / exact.max() < 1e-6
    assert cbrt32(np.float32(0.0)) == 0.0 and cbrt32(np.float32(8.0)) == 2.0


def test_fma32_rounds_once() -> None:
    a, b, c = np.float32(1 + 2 ** -12), np.float32(1 + 2 ** -12), np.float32(-1.0)
    # a*b = 1 + 2**-11 + 2**-24: a separate float32 product would drop the 2**-24
    assert fma32(a, b, c) == np.float32(2 ** -11 + 2 ** -24)
    assert np.float32(a * b) + c == np.float32(2 ** -11)


def test_colour_sums_match_on_kitti(both_paths, kitti_frames) -> None:
    exact = _numpy_arithmetic_is_reproduced()
    for fr in kitti_frames:
        for stride in (1, 2, 3):
            jit, ref = both_paths(lambda f=fr, s=stride: colour_statistics(
                f['image'], f['seg_map'], f['num_segments'], s))
            np.testing.assert_array_equal(jit.count, ref.count)
            assert ref.count.sum() > 10_000 / stride ** 2
            np.testing.assert_allclose(jit.total, ref.total, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(jit.total_sq, ref.total_sq, rtol=1e-6, atol=1e-6)
            if exact:
                np.testing.assert_array_equal(jit.total, ref.total)
                np.testing.assert_array_equal(jit.total_sq, ref.total_sq)
                np.testing.assert_array_equal(jit.features(), ref.features())


def test_colour_edges_and_dtypes(both_paths) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (23, 31, 3)).astype(np.uint8)
    seg = rng.integers(-1, 6, (23, 31))
    seg[-1, :] = 2  # last row / column: zero gradients there
    seg[:, -1] = 3
    cases = [(img, seg, 5, 1), (img, seg, 5, 2), (img.astype(np.float64) * 1.5, seg, 5, 1),
             (img[..., 0], seg, 6, 1), (img, np.full((23, 31), -1), 4, 1)]
    for args in cases:
        jit, ref = both_paths(lambda a=args: colour_statistics(*a))
        np.testing.assert_array_equal(jit.count, ref.count)
        np.testing.assert_allclose(jit.total, ref.total, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(jit.total_sq, ref.total_sq, rtol=1e-6, atol=1e-6)
    assert _M_RGB2XYZ.dtype == np.float32

"""The fixed categorical palette: stable, distinct colours; unknown in grey; overlays."""

from __future__ import annotations

import numpy as np
import pytest

from dsseg_core.palette import (
    BASE_COLORS,
    UNKNOWN_COLOR,
    blend_overlay,
    class_colors,
    colorize,
    palette,
)


def test_palette_is_stable_and_distinct() -> None:
    big = palette(4096)
    assert big.dtype == np.uint8 and big.shape == (4096, 3)
    np.testing.assert_array_equal(palette(7), big[:7])  # a class keeps its colour
    np.testing.assert_array_equal(big[:len(BASE_COLORS)], np.asarray(BASE_COLORS))
    assert len({tuple(c) for c in big}) == 4096
    assert UNKNOWN_COLOR not in {tuple(c) for c in big[:256]}


def test_class_colors_mark_ignore_and_negative_ids_unknown() -> None:
    ids8 = np.array([[0, 1], [255, 2]], np.uint8)
    out = colorize(ids8)
    assert out.shape == (2, 2, 3)
    assert tuple(out[1, 0]) == UNKNOWN_COLOR
    assert tuple(out[0, 1]) == BASE_COLORS[1]
    ids16 = np.array([300, 65535], np.uint16)
    out16 = class_colors(ids16)
    assert tuple(out16[1]) == UNKNOWN_COLOR and tuple(out16[0]) == tuple(palette(301)[300])
    points = np.array([-1, 3, 9], np.int32)
    colours = class_colors(points, num_classes=5)
    assert tuple(colours[0]) == UNKNOWN_COLOR and tuple(colours[2]) == UNKNOWN_COLOR
    assert tuple(colours[1]) == BASE_COLORS[3]


def test_blend_overlay_weights_and_keeps_unlabelled_pixels(kernel_path: str) -> None:
    rgb = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[0, 255], [1, 1]], np.uint8)
    out = blend_overlay(rgb, mask, alpha=0.5)
    np.testing.assert_array_equal(out[0, 1], rgb[0, 1])
    expected = (200 + np.asarray(BASE_COLORS[0])) // 2
    assert np.abs(out[0, 0].astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(blend_overlay(rgb, mask, alpha=0.0), rgb)
    with pytest.raises(ValueError, match='sizes differ'):
        blend_overlay(rgb, mask[:1])


def test_zero_classes_gives_an_empty_palette() -> None:
    from dsseg_core.palette import packed_class_colors, palette

    assert palette(0).shape == (0, 3)
    assert packed_class_colors(np.array([-1, -1]), 0).shape == (2,)


@pytest.mark.parametrize(('dtype', 'num_classes', 'top'), [(np.uint8, 20, 40),
                                                           (np.uint8, None, 256),
                                                           (np.uint16, 300, 400)])
def test_blend_overlay_kernel_equals_numpy(monkeypatch: pytest.MonkeyPatch, dtype: type,
                                           num_classes: int | None, top: int) -> None:
    from dsseg_core.jit import HAVE_NUMBA

    if not HAVE_NUMBA:
        pytest.skip('numba is not installed')
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mask = rng.integers(0, top, (37, 53)).astype(dtype)
    mask[0, :4] = np.iinfo(dtype).max  # the ignore value
    outs = []
    for flag in ('1', '0'):
        monkeypatch.setenv('DSSEG_JIT', flag)
        outs.append(blend_overlay(rgb[:, ::-1], mask, alpha=0.37, num_classes=num_classes))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0][0, :4], rgb[0, ::-1][:4])

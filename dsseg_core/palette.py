"""A fixed categorical colour palette for class ids (overlays, labelled clouds, galleries).

Class ``i`` always gets the same colour, in every tool and every run, so an RViz view, an
overlay image and a gallery page can be compared by eye. The first 20 colours are hand-picked
to be distinct (tab20-like order, saturated first); ids past that use the bit-interleaving
scheme of the PASCAL VOC colour map, which never repeats a colour for ids < 2**24.
Unlabelled pixels (255 / 65535) and unknown points (-1) are drawn in :data:`UNKNOWN_COLOR`.
"""

from __future__ import annotations

import functools

import numpy as np

from dsseg_core.jit import jit_enabled, njit

__all__ = ['BASE_COLORS', 'UNKNOWN_COLOR', 'blend_overlay', 'class_colors', 'colorize',
           'packed_class_colors', 'palette']

UNKNOWN_COLOR: tuple[int, int, int] = (128, 128, 128)

BASE_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),   # 0: ground (road purple)
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (219, 219, 141),
    (158, 218, 229),
    (70, 70, 70),
)


def _voc_colors(ids: np.ndarray) -> np.ndarray:
    """PASCAL VOC colour map: the bits of the id spread over the high bits of r, g, b."""
    ids = ids.astype(np.int64)
    out = np.zeros((ids.size, 3), np.int64)
    c = ids.copy()
    for shift in range(7, -1, -1):
        for ch in range(3):
            out[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return out.astype(np.uint8)


def _rgb_code(colors: np.ndarray) -> np.ndarray:
    return (colors[:, 0].astype(np.int64) << 16) | (colors[:, 1].astype(np.int64) << 8) \
        | colors[:, 2]


def palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3) uint8`` RGB colours for class ids ``0 .. num_classes - 1``."""
    if num_classes < 0:
        raise ValueError(f'num_classes must be >= 0, got {num_classes}')
    n_base = min(num_classes, len(BASE_COLORS))
    colors = np.empty((num_classes, 3), np.uint8)
    colors[:n_base] = np.asarray(BASE_COLORS[:n_base], np.uint8).reshape(n_base, 3)
    need = num_classes - n_base
    if need > 0:
        # VOC colours after its black 0 entry, skipping any equal to a base colour or to
        # UNKNOWN_COLOR so that every class colour is unique.
        start = len(BASE_COLORS) + 1
        candidates = _voc_colors(np.arange(start, start + need + len(BASE_COLORS) + 1))
        taken = np.asarray(BASE_COLORS + (UNKNOWN_COLOR,), np.uint8)
        keep = ~np.isin(_rgb_code(candidates), _rgb_code(taken))
        colors[n_base:] = candidates[keep][:need]
    return colors


def _ignore_value(dtype: np.dtype) -> int | None:
    return 255 if dtype == np.uint8 else 65535 if dtype == np.uint16 else None


@functools.lru_cache(maxsize=16)
def _lut(dtype_str: str, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Colour and "unknown" tables indexed by the raw value of a uint8/uint16 mask."""
    dtype = np.dtype(dtype_str)
    size = 256 if dtype == np.uint8 else 65536
    colors = palette(size)
    unknown = np.zeros(size, bool)
    unknown[_ignore_value(dtype)] = True
    if num_classes is not None:
        unknown[max(num_classes, 0):] = True
    colors[unknown] = UNKNOWN_COLOR
    colors.setflags(write=False)
    unknown.setflags(write=False)
    return colors, unknown


def _colors_and_unknown(ids: np.ndarray, num_classes: int | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    if ids.dtype in (np.uint8, np.uint16):
        colors, unknown = _lut(ids.dtype.str, num_classes)
        return colors[ids], unknown[ids]
    flat = ids.astype(np.int64, copy=False)
    if num_classes is None:
        valid_any = flat >= 0
        num_classes = int(flat[valid_any].max()) + 1 if valid_any.any() else 0
    table = np.empty((num_classes + 1, 3), np.uint8)
    table[:num_classes] = palette(num_classes)
    table[num_classes] = UNKNOWN_COLOR
    unknown = (flat < 0) | (flat >= num_classes)
    return table[np.where(unknown, num_classes, flat)], unknown


def class_colors(class_ids: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """RGB colour per id (any shape -> shape + (3,)); ids < 0 or >= num_classes are unknown.

    Mask ignore values (255 for uint8, 65535 for uint16) are unknown. A class's colour does
    not depend on ``num_classes`` (which only marks larger ids unknown). uint8/uint16 masks
    are coloured by one table lookup.
    """
    return _colors_and_unknown(np.asarray(class_ids), num_classes)[0]


def packed_class_colors(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N,) uint32`` ``0x00RRGGBB`` per point label (the PointCloud2 ``rgb`` field bits).

    Labels < 0 or >= ``num_classes`` get :data:`UNKNOWN_COLOR`. One table lookup: the fast
    path of :func:`class_colors` for point clouds.
    """
    lut = np.empty(num_classes + 1, np.uint32)
    lut[:num_classes] = _rgb_code(palette(num_classes)).astype(np.uint32)
    lut[num_classes] = _rgb_code(np.asarray([UNKNOWN_COLOR], np.uint8))[0]
    labels = np.asarray(labels).reshape(-1)
    idx = np.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return lut[idx]


def colorize(mask: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """``(H, W)`` class-id mask -> ``(H, W, 3) uint8`` colour image."""
    return class_colors(mask, num_classes)


def blend_overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5,
                  num_classes: int | None = None) -> np.ndarray:
    """Blend class colours over an RGB image: ``(1 - alpha) * rgb + alpha * colour``.

    Unlabelled pixels keep the image unchanged. ``rgb`` is ``(H, W, 3) uint8`` and ``mask``
    ``(H, W)``; sizes must match. Integer arithmetic (alpha in 1/256 steps).
    """
    if rgb.shape[:2] != mask.shape[:2]:
        raise ValueError(f'image {rgb.shape[:2]} and mask {mask.shape[:2]} sizes differ')
    mask = np.asarray(mask)
    a = int(round(float(alpha) * 256))
    if mask.dtype in (np.uint8, np.uint16) and jit_enabled() and rgb.ndim == 3 \
            and rgb.shape[2] == 3 and rgb.dtype == np.uint8:
        table, unknown_table = _lut(mask.dtype.str, num_classes)
        out = np.empty(rgb.shape, np.uint8)
        _blend_kernel(np.ascontiguousarray(rgb), np.ascontiguousarray(mask),
                      _weighted_lut(mask.dtype.str, num_classes, a), unknown_table, 256 - a, out)
        return out
    if mask.dtype in (np.uint8, np.uint16):
        table, unknown_table = _lut(mask.dtype.str, num_classes)
        weighted = (table.astype(np.uint16) * a)[mask]  # premultiplied per class
        unknown = unknown_table[mask]
    else:
        colors, unknown = _colors_and_unknown(mask, num_classes)
        weighted = colors.astype(np.uint16) * a
    out = rgb.astype(np.uint16)
    out *= 256 - a
    out += weighted
    out >>= 8
    out = out.astype(np.uint8)
    if unknown.any():
        np.copyto(out, rgb, where=unknown[..., None])
    return out


@functools.lru_cache(maxsize=16)
def _weighted_lut(dtype_str: str, num_classes: int | None, a: int) -> np.ndarray:
    """``alpha * colour`` per raw mask value (uint16, alpha in 1/256 steps)."""
    table = _lut(dtype_str, num_classes)[0].astype(np.uint16) * np.uint16(a)
    table.setflags(write=False)
    return table


@njit
def _blend_kernel(rgb: np.ndarray, mask: np.ndarray, weighted: np.ndarray,
                  unknown: np.ndarray, inv_a: int, out: np.ndarray) -> None:
    """One pass of :func:`blend_overlay` for uint8/uint16 masks (same integer arithmetic)."""
    h, w = mask.shape
    for i in range(h):
        for j in range(w):
            m = mask[i, j]
            if unknown[m]:
                for c in range(3):
                    out[i, j, c] = rgb[i, j, c]
            else:
                for c in range(3):
                    out[i, j, c] = (np.uint32(rgb[i, j, c]) * inv_a + weighted[m, c]) >> 8

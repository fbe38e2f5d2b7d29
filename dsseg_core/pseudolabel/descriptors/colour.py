"""Weight-free image colour / texture descriptors of segment masks.

Per segment (over its mask pixels, possibly in several cameras):

* mean and standard deviation of CIELAB ``L*``, ``a*``, ``b*`` (a perceptual colour space, so
  distances mean roughly the same everywhere; sRGB D65 → XYZ → Lab);
* texture energy: mean and std of the gradient magnitude of ``L*`` (forward differences);
* orientation: share of horizontal gradient energy ``Σ|gx| / (Σ|gx| + Σ|gy|)`` (vertical
  structures such as poles and facades give large values).

Statistics are accumulated as sums (:class:`ColourStats`) so that several cameras seeing the
same segment combine exactly (pixel-weighted), then turned into features by
:meth:`ColourStats.features`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsseg_core.jit import jit_enabled
from dsseg_core.pseudolabel.descriptor_kernels import colour_sums_kernel

__all__ = ['COLOUR_FEATURES', 'ColourStats', 'colour_statistics', 'rgb_to_lab']

COLOUR_FEATURES = (
    'L_mean', 'a_mean', 'b_mean', 'L_std', 'a_std', 'b_std',
    'grad_mean', 'grad_std', 'grad_horizontal_share',
)

_M_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]], dtype=np.float32)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
_C = np.arange(256, dtype=np.float64) / 255.0
_SRGB_TO_LINEAR = np.where(_C <= 0.04045, _C / 12.92, ((_C + 0.055) / 1.055) ** 2.4
                           ).astype(np.float32)
# for the compiled kernel: xyz = lin @ _M_XYZ_WHITE, and the constants as numpy compares them
_M_XYZ_WHITE = np.ascontiguousarray(_M_RGB2XYZ.T / _WHITE[None, :])
_EPS32 = np.float32(216 / 24389)
_KAPPA32 = np.float32(24389 / 27)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 sRGB → float32 CIELAB (``L`` in 0..100)."""
    lin = _SRGB_TO_LINEAR[np.asarray(rgb, dtype=np.uint8)]
    xyz = lin @ (_M_RGB2XYZ.T / _WHITE[None, :])
    eps = 216 / 24389
    kappa = 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def _lightness(rgb: np.ndarray) -> np.ndarray:
    """CIELAB ``L*`` only (from the luminance Y), float32."""
    lin = _SRGB_TO_LINEAR[np.asarray(rgb, dtype=np.uint8)]
    y = lin @ _M_RGB2XYZ[1]
    eps = 216 / 24389
    kappa = 24389 / 27
    f = np.where(y > eps, np.cbrt(y), (kappa * y + 16) / 116)
    return (116 * f - 16).astype(np.float32)


@dataclass
class ColourStats:
    """Per-segment sums over mask pixels of the channels ``L, a, b, |grad|, |gx|, |gy|``."""

    total: np.ndarray  # (S, 6) float64
    total_sq: np.ndarray  # (S, 6) float64
    count: np.ndarray  # (S,) float64

    @classmethod
    def zeros(cls, num_segments: int) -> ColourStats:
        return cls(np.zeros((num_segments, 6)), np.zeros((num_segments, 6)),
                   np.zeros(num_segments))

    def add(self, other: ColourStats) -> None:
        self.total += other.total
        self.total_sq += other.total_sq
        self.count += other.count

    def features(self) -> np.ndarray:
        """``(S, len(COLOUR_FEATURES)) float32``; NaN rows for segments with no pixel."""
        n = self.count[:, None]
        with np.errstate(invalid='ignore', divide='ignore'):
            mean = self.total / n
            std = np.sqrt(np.clip(self.total_sq / n - mean * mean, 0.0, None))
            gsum = self.total[:, 4] + self.total[:, 5]
            horiz = np.where(gsum > 0, self.total[:, 4] / np.where(gsum > 0, gsum, 1.0), 0.5)
        feats = np.concatenate([mean[:, :3], std[:, :3], mean[:, 3:4], std[:, 3:4],
                                horiz[:, None]], axis=1)
        feats[self.count == 0] = np.nan
        return feats.astype(np.float32)


def colour_statistics(image: np.ndarray, segment_map: np.ndarray, num_segments: int,
                      stride: int = 1) -> ColourStats:
    """Sums of colour/texture channels per segment over ``segment_map`` (``-1`` = none).

    ``stride > 1`` samples every ``stride``-th pixel in x and y (gradients are still taken at
    full resolution): ~``stride²`` times cheaper, same means/stds up to sampling noise; a
    segment with no sampled pixel gets NaN features (imputed by the normaliser).

    With numba (:func:`dsseg_core.jit.jit_enabled`) one compiled pass over the sampled pixels
    (:func:`.descriptor_kernels.colour_sums_kernel`) gives the same sums: bit for bit where
    numpy's float32 arithmetic is glibc's ``cbrtf`` and an FMA BLAS (as on our machines),
    else to float32 rounding (< 1e-6 relative).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[:2] != segment_map.shape:
        raise ValueError(f'image {image.shape[:2]} and segment map {segment_map.shape} differ')
    stats = ColourStats.zeros(num_segments)
    seg = segment_map.ravel()
    sel = (seg >= 0) & (seg < num_segments)
    if num_segments == 0 or not sel.any():
        return stats
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if jit_enabled():
        colour_sums_kernel(np.ascontiguousarray(image[..., :3]),
                           np.ascontiguousarray(segment_map, dtype=np.int32),
                           int(num_segments), int(stride), _SRGB_TO_LINEAR, _M_RGB2XYZ,
                           _M_XYZ_WHITE, _EPS32, _KAPPA32, stats.total, stats.total_sq,
                           stats.count)
        return stats
    # Only convert the bounding rows of the mask: cheaper on sparse LiDAR footprints.
    rows = np.flatnonzero((segment_map >= 0).any(axis=1))
    r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, image.shape[0])
    sub = image[r0:r1]
    seg_sub = segment_map[r0:r1]
    keep = (seg_sub >= 0) & (seg_sub < num_segments)
    if stride > 1:
        grid = np.zeros(keep.shape, dtype=bool)
        grid[(-r0) % stride::stride, ::stride] = True  # rows aligned to the full image
        keep &= grid
    s = seg_sub[keep]
    # L* on the whole band (the gradients need neighbours), a*/b* only at mask pixels.
    lum = _lightness(sub)
    # forward differences (central ones are blind to 1-pixel texture), last row/col repeated
    gx = np.abs(np.diff(lum, axis=1, append=lum[:, -1:]))
    gy = np.abs(np.diff(lum, axis=0, append=lum[-1:, :]))
    lab = rgb_to_lab(sub[keep][None])[0]
    gxk, gyk = gx[keep], gy[keep]
    vals = (lab[:, 0], lab[:, 1], lab[:, 2], np.hypot(gxk, gyk), gxk, gyk)
    for c, v in enumerate(vals):
        v = v.astype(np.float64)
        stats.total[:, c] = np.bincount(s, weights=v, minlength=num_segments)
        stats.total_sq[:, c] = np.bincount(s, weights=v * v, minlength=num_segments)
    stats.count[:] = np.bincount(s, minlength=num_segments)
    return stats

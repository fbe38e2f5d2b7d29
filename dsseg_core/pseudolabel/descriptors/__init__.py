"""Segment descriptors: weight-free (LiDAR geometry + image colour/texture) and DINO.

A descriptor row is the concatenation of the enabled groups, in the order of
:data:`GROUP_ORDER`: ``geometric`` (:mod:`.geometric`), ``colour`` (:mod:`.colour`), ``dino``
(:mod:`.dino`). :class:`DescriptorNormaliser` makes groups comparable before k-means:

1. z-score per feature with the mean/std of the training descriptors (std floored at 1e-6;
   NaN — a group missing for a segment — becomes 0 = the mean after scaling);
2. per-group weighting: group ``g`` is multiplied by ``w_g / sqrt(dim_g)``, so each group
   contributes ``w_g²`` to the expected squared distance whatever its dimension (384 DINO
   channels do not drown 16 geometry features unless asked to).

The statistics, weights and the feature names are saved with the centroids so new drives are
normalised identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from dsseg_core.config import StageConfig
from dsseg_core.errors import DatasetError
from dsseg_core.pseudolabel.descriptors.colour import COLOUR_FEATURES
from dsseg_core.pseudolabel.descriptors.dino import DinoConfig
from dsseg_core.pseudolabel.descriptors.geometric import GEOMETRIC_FEATURES, GeometricConfig

__all__ = [
    'GROUP_ORDER',
    'DescriptorConfig',
    'DescriptorNormaliser',
    'DescriptorSpec',
]

GROUP_ORDER = ('geometric', 'colour', 'dino')


class DescriptorConfig(StageConfig):
    """Which descriptor groups are used and how they are weighted."""

    use_geometric: bool = True
    use_colour: bool = True
    colour_stride: int = Field(2, ge=1, le=8,
                               description='colour statistics on every n-th pixel (x and y)')
    geometric: GeometricConfig = Field(default_factory=GeometricConfig)
    dino: DinoConfig = Field(default_factory=DinoConfig)
    group_weights: dict[str, float] = Field(
        default_factory=lambda: {'geometric': 1.0, 'colour': 1.0, 'dino': 1.0})


@dataclass(frozen=True)
class DescriptorSpec:
    """Names and dimensions of the enabled groups, in row order."""

    groups: tuple[str, ...]
    dims: tuple[int, ...]

    @classmethod
    def from_config(cls, cfg: DescriptorConfig, dino_dim: int = 0) -> DescriptorSpec:
        groups: list[str] = []
        dims: list[int] = []
        if cfg.use_geometric:
            groups.append('geometric')
            dims.append(len(GEOMETRIC_FEATURES))
        if cfg.use_colour:
            groups.append('colour')
            dims.append(len(COLOUR_FEATURES))
        if cfg.dino.enabled:
            groups.append('dino')
            dims.append(int(dino_dim))
        return cls(tuple(groups), tuple(dims))

    @property
    def dim(self) -> int:
        return int(sum(self.dims))

    def slices(self) -> dict[str, slice]:
        out = {}
        start = 0
        for g, d in zip(self.groups, self.dims, strict=True):
            out[g] = slice(start, start + d)
            start += d
        return out

    def feature_names(self) -> list[str]:
        names = {'geometric': list(GEOMETRIC_FEATURES), 'colour': list(COLOUR_FEATURES)}
        out: list[str] = []
        for g, d in zip(self.groups, self.dims, strict=True):
            out += names.get(g, [f'{g}_{i}' for i in range(d)])
        return out


@dataclass
class DescriptorNormaliser:
    """z-score + per-group weighting (see module doc)."""

    mean: np.ndarray
    std: np.ndarray
    scale: np.ndarray  # per feature: w_g / sqrt(dim_g)
    spec: DescriptorSpec

    @classmethod
    def fit(cls, desc: np.ndarray, spec: DescriptorSpec, weights: dict[str, float]
            ) -> DescriptorNormaliser:
        desc = np.asarray(desc, dtype=np.float64)
        if desc.ndim != 2 or desc.shape[1] != spec.dim:
            raise DatasetError(f'descriptors have shape {desc.shape}, expected (N, {spec.dim})')
        with np.errstate(all='ignore'):
            mean = np.nanmean(desc, axis=0) if len(desc) else np.zeros(spec.dim)
            std = np.nanstd(desc, axis=0) if len(desc) else np.ones(spec.dim)
        mean = np.nan_to_num(mean, nan=0.0)
        std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
        scale = np.ones(spec.dim)
        for g, sl in spec.slices().items():
            d = sl.stop - sl.start
            scale[sl] = float(weights.get(g, 1.0)) / np.sqrt(max(d, 1))
        return cls(mean, std, scale, spec)

    def transform(self, desc: np.ndarray) -> np.ndarray:
        desc = np.asarray(desc, dtype=np.float64)
        if desc.ndim != 2 or desc.shape[1] != len(self.mean):
            raise DatasetError(
                f'descriptors have {desc.shape[-1]} features but the centroids expect '
                f'{len(self.mean)} ({self.spec.groups}); use the same descriptor config as '
                'when the centroids were fitted')
        z = (desc - self.mean) / self.std
        z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
        return (z * self.scale).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            'norm_mean': self.mean, 'norm_std': self.std, 'norm_scale': self.scale,
            'spec_groups': np.array(self.spec.groups, dtype='U32'),
            'spec_dims': np.array(self.spec.dims, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, data: dict) -> DescriptorNormaliser:
        spec = DescriptorSpec(tuple(str(g) for g in data['spec_groups']),
                              tuple(int(d) for d in data['spec_dims']))
        return cls(np.asarray(data['norm_mean']), np.asarray(data['norm_std']),
                   np.asarray(data['norm_scale']), spec)

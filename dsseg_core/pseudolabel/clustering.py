"""k-means pseudo-classes over segment descriptors.

Class 0 is the ground (never clustered); the ``k`` clusters are classes ``1..k``. Fitting uses
scikit-learn's ``MiniBatchKMeans`` (seeded, ``n_init`` restarts; scales to millions of
segments), on descriptors normalised by :class:`DescriptorNormaliser`.

If ``k`` is larger than the number of distinct descriptors, ``k`` is reduced to that number
with a warning (and ``Centroids.k`` records the value used, so ``num_classes`` follows); with
no descriptor at all, :class:`DatasetError` explains what to check.

:class:`Centroids` is saved as ``centroids.npz``: ``centroids (k, D)`` (in normalised space),
the normaliser arrays, ``k``, ``seed`` and the descriptor spec; :meth:`Centroids.assign` labels
new descriptors (nearest centroid → class ``1 + index``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field

from dsseg_core.atomic import atomic_path
from dsseg_core.config import StageConfig
from dsseg_core.errors import DatasetError, DependencyError
from dsseg_core.pseudolabel.descriptors import DescriptorNormaliser, DescriptorSpec

__all__ = ['GROUND_CLASS', 'Centroids', 'ClusteringConfig', 'fit_centroids']

log = logging.getLogger(__name__)

GROUND_CLASS = 0
FORMAT_VERSION = 1


class ClusteringConfig(StageConfig):
    """k-means settings."""

    k: int = Field(30, ge=1, le=254, description='non-ground pseudo-classes (1..k)')
    seed: int = 0
    batch_size: int = Field(4096, ge=16)
    max_iter: int = Field(200, ge=1)
    n_init: int = Field(5, ge=1)


@dataclass
class Centroids:
    """Fitted pseudo-classes: centroids in normalised descriptor space + the normaliser."""

    centroids: np.ndarray
    normaliser: DescriptorNormaliser
    seed: int = 0
    requested_k: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(len(self.centroids))

    @property
    def num_classes(self) -> int:
        """Ground + k clusters."""
        return self.k + 1

    @property
    def spec(self) -> DescriptorSpec:
        return self.normaliser.spec

    def assign(self, desc: np.ndarray) -> np.ndarray:
        """Class id ``(N,) int32`` in ``1..k`` of each raw (un-normalised) descriptor row."""
        desc = np.asarray(desc)
        if len(desc) == 0:
            return np.zeros(0, dtype=np.int32)
        z = self.normaliser.transform(desc).astype(np.float64)
        c = self.centroids.astype(np.float64)
        d2 = (z * z).sum(1)[:, None] - 2.0 * z @ c.T + (c * c).sum(1)[None, :]
        return (np.argmin(d2, axis=1) + 1).astype(np.int32)

    def save(self, path: str | os.PathLike[str]) -> None:
        arrays = {
            'format_version': np.array(FORMAT_VERSION),
            'centroids': self.centroids.astype(np.float32),
            'k': np.array(self.k), 'requested_k': np.array(self.requested_k),
            'seed': np.array(self.seed), 'ground_class': np.array(GROUND_CLASS),
            **self.normaliser.to_arrays(),
        }
        with atomic_path(path) as tmp:
            with open(tmp, 'wb') as fh:
                np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Centroids:
        path = Path(path)
        if not path.exists():
            raise DatasetError(f'{path}: centroids file not found (--centroids)')
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            return cls(
                centroids=arrays['centroids'],
                normaliser=DescriptorNormaliser.from_arrays(arrays),
                seed=int(arrays.get('seed', 0)),
                requested_k=int(arrays.get('requested_k', len(arrays['centroids']))),
            )
        except (KeyError, ValueError, OSError) as err:
            raise DatasetError(f'{path}: not a dsseg centroids.npz ({err}); create it with '
                               '`dsseg pseudo-label`') from err


def fit_centroids(
    desc: np.ndarray,
    spec: DescriptorSpec,
    cfg: ClusteringConfig,
    group_weights: dict[str, float] | None = None,
) -> Centroids:
    """Fit the normaliser then k-means on raw descriptor rows ``(N, D)``."""
    desc = np.asarray(desc, dtype=np.float64)
    if desc.ndim != 2 or len(desc) == 0:
        raise DatasetError(
            'no segment descriptors to cluster: no non-ground segment was visible in any '
            'camera (check the calibration/topics with `dsseg frames`, or lower '
            'proposals min size / masks.min_pixels)')
    norm = DescriptorNormaliser.fit(desc, spec, group_weights or {})
    z = norm.transform(desc).astype(np.float64)
    distinct = len(np.unique(np.round(z, 6), axis=0))
    k = cfg.k
    if k > distinct:
        log.warning('k=%d is larger than the number of distinct segment descriptors (%d); '
                    'using k=%d (fewer pseudo-classes). Add frames or lower --k.',
                    k, distinct, distinct)
        k = distinct
    try:
        from sklearn.cluster import MiniBatchKMeans
    except ImportError as err:
        raise DependencyError(f'k-means needs scikit-learn ({err}): pip install '
                              'scikit-learn') from err
    km = MiniBatchKMeans(n_clusters=k, random_state=cfg.seed, batch_size=cfg.batch_size,
                         max_iter=cfg.max_iter, n_init=cfg.n_init)
    km.fit(z)
    centres = km.cluster_centers_.astype(np.float32)
    # Deterministic class order: sort clusters by size (largest = class 1), ties by coords.
    lab = km.predict(z)
    sizes = np.bincount(lab, minlength=k)
    order = np.lexsort((*centres.T[::-1], -sizes))
    return Centroids(centroids=centres[order], normaliser=norm, seed=cfg.seed,
                     requested_k=cfg.k)

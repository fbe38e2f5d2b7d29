"""Image segmenter (issue #4): Segmenter-style ViT, training with an EMA teacher, evaluation,
export.

Submodules import torch lazily; importing this package pulls no heavy dependency.
Public entry points: :func:`dsseg_core.segmenter.inference.load_predictor`,
:func:`dsseg_core.segmenter.model.build_segmenter`,
:func:`dsseg_core.segmenter.checkpoint.load_model` / ``save_run``,
:func:`dsseg_core.segmenter.train.train`.
"""

from __future__ import annotations

__all__ = ['load_predictor']


def load_predictor(path, device: str = 'cpu', precision: str | None = None, **overrides):  # noqa: ANN001, ANN201
    """See :func:`dsseg_core.segmenter.inference.load_predictor`."""
    from dsseg_core.segmenter.inference import load_predictor as _load

    return _load(path, device=device, precision=precision, **overrides)

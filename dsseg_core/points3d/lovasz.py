"""Lovász-softmax loss (Berman et al., CVPR 2018): a convex surrogate of the per-class IoU.

Used with cross-entropy to train the 3D student (as in UOV / SalsaNext). Pure PyTorch; import
this module only where torch is needed.
"""

from __future__ import annotations

import torch

__all__ = ['lovasz_grad', 'lovasz_softmax', 'lovasz_softmax_flat']


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension w.r.t. sorted errors (``gt_sorted`` (P,) float 0/1)."""
    p = gt_sorted.numel()
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_softmax_flat(probas: torch.Tensor, labels: torch.Tensor,
                        classes: str = 'present') -> torch.Tensor:
    """``probas`` (P, C) softmax outputs, ``labels`` (P,) in [0, C). Mean over classes.

    ``classes='present'`` averages only over classes present in ``labels`` (the usual
    choice with partial labels); ``'all'`` over every class.
    """
    if probas.numel() == 0:
        return probas.sum() * 0.0
    num_classes = probas.shape[1]
    losses = []
    for c in range(num_classes):
        fg = (labels == c).to(probas.dtype)
        if classes == 'present' and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    if not losses:
        return probas.sum() * 0.0
    return torch.stack(losses).mean()


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1,
                   classes: str = 'present') -> torch.Tensor:
    """Lovász-softmax of ``logits`` (B, C, H, W) against ``labels`` (B, H, W).

    Pixels equal to ``ignore_index`` are left out. All images of the batch are pooled.
    """
    probas = torch.softmax(logits.float(), dim=1)
    c = probas.shape[1]
    flat = probas.permute(0, 2, 3, 1).reshape(-1, c)
    lab = labels.reshape(-1)
    keep = lab != ignore_index
    return lovasz_softmax_flat(flat[keep], lab[keep], classes=classes)

"""Inference: pre-processing, sliding windows, post-processing, and the torch ``Predictor``.

Everything outside the network call is numpy and shared by :class:`Predictor` (torch) and
:class:`dsseg_core.segmenter.export.OnnxPredictor` (onnxruntime) through
:class:`WindowedPredictor`:

1. RGB ``uint8 (H, W, 3)`` → float, optional resize of the shorter side (bilinear), mean/std
   normalisation, ``(3, H', W')``;
2. zero-pad (after normalisation) up to at least one window; windows of ``window`` pixels every
   ``stride`` pixels, the last one flush with the border; logits of overlapping windows are
   averaged;
3. logits resized back to ``H x W`` (bilinear, half-pixel centres like ``F.interpolate``),
   softmax over classes: ``class_ids = argmax``, ``confidence = max probability``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from dsseg_core.config import StageConfig
from dsseg_core.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    'InferenceConfig',
    'Predictor',
    'WindowedPredictor',
    'load_predictor',
    'resize_bilinear',
    'softmax_argmax',
    'window_starts',
]

log = logging.getLogger(__name__)


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


class InferenceConfig(StageConfig):
    """Sliding-window inference (section ``inference`` of the run config)."""

    short_side: int | None = Field(
        default=None, ge=16, description='resize the shorter image side to this before '
                                         'inference (null: native size)')
    window: int | tuple[int, int] = Field(default=512, description='window size, px (or [h, w])')
    stride: int | tuple[int, int] = Field(default=384, description='window stride, px')
    batch_size: int = Field(default=2, ge=1, description='windows per network call')
    precision: Literal['fp32', 'fp16', 'bf16'] = 'fp32'

    @field_validator('window', 'stride')
    @classmethod
    def _positive(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        if min(_pair(value)) < 1:
            raise ValueError('must be positive')
        return value

    @property
    def window_hw(self) -> tuple[int, int]:
        return _pair(self.window)

    @property
    def stride_hw(self) -> tuple[int, int]:
        return _pair(self.stride)


def _axis_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a bilinear resize along one axis (align_corners=False)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def resize_bilinear(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of the last two axes of ``array`` (float32 out).

    Same sampling as ``torch.nn.functional.interpolate(mode='bilinear',
    align_corners=False, antialias=False)``.
    """
    array = np.asarray(array, dtype=np.float32)
    h, w = array.shape[-2:]
    if (h, w) == (height, width):
        return array
    y0, y1, wy = _axis_taps(h, height)
    x0, x1, wx = _axis_taps(w, width)
    rows = array[..., y0, :] * (1.0 - wy)[:, None] + array[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1.0 - wx) + rows[..., x1] * wx


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of windows covering ``size`` pixels; the last window ends at the border."""
    if size <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, size - window, stride, dtype=np.int64)
    return np.unique(np.append(starts, size - window))


def softmax_argmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(class_ids, confidence)`` of ``(C, H, W)`` logits: argmax and max softmax probability.

    ``class_ids`` is uint8 (uint16 above 255 classes), ``confidence`` float32.
    """
    num_classes = logits.shape[0]
    dtype = np.uint8 if num_classes <= 255 else np.uint16
    # One pass per class over contiguous (H, W) planes: much faster than argmax(axis=0) over
    # a (C, H, W) array, and no (C, H, W) temporary for the exponentials.
    top = logits[0].copy()
    ids = np.zeros(top.shape, dtype=dtype)
    for c in range(1, num_classes):
        better = logits[c] > top
        np.copyto(top, logits[c], where=better)
        ids[better] = c
    denom = np.zeros(top.shape, dtype=np.float32)
    for c in range(num_classes):
        denom += np.exp(logits[c] - top)
    confidence = (1.0 / denom).astype(np.float32)
    return ids, confidence


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as ``uint8 (H, W, 3)`` (mono is expanded)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ModelError(f'expected an RGB image (H, W, 3), got shape {image.shape}')
    if image.dtype != np.uint8:
        raise ModelError(f'expected a uint8 image, got {image.dtype}; convert with '
                         'dsseg_core.msgs.image.to_rgb first')
    return image[:, :, :3]


class WindowedPredictor:
    """Pre/post-processing shared by every backend; subclasses implement :meth:`_forward`.

    ``_forward(batch float32 (B, 3, h, w)) -> logits float32 (B, C, h, w)``.
    """

    fixed_input: tuple[int, int] | None = None  # set when the backend only takes one size

    def __init__(self, *, num_classes: int, class_names: list[str], mean: tuple[float, ...],
                 std: tuple[float, ...], config: InferenceConfig) -> None:
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.config = config

    def _forward(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def window(self) -> tuple[int, int]:
        return self.fixed_input or self.config.window_hw

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """Normalised float32 ``(3, h, w)`` (after the optional short-side resize)."""
        rgb = as_rgb(rgb)
        chw = rgb.transpose(2, 0, 1).astype(np.float32) * (1.0 / 255.0)
        if self.config.short_side:
            h, w = rgb.shape[:2]
            scale = self.config.short_side / min(h, w)
            chw = resize_bilinear(chw, max(1, round(h * scale)), max(1, round(w * scale)))
        return (chw - self.mean) / self.std

    def logits(self, rgb: np.ndarray) -> np.ndarray:
        """Averaged sliding-window logits ``(C, H, W)`` float32 at the input resolution."""
        rgb = as_rgb(rgb)
        height, width = rgb.shape[:2]
        image = self.preprocess(rgb)
        _, h, w = image.shape
        win_h, win_w = self.window
        stride_h, stride_w = self.config.stride_hw
        if self.fixed_input is None:
            # A flexible network takes a whole small image (or a whole side) as one window.
            win_h, win_w = min(win_h, h), min(win_w, w)
        pad_h, pad_w = max(h, win_h), max(w, win_w)
        if (pad_h, pad_w) != (h, w):
            padded = np.zeros((3, pad_h, pad_w), dtype=np.float32)
            padded[:, :h, :w] = image
            image = padded
        ys = window_starts(pad_h, win_h, stride_h)
        xs = window_starts(pad_w, win_w, stride_w)
        boxes = [(int(y), int(x)) for y in ys for x in xs]
        total = np.zeros((self.num_classes, pad_h, pad_w), dtype=np.float32)
        count = np.zeros((pad_h, pad_w), dtype=np.float32)
        bs = self.config.batch_size
        for i in range(0, len(boxes), bs):
            chunk = boxes[i:i + bs]
            batch = np.stack([image[:, y:y + win_h, x:x + win_w] for y, x in chunk])
            out = np.asarray(self._forward(np.ascontiguousarray(batch)), dtype=np.float32)
            if out.shape != (len(chunk), self.num_classes, win_h, win_w):
                raise ModelError(f'network returned logits of shape {out.shape}, expected '
                                 f'{(len(chunk), self.num_classes, win_h, win_w)}')
            for (y, x), window_logits in zip(chunk, out, strict=True):
                total[:, y:y + win_h, x:x + win_w] += window_logits
                count[y:y + win_h, x:x + win_w] += 1.0
        logits = total[:, :h, :w] / count[None, :h, :w]
        if (h, w) != (height, width):
            logits = resize_bilinear(logits, height, width)
        return logits

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(class_ids (H, W) uint8/uint16, confidence (H, W) float32)`` of one RGB image."""
        return softmax_argmax(self.logits(rgb))


class Predictor(WindowedPredictor):
    """Torch backend: eager model on ``device`` with optional fp16/bf16 autocast."""

    def __init__(self, model: nn.Module, *, class_names: list[str] | None = None,
                 config: InferenceConfig | None = None, device: str = 'cpu',
                 precision: str | None = None) -> None:
        import torch

        config = config or InferenceConfig()
        if precision is not None:
            config = InferenceConfig.model_validate({**config.model_dump(),
                                                     'precision': precision})
        num_classes = int(model.num_classes)
        names = list(class_names) if class_names else [f'class_{i:02d}'
                                                       for i in range(num_classes)]
        if len(names) != num_classes:
            raise ModelError(f'{len(names)} class names for a {num_classes}-class model')
        super().__init__(num_classes=num_classes, class_names=names, mean=model.mean,
                         std=model.std, config=config)
        try:
            self.device = torch.device(device)
            if self.device.type == 'cuda' and not torch.cuda.is_available():
                raise RuntimeError('CUDA is not available on this machine')
        except RuntimeError as err:
            raise ModelError(f'device {device!r}: {err}; use device cpu') from err
        self.model = model.to(self.device).eval()
        self._dtype = {'fp32': None, 'fp16': torch.float16,
                       'bf16': torch.bfloat16}[config.precision]

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self._dtype is None:
                out = self.model(x)
            else:
                with torch.autocast(device_type=self.device.type, dtype=self._dtype):
                    out = self.model(x)
        return out.float().cpu().numpy()

    # The shared numpy post-processing (stitch, upsample, softmax) costs more than a small
    # network on the CPU and would dominate a GPU model; the torch backend keeps the whole
    # chain on its device with the same window layout and the same bilinear sampling.
    def _logits_tensor(self, rgb: np.ndarray) -> Any:
        import torch
        from torch.nn import functional as F  # noqa: N812

        rgb = np.ascontiguousarray(as_rgb(rgb))
        if not rgb.flags.writeable:  # a view of received message bytes: torch wants to own it
            rgb = rgb.copy()
        height, width = rgb.shape[:2]
        dev = self.device
        with torch.inference_mode():
            x = torch.from_numpy(rgb).to(dev).permute(2, 0, 1)
            x = x.float().mul_(1.0 / 255.0)
            if self.config.short_side:
                scale = self.config.short_side / min(height, width)
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                x = F.interpolate(x[None], size=size, mode='bilinear', align_corners=False)[0]
            x = (x - torch.from_numpy(self.mean).to(dev)) / torch.from_numpy(self.std).to(dev)
            _, h, w = x.shape
            win_h, win_w = min(self.window[0], h), min(self.window[1], w)
            stride_h, stride_w = self.config.stride_hw
            ys = window_starts(h, win_h, stride_h)
            xs = window_starts(w, win_w, stride_w)
            boxes = [(int(y), int(x0)) for y in ys for x0 in xs]
            total = torch.zeros((self.num_classes, h, w), dtype=torch.float32, device=dev)
            count = torch.zeros((h, w), dtype=torch.float32, device=dev)
            bs = self.config.batch_size
            for i in range(0, len(boxes), bs):
                chunk = boxes[i:i + bs]
                batch = torch.stack([x[:, y:y + win_h, x0:x0 + win_w] for y, x0 in chunk])
                if self._dtype is None:
                    out = self.model(batch)
                else:
                    with torch.autocast(device_type=dev.type, dtype=self._dtype):
                        out = self.model(batch)
                out = out.float()
                if tuple(out.shape) != (len(chunk), self.num_classes, win_h, win_w):
                    raise ModelError(f'network returned logits of shape {tuple(out.shape)}, '
                                     f'expected {(len(chunk), self.num_classes, win_h, win_w)}')
                for (y, x0), window_logits in zip(chunk, out, strict=True):
                    total[:, y:y + win_h, x0:x0 + win_w] += window_logits
                    count[y:y + win_h, x0:x0 + win_w] += 1.0
            logits = total / count
            if (h, w) != (height, width):
                logits = F.interpolate(logits[None], size=(height, width), mode='bilinear',
                                       align_corners=False)[0]
        return logits

    def logits(self, rgb: np.ndarray) -> np.ndarray:
        return self._logits_tensor(rgb).cpu().numpy()

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        logits = self._logits_tensor(rgb)
        with torch.inference_mode():
            confidence, ids = logits.softmax(dim=0).max(dim=0)
        dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        return ids.cpu().numpy().astype(dtype), confidence.cpu().numpy().astype(np.float32)


def load_predictor(path: str | Path, device: str = 'cpu', precision: str | None = None,
                   **overrides: Any) -> WindowedPredictor:
    """A predictor from a run directory (torch), an exported ``.onnx`` file (onnxruntime) or
    an exported TorchScript ``.pt`` file.

    ``overrides`` replace inference settings (``short_side``, ``window``, ``stride``,
    ``batch_size``).
    """
    path = Path(path)
    if path.suffix == '.onnx':
        from dsseg_core.segmenter.export import OnnxPredictor

        return OnnxPredictor(path, device=device, **overrides)
    if path.suffix == '.pt':
        from dsseg_core.segmenter.export import TorchScriptPredictor

        return TorchScriptPredictor(path, device=device, **overrides)
    from dsseg_core.segmenter.checkpoint import load_class_names, load_model, load_run_config

    cfg = load_run_config(path)
    model = load_model(path)
    inference = cfg.inference
    if overrides:
        inference = InferenceConfig.model_validate({**inference.model_dump(), **overrides})
    return Predictor(model, class_names=load_class_names(path, model.num_classes),
                     config=inference, device=device, precision=precision)

"""The 3D student: a small range-image encoder-decoder (SalsaNext / RangeNet family).

A scan becomes a ``rows x width`` range image (``dsseg_core.pseudolabel.range_image``: rows
from the ring field, the KITTI scan order or the beam elevations) with 6 channels — range,
x, y, z, intensity, mask — normalised by constants of the config. The network is fully
convolutional (residual blocks with dilations, stride-2 downsampling, bilinear upsampling with
skip connections), so any number of rows/columns works; inputs are padded to a multiple of
``2 ** depth``. Every point gets the class of its pixel (points sharing a pixel share it);
points without a pixel (nearer than ``range_image.min_range`` or beyond ``max_range``) take
the label of the nearest pixel-owning point, with confidence 0.

This module imports torch at the top: import it only where the student is needed (the CLI
imports it inside ``run``). ``load_student(run_dir)`` is the entry point for the
``cloud_labeller`` node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F  # noqa: N812

from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError, ModelError
from dsseg_core.pseudolabel.range_image import RangeImage, RangeImageConfig, build_range_image

__all__ = [
    'CHANNELS',
    'PointPredictor',
    'RangeStudent',
    'ScanTensors',
    'StudentConfig',
    'OnnxPointPredictor',
    'build_student',
    'export_student_onnx',
    'load_student',
    'scan_to_tensors',
]

log = logging.getLogger(__name__)

CHANNELS = ('range', 'x', 'y', 'z', 'intensity', 'mask')


class StudentConfig(StageConfig):
    """Network + input encoding of the 3D student (section ``student`` inside ``train3d``)."""

    num_classes: int = Field(20, ge=1)
    width: int = Field(32, ge=4, le=256, description='channels of the first stage')
    depth: int = Field(3, ge=1, le=5, description='number of stride-2 downsamplings')
    dilations: list[int] = Field(default_factory=lambda: [1, 2],
                                 description='dilations of the two convs of a residual block')
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    range_image: RangeImageConfig = Field(default_factory=RangeImageConfig)
    channel_mean: list[float] = Field(default_factory=lambda: [12.0, 0.0, 0.0, -1.0, 0.25, 0.0])
    channel_std: list[float] = Field(default_factory=lambda: [12.0, 12.0, 12.0, 1.5, 0.15, 1.0])
    intensity_scale: float | None = Field(
        None, description='divide intensity by this; None = 255 when max > 1.5 else 1')


class ResBlock(nn.Module):
    """Two 3x3 convs (dilated) + BatchNorm + LeakyReLU with a residual shortcut."""

    def __init__(self, cin: int, cout: int, dilations: list[int], dropout: float) -> None:
        super().__init__()
        d1, d2 = (list(dilations) + [1, 1])[:2]
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=d1, dilation=d1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=d2, dilation=d2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        y = self.bn2(self.conv2(y))
        return self.drop(F.leaky_relu(y + self.short(x), 0.1))


class RangeStudent(nn.Module):
    """Encoder-decoder on (B, 6, H, W) range images; returns logits (B, C, H, W)."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.depth = cfg.depth
        chans = [cfg.width * min(2 ** i, 4) for i in range(cfg.depth + 1)]
        self.stem = nn.Sequential(
            nn.Conv2d(len(CHANNELS), chans[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(chans[0]), nn.LeakyReLU(0.1))
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        for i in range(cfg.depth):
            self.enc.append(ResBlock(chans[i], chans[i], cfg.dilations, 0.0))
            self.down.append(nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]), nn.LeakyReLU(0.1)))
        self.bottleneck = ResBlock(chans[-1], chans[-1], cfg.dilations, cfg.dropout)
        self.dec = nn.ModuleList(
            ResBlock(chans[i + 1] + chans[i], chans[i], [1, 1], 0.0)
            for i in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(chans[0], cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:  # replicate-free zero padding (mask channel 0 marks it empty)
            x = F.pad(x, (0, pw, 0, ph))
        y = self.stem(x)
        skips = []
        for enc, down in zip(self.enc, self.down, strict=True):
            y = enc(y)
            skips.append(y)
            y = down(y)
        y = self.bottleneck(y)
        for dec, skip in zip(self.dec, reversed(skips), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            y = dec(torch.cat([y, skip], dim=1))
        return self.head(y)[..., :h, :w]


def build_student(cfg: StudentConfig) -> RangeStudent:
    """A randomly initialised student."""
    if len(cfg.channel_mean) != len(CHANNELS) or len(cfg.channel_std) != len(CHANNELS):
        raise ConfigError(f'student.channel_mean/channel_std need {len(CHANNELS)} values '
                          f'({", ".join(CHANNELS)})')
    if any(s <= 0 for s in cfg.channel_std):
        raise ConfigError('student.channel_std: values must be > 0')
    return RangeStudent(cfg)


@dataclass
class ScanTensors:
    """One scan as network input: ``features`` (6, H, W) float32, its ``range_image``."""

    features: np.ndarray
    range_image: RangeImage


def _intensity(intensity: np.ndarray | None, n: int, scale: float | None) -> np.ndarray:
    if intensity is None:
        return np.zeros(n, np.float32)
    inten = np.asarray(intensity, np.float32).reshape(-1)
    if inten.shape[0] != n:
        raise ConfigError(f'student: intensity has {inten.shape[0]} values for {n} points')
    if scale is None:
        scale = 255.0 if n and float(np.nanmax(inten)) > 1.5 else 1.0
    return inten / scale


def scan_to_tensors(xyz: np.ndarray, intensity: np.ndarray | None, ring: np.ndarray | None,
                    cfg: StudentConfig) -> ScanTensors:
    """Range image + the normalised 6-channel feature image of a scan."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ConfigError(f'student: xyz must be (N, 3), got shape {xyz.shape}')
    n = xyz.shape[0]
    inten = _intensity(intensity, n, cfg.intensity_scale)
    ri = build_range_image(xyz[:, :3], ring, cfg.range_image)
    h, w = ri.rows, ri.cols
    feats = np.zeros((len(CHANNELS), h, w), np.float32)
    valid = ri.index >= 0
    idx = ri.index[valid]
    feats[0][valid] = ri.range[valid]
    for c in range(3):
        feats[1 + c][valid] = xyz[idx, c]
    feats[4][valid] = inten[idx]
    mean = np.asarray(cfg.channel_mean, np.float32)[:, None, None]
    std = np.asarray(cfg.channel_std, np.float32)[:, None, None]
    feats = (feats - mean) / std
    feats[:5, ~valid] = 0.0
    feats[5] = valid.astype(np.float32)
    return ScanTensors(feats, ri)


def pixel_labels(ri: RangeImage, labels: np.ndarray, ignore: int = -1) -> np.ndarray:
    """(H, W) int64 training target: the label of each pixel's (nearest) point, else ignore."""
    out = np.full((ri.rows, ri.cols), ignore, np.int64)
    valid = ri.index >= 0
    out[valid] = np.asarray(labels)[ri.index[valid]]
    out[out < 0] = ignore
    return out


def back_project(ri: RangeImage, xyz: np.ndarray, pixel_class: np.ndarray,
                 pixel_conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-point labels from per-pixel predictions (all points of a pixel share its class).

    Points with no pixel take the class of the nearest point that has one (confidence 0).
    """
    n = ri.num_points
    labels = np.full(n, -1, np.int32)
    conf = np.zeros(n, np.float32)
    has = ri.row_of_point >= 0
    labels[has] = pixel_class[ri.row_of_point[has], ri.col_of_point[has]]
    conf[has] = pixel_conf[ri.row_of_point[has], ri.col_of_point[has]]
    missing = ~has
    if missing.any() and has.any():
        from scipy.spatial import cKDTree

        src = np.flatnonzero(has)
        _, nn_idx = cKDTree(xyz[src, :3]).query(xyz[missing, :3], k=1)
        labels[missing] = labels[src[nn_idx]]
    return labels, conf


class PointPredictor:
    """Labels every point of a scan with the 3D student (for ``cloud_labeller`` and eval)."""

    def __init__(self, model: RangeStudent, cfg: StudentConfig, device: str = 'cpu',
                 class_names: list[str] | None = None) -> None:
        self.model = model.to(device).eval()
        self.cfg = cfg
        self.device = device
        self.num_classes = cfg.num_classes
        self.class_names = class_names or [f'class_{i:02d}' for i in range(cfg.num_classes)]

    @torch.no_grad()
    def predict_logits(self, xyz: np.ndarray, intensity: np.ndarray | None = None,
                       ring: np.ndarray | None = None) -> tuple[np.ndarray, RangeImage]:
        """Per-pixel logits (C, H, W) float32 and the scan's range image."""
        scan = scan_to_tensors(xyz, intensity, ring, self.cfg)
        if scan.features.shape[1] == 0:
            return np.zeros((self.num_classes, 0, scan.features.shape[2]), np.float32), \
                scan.range_image
        return self._forward(scan.features), scan.range_image

    def _forward(self, features: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(features)[None].to(self.device)
        try:
            logits = self.model(x)[0]
        except RuntimeError as err:
            raise ModelError(f'3D student failed on a {tuple(x.shape)} range image: {err}') \
                from err
        return logits.float().cpu().numpy()

    def predict(self, xyz: np.ndarray, intensity: np.ndarray | None = None,
                ring: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(labels int32 (N,), confidence float32 (N,))`` for every point of ``xyz``.

        A scan with no usable point (all out of range) gives all -1 / 0.
        """
        xyz = np.asarray(xyz, np.float32)
        logits, ri = self.predict_logits(xyz, intensity, ring)
        n = xyz.shape[0]
        if logits.shape[1] == 0 or not (ri.row_of_point >= 0).any():
            return np.full(n, -1, np.int32), np.zeros(n, np.float32)
        z = logits - logits.max(axis=0, keepdims=True)
        e = np.exp(z)
        prob = e / e.sum(axis=0, keepdims=True)
        cls = prob.argmax(axis=0).astype(np.int32)
        conf = prob.max(axis=0).astype(np.float32)
        return back_project(ri, xyz, cls, conf)


class OnnxPointPredictor(PointPredictor):
    """:class:`PointPredictor` on an exported ONNX student (onnxruntime, no torch model).

    The export has a fixed input size (rows x width); range images are zero-padded (empty
    pixels) or cropped in rows to it, their width must match.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        import json

        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ModelError('onnxruntime is not installed; pip install onnxruntime') from err
        path = Path(path)
        if not path.is_file():
            raise ModelError(f'{path}: ONNX student not found')
        try:
            self.session = ort.InferenceSession(
                str(path), providers=providers or ['CPUExecutionProvider'])
        except Exception as err:
            raise ModelError(f'{path}: not a loadable ONNX model ({err})') from err
        meta = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if not meta:
            raise ModelError(f'{path}: no dsseg metadata; export it with export_student_onnx')
        info = json.loads(meta)
        self.cfg = StudentConfig.model_validate(info['student'])
        self.num_classes = self.cfg.num_classes
        self.class_names = list(info['class_names'])
        self.input_hw = tuple(info['input_size'])
        self.device = 'cpu'

    def _forward(self, features: np.ndarray) -> np.ndarray:
        h, w = self.input_hw
        c, fh, fw = features.shape
        if fw != w:
            raise ModelError(f'range image is {fw} columns wide but the ONNX student was '
                             f'exported for {w}; set student.range_image.width = {w}')
        x = np.zeros((1, c, h, w), np.float32)
        x[0, :, :min(h, fh)] = features[:, :h]
        out = self.session.run(None, {'range_image': x})[0][0]
        if fh > h:
            pad = np.zeros((out.shape[0], fh - h, w), np.float32)
            out = np.concatenate([out, pad], axis=1)
        return out[:, :fh]


META_KEY = 'dsseg'


def export_student_onnx(run_dir: str | Path, out: str | Path | None = None,
                        rows: int = 64, opset: int = 17) -> Path:
    """Export a train-3d run to ONNX for a ``rows x range_image.width`` input (batch 1)."""
    import json
    import warnings

    import onnx

    from dsseg_core.atomic import atomic_path
    from dsseg_core.points3d.train3d import load_student_model

    model, cfg, names = load_student_model(run_dir)
    width = cfg.range_image.width
    path = Path(out) if out else Path(run_dir) / f'student_{rows}x{width}.onnx'
    example = torch.zeros(1, len(CHANNELS), rows, width)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            torch.onnx.export(model, (example,), str(tmp), dynamo=False,
                              input_names=['range_image'], output_names=['logits'],
                              opset_version=opset)
        except Exception as err:
            raise ModelError(f'ONNX export of {run_dir} failed: {err}'.replace('\n', ' ')) \
                from err
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key = META_KEY
        entry.value = json.dumps({'format': 'dsseg-student-export-1',
                                  'student': cfg.model_dump(mode='json'),
                                  'class_names': names, 'input_size': [rows, width]})
        onnx.save(proto, str(tmp))
    return path


def load_student(path: str | Path, device: str = 'cpu') -> PointPredictor:
    """The 3D student of a ``dsseg train-3d`` run directory (or an exported ``.onnx``),
    ready to label scans: ``predict(xyz, intensity=None, ring=None) -> (labels, confidence)``.
    """
    if str(path).endswith('.onnx'):
        return OnnxPointPredictor(path)
    from dsseg_core.points3d.train3d import load_student_model

    model, cfg, names = load_student_model(path, device=device)
    return PointPredictor(model, cfg, device=device, class_names=names)

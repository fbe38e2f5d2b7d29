"""The demo report: pictures of what the pipeline produced, in one folder with an index page.

Inputs are the artefacts of the other stages, all optional except the input bag:

* the input bag (camera images + calibration, via :func:`dsseg_core.frames.iter_frames`);
* a bag recorded from the nodes (``dsseg run --record``): class-id masks, overlays and
  labelled clouds, matched to the input frames by header stamp;
* a training run (``metrics.csv`` → loss curve) and an evaluation (confusion matrix PNG);
* a pseudo-labelled dataset (its gallery contact sheet);
* a timings file (JSON ``{stage: seconds}``) written by the demo script.

Everything is drawn with numpy + Pillow (no matplotlib).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsseg_core.atomic import atomic_path, write_text_atomic
from dsseg_core.errors import DatasetError

__all__ = ['ReportInputs', 'bev_image', 'build_report', 'draw_points', 'plot_curve']

log = logging.getLogger(__name__)


@dataclass
class ReportInputs:
    """What to put in the report (everything but ``bag`` may be missing)."""

    bag: Path
    recorded: Path | None = None
    run: Path | None = None
    dataset: Path | None = None
    eval_dir: Path | None = None
    timings: Path | None = None
    max_frames: int = 4
    notes: list[str] = field(default_factory=list)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format='PNG')


def draw_points(image: np.ndarray, uv: np.ndarray, colors: np.ndarray,
                radius: int = 1) -> np.ndarray:
    """Paint square dots of ``colors`` (M,3 uint8) at pixel coords ``uv`` (M,2) on a copy."""
    out = image.copy()
    h, w = out.shape[:2]
    px = np.floor(uv).astype(np.int64)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            x = px[:, 0] + dx
            y = px[:, 1] + dy
            ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            out[y[ok], x[ok]] = colors[ok]
    return out


def bev_image(xyz: np.ndarray, colors: np.ndarray, extent_m: float = 40.0,
              size_px: int = 480) -> np.ndarray:
    """Top-down view (x forward = up, y left = left) of a cloud, ``size_px`` square."""
    img = np.full((size_px, size_px, 3), 24, np.uint8)
    scale = size_px / (2.0 * extent_m)
    col = ((extent_m - xyz[:, 1]) * scale).astype(np.int64)
    row = ((extent_m - xyz[:, 0]) * scale).astype(np.int64)
    ok = (col >= 0) & (col < size_px) & (row >= 0) & (row < size_px)
    # Draw far-to-near in height so higher points (objects) stay visible over the ground.
    order = np.argsort(xyz[ok, 2], kind='stable')
    img[row[ok][order], col[ok][order]] = colors[ok][order]
    c = size_px // 2
    img[c - 3:c + 4, c - 1:c + 2] = 255  # the ego vehicle
    return img


def plot_curve(series: dict[str, Sequence[tuple[float, float]]], path: Path,
               title: str = '', xlabel: str = 'step', size: tuple[int, int] = (720, 400)
               ) -> None:
    """A minimal line chart (PNG): one line per named series of (x, y) points."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 20, 30, 40
    img = Image.new('RGB', size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    if not pts:
        draw.text((left, h // 2), 'no data', fill=(0, 0, 0))
        with atomic_path(path) as tmp:
            img.save(tmp, format='PNG')
        return
    xs = np.array([p[0] for p in pts], float)
    ys = np.array([p[1] for p in pts], float)
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = float(ys.min()), float(ys.max())
    if x1 == x0:
        x1 = x0 + 1.0
    if y1 == y0:
        y1 = y0 + 1.0

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right),
                h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))

    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        _, yp = to_px(x0, yv)
        draw.line([left - 4, yp, left, yp], fill=(0, 0, 0))
        draw.text((4, yp - 6), f'{yv:.3g}', fill=(0, 0, 0))
        xv = x0 + (x1 - x0) * i / 4
        xp, _ = to_px(xv, y0)
        draw.line([xp, h - bottom, xp, h - bottom + 4], fill=(0, 0, 0))
        draw.text((xp - 10, h - bottom + 8), f'{xv:.0f}', fill=(0, 0, 0))
    draw.text((w // 2 - 20, h - 16), xlabel, fill=(0, 0, 0))
    draw.text((left, 8), title, fill=(0, 0, 0))
    line_colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for i, (name, s) in enumerate(series.items()):
        good = [p for p in s if math.isfinite(p[1])]
        color = line_colors[i % len(line_colors)]
        if len(good) > 1:
            draw.line([to_px(x, y) for x, y in good], fill=color, width=2)
        draw.text((w - right - 160, top + 8 + 14 * i), name, fill=color)
    with atomic_path(path) as tmp:
        img.save(tmp, format='PNG')


def _read_metrics(run: Path) -> dict[str, list[tuple[float, float]]]:
    path = run / 'metrics.csv'
    if not path.exists():
        return {}
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline='', encoding='utf-8') as fh:
        for row in csv.DictReader(fh):
            try:
                step = float(row['step'])
            except (KeyError, ValueError):
                continue
            for key in ('loss', 'loss_sparse', 'loss_soft'):
                try:
                    value = float(row.get(key) or 'nan')
                except ValueError:
                    continue
                if math.isfinite(value):
                    series.setdefault(key, []).append((step, value))
    return series


def _recorded_outputs(recorded: Path) -> dict[int, dict[str, object]]:
    """Decode the recorded overlays / masks / labelled clouds, keyed by header stamp."""
    from dsseg_core.bag.reader import open_bag
    from dsseg_core.msgs.buffer import stamp_to_ns
    from dsseg_core.msgs.image import image_to_numpy
    from dsseg_core.msgs.pointcloud import cloud_to_points

    out: dict[int, dict[str, object]] = {}
    with open_bag(recorded) as bag:
        topics = bag.topics
        wanted = [t for t, info in topics.items()
                  if info.msgtype in ('sensor_msgs/msg/Image', 'sensor_msgs/msg/PointCloud2')]
        for topic, _, msg in bag.messages(wanted):
            stamp = stamp_to_ns(msg.header)
            slot = out.setdefault(stamp, {})
            if topics[topic].msgtype == 'sensor_msgs/msg/PointCloud2':
                arrays = cloud_to_points(msg, fields=None)
                if 'label' in arrays.extra:
                    slot['cloud'] = arrays
            elif topic.endswith('overlay'):
                slot['overlay'] = np.array(image_to_numpy(msg))
            elif topic.endswith('mask'):
                slot['mask'] = np.array(image_to_numpy(msg))
    return out


def _cloud_colors(arrays: object) -> np.ndarray:
    from dsseg_core.msgs.pointcloud import unpack_rgb
    from dsseg_core.palette import class_colors

    extra = arrays.extra  # type: ignore[attr-defined]
    if 'rgb' in extra:
        return unpack_rgb(np.asarray(extra['rgb']))
    return class_colors(np.asarray(extra['label']).astype(np.int64))


def build_report(inputs: ReportInputs, out_dir: str | os.PathLike[str]) -> Path:
    """Write the report folder; returns the path of its ``index.html``."""
    from dsseg_core.frames import FramesConfig, iter_frames
    from dsseg_core.projection import project_points

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    recorded = _recorded_outputs(inputs.recorded) if inputs.recorded else {}
    if inputs.recorded and not recorded:
        inputs.notes.append(f'{inputs.recorded}: the recorded bag holds no outputs')

    frame_rows: list[str] = []
    frames = list(iter_frames(inputs.bag, FramesConfig()))
    if not frames:
        raise DatasetError(f'{inputs.bag}: no frames to report on')
    with_outputs = [f for f in frames if f.stamp_ns in recorded] or frames
    pick = np.unique(np.linspace(0, len(with_outputs) - 1, inputs.max_frames).round().astype(int))
    for i in pick:
        frame = with_outputs[int(i)]
        rec = recorded.get(frame.stamp_ns, {})
        cam = next(iter(frame.cameras.values()))
        tiles: list[tuple[str, str]] = []
        name = f'frame_{frame.index:04d}'
        _save_png(cam.image, out / f'{name}_camera.png')
        tiles.append(('camera', f'{name}_camera.png'))
        if 'overlay' in rec:
            _save_png(np.asarray(rec['overlay']), out / f'{name}_overlay.png')
            tiles.append(('segmenter overlay (~/overlay)', f'{name}_overlay.png'))
        if 'cloud' in rec:
            arrays = rec['cloud']
            colors = _cloud_colors(arrays)
            proj = project_points(arrays.xyz, cam.calib)  # type: ignore[attr-defined]
            img = (cam.image.astype(np.float32) * 0.5).astype(np.uint8)
            img = draw_points(img, proj.uv, colors[proj.point_index], radius=1)
            _save_png(img, out / f'{name}_cloud_in_image.png')
            tiles.append(('labelled cloud projected into the image',
                          f'{name}_cloud_in_image.png'))
            _save_png(bev_image(arrays.xyz, colors), out / f'{name}_cloud_bev.png')  # type: ignore[attr-defined]
            tiles.append(('labelled cloud, top view (grey = unknown)', f'{name}_cloud_bev.png'))
        cells = ''.join(
            f'<figure><img src="{html.escape(src)}" loading="lazy">'
            f'<figcaption>{html.escape(cap)}</figcaption></figure>' for cap, src in tiles)
        frame_rows.append(f'<h3>frame {frame.index} (stamp {frame.stamp_ns} ns)</h3>'
                          f'<div class="row">{cells}</div>')
    sections.append('<h2>Frames</h2>' + ''.join(frame_rows))

    if inputs.run is not None:
        series = _read_metrics(inputs.run)
        if series:
            plot_curve(series, out / 'loss_curve.png', title='training loss')
            sections.append('<h2>Training</h2><img src="loss_curve.png">')
        else:
            inputs.notes.append(f'{inputs.run}: no metrics.csv, no loss curve')
    if inputs.eval_dir is not None:
        for png in sorted(Path(inputs.eval_dir).glob('*.png')):
            shutil.copyfile(png, out / png.name)
            sections.append(f'<h2>Evaluation</h2><img src="{html.escape(png.name)}">')
    if inputs.dataset is not None:
        sheet = Path(inputs.dataset) / 'gallery' / 'contact_sheet.png'
        if sheet.exists():
            shutil.copyfile(sheet, out / 'gallery_contact_sheet.png')
            rel = os.path.relpath(sheet.parent / 'gallery.html', out)
            sections.append('<h2>Pseudo-classes</h2>'
                            f'<p><a href="{html.escape(rel)}">full gallery</a></p>'
                            '<img src="gallery_contact_sheet.png" style="max-width:100%">')
    if inputs.timings is not None and Path(inputs.timings).exists():
        timings = json.loads(Path(inputs.timings).read_text(encoding='utf-8'))
        rows = ''.join(f'<tr><td>{html.escape(k)}</td><td>{v:.1f} s</td></tr>'
                       for k, v in timings.items())
        total = sum(float(v) for v in timings.values())
        sections.append(f'<h2>Timings</h2><table>{rows}'
                        f'<tr><th>total</th><th>{total:.1f} s</th></tr></table>')
    if inputs.notes:
        sections.append('<h2>Notes</h2><ul>' + ''.join(
            f'<li>{html.escape(n)}</li>' for n in inputs.notes) + '</ul>')
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>dsseg demo report</title>'
        '<style>body{font-family:sans-serif;margin:1em} .row{display:flex;flex-wrap:wrap}'
        'figure{margin:4px} figure img{max-width:620px} td,th{padding:2px 8px}</style>'
        '</head><body><h1>dsseg demo report</h1>'
        f'<p>input bag: {html.escape(str(inputs.bag))}</p>' + ''.join(sections)
        + '</body></html>'
    )
    index = out / 'index.html'
    write_text_atomic(index, page)
    return index

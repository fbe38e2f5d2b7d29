"""Gallery of a pseudo-labelled dataset: what each pseudo-class looks like, to name it.

For every class, up to ``per_class`` examples (the largest connected-by-segment masks, spread
over samples) are shown as:

* an image crop around the mask's bounding box (with a margin), the mask tinted in the class
  colour and its outline drawn;
* a LiDAR view of the class's points in that sample, rendered with numpy: top-down (x forward
  up the picture, y left) and side (x right, z up) scatters, scaled to the points' extent.

Outputs (atomic): ``gallery.html`` (one row per class, with the class names from classes.yaml),
``contact_sheet.png`` (all rows in one picture, Pillow), ``tiles/class_XX_N.png``, and
``classes.yaml`` in the dataset when it does not exist yet (editable names, one per class).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsseg_core.atomic import write_text_atomic
from dsseg_core.errors import DatasetError
from dsseg_core.palette import palette
from dsseg_core.pseudolabel.dataset import (
    PseudoLabelDataset,
    default_class_names,
    write_class_names,
    write_png,
)

__all__ = ['GalleryResult', 'crop_tile', 'lidar_views', 'make_gallery']

TILE_H = 128
CROP_W = 192
VIEW_W = 128


@dataclass
class GalleryResult:
    html: Path
    contact_sheet: Path
    classes_yaml: Path
    examples: dict[int, int]  # class -> number of examples shown


def _resize(img: np.ndarray, w: int, h: int, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    mode = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(img).resize((w, h), mode))


def crop_tile(image: np.ndarray, mask: np.ndarray, colour: np.ndarray,
              margin: float = 0.25) -> np.ndarray:
    """``(TILE_H, CROP_W, 3)`` crop of ``image`` around ``mask``: tint + outline in ``colour``."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    if len(ys) == 0:
        return np.zeros((TILE_H, CROP_W, 3), np.uint8)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my = int((y1 - y0) * margin) + 4
    mx = int((x1 - x0) * margin) + 4
    y0, y1 = max(0, y0 - my), min(h, y1 + my)
    x0, x1 = max(0, x0 - mx), min(w, x1 + mx)
    img = image[y0:y1, x0:x1].astype(np.float32)
    m = mask[y0:y1, x0:x1]
    img[m] = 0.6 * img[m] + 0.4 * colour
    # outline: mask pixels with a non-mask 4-neighbour
    pad = np.pad(m, 1)
    edge = m & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    img[edge] = colour
    crop = img.clip(0, 255).astype(np.uint8)
    ch, cw = crop.shape[:2]
    scale = min(TILE_H / ch, CROP_W / cw)
    nw, nh = max(1, int(cw * scale)), max(1, int(ch * scale))
    out = np.zeros((TILE_H, CROP_W, 3), np.uint8)
    oy, ox = (TILE_H - nh) // 2, (CROP_W - nw) // 2
    out[oy:oy + nh, ox:ox + nw] = _resize(crop, nw, nh)
    return out


def _scatter(a: np.ndarray, b: np.ndarray, size: int, colour: np.ndarray,
             context: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Square scatter image of points (a right, b up), equal axes, with optional grey context."""
    img = np.full((size, size, 3), 20, np.uint8)
    if len(a) == 0:
        return img
    lo_a, hi_a = a.min(), a.max()
    lo_b, hi_b = b.min(), b.max()
    span = max(hi_a - lo_a, hi_b - lo_b, 0.5) * 1.15
    ca, cb = (lo_a + hi_a) / 2, (lo_b + hi_b) / 2

    def draw(pa: np.ndarray, pb: np.ndarray, col: np.ndarray) -> None:
        u = ((pa - ca) / span + 0.5) * (size - 1)
        v = (0.5 - (pb - cb) / span) * (size - 1)
        ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
        img[v[ok].astype(int), u[ok].astype(int)] = col

    if context is not None:
        draw(context[0], context[1], np.array([90, 90, 90], np.uint8))
    draw(a, b, colour)
    return img


def lidar_views(xyz: np.ndarray, sel: np.ndarray, colour: np.ndarray,
                size: int = VIEW_W // 2 * 2) -> np.ndarray:
    """``(size, 2 * size, 3)`` top-down (left) + side (right) views of ``xyz[sel]``.

    Nearby points of other classes (within the selection's box + 1 m) are drawn in grey.
    """
    p = xyz[sel]
    if len(p) == 0:
        return np.full((size, 2 * size, 3), 20, np.uint8)
    lo, hi = p.min(0) - 1.0, p.max(0) + 1.0
    near = (~sel) & np.all((xyz >= lo) & (xyz <= hi), axis=1)
    q = xyz[near]
    top = _scatter(-p[:, 1], p[:, 0], size, colour, (-q[:, 1], q[:, 0]))
    side = _scatter(p[:, 0], p[:, 2], size, colour, (q[:, 0], q[:, 2]))
    return np.concatenate([top, side], axis=1)


def _pick_examples(ds: PseudoLabelDataset, per_class: int, max_samples: int
                   ) -> dict[int, list[tuple[int, int]]]:
    """Per class: (sample index, segment id) of its largest segment masks, one per sample."""
    n = len(ds)
    step = max(1, n // max_samples) if max_samples else 1
    cands: dict[int, list[tuple[int, int, int]]] = {}
    for i in range(0, n, step):
        pts = ds[i].points()
        lab = pts['labels']
        seg = pts['segment']
        ok = (seg >= 0) & (lab >= 0) & pts.get('in_image', np.ones(len(seg), bool))
        if not ok.any():
            continue
        # points per (segment): the class of each segment and its size in this image
        key, counts = np.unique(seg[ok], return_counts=True)
        cls_of = np.zeros(int(seg.max()) + 1, np.int64)
        cls_of[seg[ok]] = lab[ok]
        for s, c in zip(key, counts, strict=True):
            cands.setdefault(int(cls_of[s]), []).append((int(c), i, int(s)))
    out: dict[int, list[tuple[int, int]]] = {}
    # Largest segments first, but examples at least ``gap`` samples apart (consecutive frames
    # of a drive show the same object); the gap is relaxed if that leaves too few examples.
    gap = max(1, n // (2 * max(per_class, 1)))
    for cls, items in cands.items():
        items.sort(key=lambda t: (-t[0], t[1], t[2]))
        chosen: list[tuple[int, int]] = []
        for g in (gap, 1):
            for _, i, s in items:
                if len(chosen) >= per_class:
                    break
                if all(abs(i - j) >= g for j, _ in chosen):
                    chosen.append((i, s))
        out[cls] = chosen
    return out


def make_gallery(root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 per_class: int = 6, max_samples: int = 200) -> GalleryResult:
    """Write the gallery of dataset ``root`` into ``out`` (default ``root/gallery``)."""
    ds = PseudoLabelDataset(root)
    if len(ds) == 0:
        raise DatasetError(f'{root}: the dataset has no samples; nothing to show')
    out = Path(out) if out else Path(root) / 'gallery'
    colours = palette(ds.num_classes).astype(np.float32)
    examples = _pick_examples(ds, per_class, max_samples)
    names = ds.class_names
    row_w = per_class * (CROP_W + VIEW_W * 2 + 8)
    label_w = 150
    rows = []
    html_rows = []
    shown: dict[int, int] = {}
    cache: dict[int, tuple] = {}
    for cls in range(ds.num_classes):
        tiles = []
        cells = []
        for j, (i, s) in enumerate(examples.get(cls, [])):
            if i not in cache:
                smp = ds[i]
                cache.clear()
                cache[i] = (smp, smp.points())
            smp, pts = cache[i]
            seg_mask_pts = pts['segment'] == s
            mask = _segment_pixels(smp, pts, s, cls)
            crop = crop_tile(smp.image, mask, colours[cls])
            views = lidar_views(pts['xyz'], seg_mask_pts, colours[cls].astype(np.uint8),
                                size=TILE_H)
            tile = np.concatenate([crop, np.zeros((TILE_H, 4, 3), np.uint8),
                                   views[:, :2 * VIEW_W] if views.shape[1] >= 2 * VIEW_W
                                   else _resize(views, 2 * VIEW_W, TILE_H),
                                   np.zeros((TILE_H, 4, 3), np.uint8)], axis=1)
            tiles.append(tile)
            rel = f'tiles/class_{cls:02d}_{j}.png'
            write_png(out / rel, tile)
            cells.append(f'<td><img src="{rel}" title="{html.escape(smp.id)} segment {s}">'
                         f'<br><small>{html.escape(smp.id)}</small></td>')
        shown[cls] = len(tiles)
        row = np.full((TILE_H, label_w + row_w, 3), 255, np.uint8)
        row[:, :label_w] = colours[cls].astype(np.uint8)
        x = label_w
        for t in tiles:
            row[:, x:x + t.shape[1]] = t
            x += t.shape[1]
        _draw_label(row, f'{cls}: {names.get(cls, "")}')
        rows.append(row)
        html_rows.append(
            f'<tr><th style="background:rgb{tuple(int(c) for c in colours[cls])}">{cls}<br>'
            f'{html.escape(names.get(cls, ""))}</th>{"".join(cells) or "<td>(no example)</td>"}'
            '</tr>')
    sheet = np.concatenate(rows, axis=0)
    sheet_path = out / 'contact_sheet.png'
    write_png(sheet_path, sheet)
    classes_path = Path(root) / 'classes.yaml'
    if not classes_path.exists():
        write_class_names(classes_path, default_class_names(ds.num_classes))
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>dsseg gallery</title>'
        '<style>body{font-family:sans-serif}td,th{padding:2px;vertical-align:top}'
        'img{image-rendering:pixelated}</style></head><body>'
        f'<h1>Pseudo-classes of {html.escape(str(Path(root).resolve()))}</h1>'
        f'<p>{len(ds)} samples, {ds.num_classes} classes (0 = ground). Each example: image crop '
        '(mask tinted + outlined), LiDAR top-down view (forward = up) and side view (forward = '
        'right); grey = nearby points of other classes. Name the classes by editing '
        f'<code>{html.escape(str(classes_path))}</code>.</p>'
        '<p><a href="contact_sheet.png">contact sheet</a></p>'
        f'<table>{"".join(html_rows)}</table></body></html>\n')
    html_path = out / 'gallery.html'
    write_text_atomic(html_path, page)
    return GalleryResult(html_path, sheet_path, classes_path, shown)


def _segment_pixels(smp, pts: dict, segment: int, cls: int) -> np.ndarray:  # noqa: ANN001
    """Pixels of one segment: the class's label pixels near the segment's projected points.

    Label images store classes, not segments, so the segment's footprint is recovered as the
    connected region (8-neighbourhood) of the class's pixels that contains its points.
    """
    from scipy import ndimage

    cls_mask = smp.labels == cls
    comp, _ = ndimage.label(cls_mask, structure=np.ones((3, 3), bool))
    uv = pts.get('uv')
    if uv is not None and len(uv):
        sel = pts['segment'][pts['in_image']] == segment
        cols = uv[sel, 0].astype(int)
        rows = uv[sel, 1].astype(int)
        ids = np.unique(comp[rows, cols])
        ids = ids[ids > 0]
        if len(ids):
            return np.isin(comp, ids)
    # fallback: the largest component of the class in this image
    if comp.max() == 0:
        return cls_mask
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return comp == int(np.argmax(sizes))


def _draw_label(row: np.ndarray, text: str) -> None:
    from PIL import Image, ImageDraw

    img = Image.fromarray(row)
    draw = ImageDraw.Draw(img)
    draw.rectangle([4, 4, 146, 22], fill=(255, 255, 255))
    draw.text((8, 8), text[:22], fill=(0, 0, 0))
    row[:] = np.asarray(img)

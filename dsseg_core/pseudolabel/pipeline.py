"""Pseudo-labelling pipeline (Drive&Segment stages 3–6): config, per-frame core, two passes.

Per frame (:func:`process_frame`, ROS-free arrays in, arrays out):
ground (:mod:`.ground`) → LiDAR segments (:mod:`.proposals`) → per camera: projection +
z-buffer visibility (:mod:`dsseg_core.projection`) → segment masks (:mod:`.segment_masks`) →
descriptors (:mod:`.descriptors`). Segment ids of a frame: ``0`` = ground, ``1..S-1`` = the
proposals, ``-1`` = no segment.

Run (:func:`run_pseudo_label`), output folder ``DIR`` (format in :mod:`.dataset`):

* **pass 1** — for every frame of every bag (or of this shard): compute the above, write the
  RGB image to ``DIR/images/<id>.png`` and a per-frame cache ``DIR/work/frames/<key>.npz``
  (points, segment ids, segment maps, descriptors), atomically. Frames whose cache exists are
  skipped, so an interrupted run resumes where it stopped.
* **pass 2** — once every shard is done: stack the descriptors of all cached frames (in a fixed
  order), fit the normaliser + k-means (or load ``--centroids``), label every segment, write
  ``labels/``, ``points/``, ``index.jsonl``, ``centroids.npz``, ``classes.yaml``,
  ``dataset.yaml``, ``config.yaml``. Pass 2 is a pure function of the caches and the config,
  so an interrupted + resumed run writes byte-identical labels to an uninterrupted one.

Segments that no camera sees (or with fewer than ``min_segment_pixels`` mask pixels) are not
clustered: their points keep label ``-1`` and their pixels stay unlabelled (255).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field

from dsseg_core.atomic import write_text_atomic
from dsseg_core.config import StageConfig
from dsseg_core.errors import ConfigError, DatasetError
from dsseg_core.jit import jit_enabled
from dsseg_core.pseudolabel.clustering import Centroids, ClusteringConfig, fit_centroids
from dsseg_core.pseudolabel.dataset import (
    NpyBytes,
    default_class_names,
    ignore_for,
    label_dtype_for,
    read_class_names,
    read_npy_members,
    write_class_names,
    write_dataset_yaml,
    write_index,
    write_png,
    write_points,
)
from dsseg_core.pseudolabel.descriptors import DescriptorConfig, DescriptorSpec
from dsseg_core.pseudolabel.descriptors.colour import ColourStats, colour_statistics
from dsseg_core.pseudolabel.descriptors.geometric import geometric_descriptors
from dsseg_core.pseudolabel.ground import GroundConfig
from dsseg_core.pseudolabel.mask_kernels import label_pixels_kernel
from dsseg_core.pseudolabel.proposals import ProposalConfig
from dsseg_core.pseudolabel.range_image import RangeImageConfig
from dsseg_core.pseudolabel.segment_masks import (
    SegmentMaskConfig,
    drop_segments,
    segment_mask_image,
    segment_pixel_counts,
)

__all__ = [
    'CameraInput',
    'FrameInput',
    'FrameResult',
    'PseudoLabelConfig',
    'RunSummary',
    'gather_and_label',
    'iter_bag_frames',
    'iter_kitti_raw_frames',
    'parse_shard',
    'process_frame',
    'run_pseudo_label',
    'segment_scan',
    'source_names',
]

log = logging.getLogger(__name__)

SECTION = 'pseudo_label'
WORK = 'work'


class PseudoLabelConfig(StageConfig):
    """Section ``pseudo_label``: everything from a scan to the dataset."""

    cameras: list[str] = Field(default_factory=list, description='camera names; [] = all')
    min_depth: float = Field(1.0, gt=0, description='points nearer to the camera are dropped')
    visibility_radius_px: int = Field(3, ge=0, description='z-buffer window half-size (px)')
    visibility_depth_tolerance: float = Field(0.1, ge=0, lt=1)
    min_segment_pixels: int = Field(30, ge=1,
                                    description='segments with fewer mask pixels stay unlabelled')
    label_ground: bool = True
    compress_points: bool = Field(False, description='zlib-compress points/<id>.npz')
    every_n: int = Field(1, ge=1, description='use every n-th frame')
    max_frames: int | None = Field(None, ge=1, description='stop after this many frames per bag')
    range_image: RangeImageConfig = Field(default_factory=RangeImageConfig)
    ground: GroundConfig = Field(default_factory=GroundConfig)
    proposals: ProposalConfig = Field(default_factory=ProposalConfig)
    masks: SegmentMaskConfig = Field(default_factory=SegmentMaskConfig)
    descriptors: DescriptorConfig = Field(default_factory=DescriptorConfig)
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)


# ------------------------------------------------------------------------------------------
# Frame inputs


@dataclass
class CameraInput:
    """One camera image of a frame with its calibration (``dsseg_core.calibration``)."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    calib: Any  # CameraCalibration
    stamp_ns: int = 0


@dataclass
class FrameInput:
    """Arrays of one synchronised frame: a LiDAR scan and the camera images."""

    source: str
    index: int
    stamp_ns: int
    xyz: np.ndarray  # (N, 3) float32
    intensity: np.ndarray | None
    ring: np.ndarray | None
    cameras: list[CameraInput] = field(default_factory=list)


@dataclass
class FrameResult:
    """Per-frame output of :func:`process_frame`."""

    segment: np.ndarray  # (N,) int32, 0 = ground, -1 = none
    num_segments: int
    descriptors: np.ndarray  # (S, D) float32
    clusterable: np.ndarray  # (S,) bool
    seg_maps: dict[str, np.ndarray]  # camera -> (H, W) int32
    in_image: dict[str, np.ndarray]  # camera -> (N,) bool (projected into that image)
    uv: dict[str, np.ndarray]  # camera -> (in_image.sum(), 2) float32, in point order
    pixels: np.ndarray  # (S,) int64 mask pixels over all cameras


def resolved_config_dict(cfg: PseudoLabelConfig) -> dict:
    """The resolved config as plain data (for config.yaml)."""
    return cfg.model_dump(mode='json')


def segment_scan(xyz: np.ndarray, ring: np.ndarray | None, cfg: PseudoLabelConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(ground mask (N,) bool, segment (N,) int32)`` with 0 = ground, 1.. = proposals."""
    from dsseg_core.pseudolabel.ground import segment_ground
    from dsseg_core.pseudolabel.proposals import segment_proposals
    from dsseg_core.pseudolabel.range_image import build_range_image

    n = len(xyz)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, np.int32)
    ri = None
    if cfg.ground.method == 'range_angle' or cfg.proposals.method == 'range_image':
        ri = build_range_image(xyz, ring, cfg.range_image)
    ground = segment_ground(xyz, ring, cfg.ground, range_image=ri,
                            range_image_cfg=cfg.range_image)
    raw = segment_proposals(xyz, ground, ring, cfg.proposals, range_image=ri,
                            range_image_cfg=cfg.range_image).astype(np.int64)
    if raw.shape != (n,):
        raise DatasetError(f'proposals returned shape {raw.shape} for {n} points')
    segment = np.full(n, -1, dtype=np.int32)
    has = (raw >= 0) & ~ground
    if has.any():
        ids = raw[has]
        if np.bincount(ids).all():  # already 0..K-1 (segment_proposals' numbering): no sort
            segment[has] = ids.astype(np.int32) + 1
        else:
            _, compact = np.unique(ids, return_inverse=True)
            segment[has] = compact.ravel().astype(np.int32) + 1
    segment[ground] = 0
    return ground, segment


def process_frame(frame: FrameInput, cfg: PseudoLabelConfig, dino: Any | None = None
                  ) -> FrameResult:
    """Segments, masks and descriptors of one frame (see the module doc)."""
    from dsseg_core.projection import project_points, zbuffer_visible

    xyz = np.ascontiguousarray(np.asarray(frame.xyz, dtype=np.float32).reshape(-1, 3))
    n = len(xyz)
    ground, segment = segment_scan(xyz, frame.ring, cfg)
    num_segments = int(segment.max()) + 1 if n and segment.max() >= 0 else 1
    dcfg = cfg.descriptors
    groups = []
    colour = ColourStats.zeros(num_segments)
    dino_sum = dino_w = None
    if dino is not None:
        dino_sum = np.zeros((num_segments, dino.dim))
        dino_w = np.zeros(num_segments)
    seg_maps: dict[str, np.ndarray] = {}
    in_image: dict[str, np.ndarray] = {}
    uvs: dict[str, np.ndarray] = {}
    pixels = np.zeros(num_segments, dtype=np.int64)
    for cam in frame.cameras:
        h, w = cam.image.shape[:2]
        proj = project_points(xyz, cam.calib, min_depth=cfg.min_depth) if n else None
        seg_map = np.full((h, w), -1, dtype=np.int32)
        mask = np.zeros(n, dtype=bool)
        uv = np.zeros((0, 2), np.float32)
        if proj is not None and len(proj):
            vis = zbuffer_visible(proj, w, h, cfg.visibility_radius_px,
                                  cfg.visibility_depth_tolerance)
            mask[proj.point_index] = True
            order = proj.point_index
            if len(order) > 1 and not (order[1:] > order[:-1]).all():
                uv = proj.uv[np.argsort(order, kind='stable')]
            else:  # already in point order (project_points keeps it)
                uv = proj.uv
            proj = proj.subset(vis)
            seg_map = segment_mask_image(proj.uv, proj.depth, segment[proj.point_index], w, h,
                                         cam.calib.camera.fx, cfg.masks)
        else:
            log.warning('%s frame %d camera %s: no LiDAR point projects into the image',
                        frame.source, frame.index, cam.name)
        seg_maps[cam.name] = seg_map
        in_image[cam.name] = mask
        uvs[cam.name] = uv
        pixels += segment_pixel_counts(seg_map, num_segments)
        if dcfg.use_colour:
            colour.add(colour_statistics(cam.image, seg_map, num_segments, dcfg.colour_stride))
        if dino is not None:
            s, wgt = dino(cam.image, seg_map, num_segments)
            dino_sum += s
            dino_w += wgt
    if dcfg.use_geometric:
        # Only segments seen by a camera are described (the others are never clustered);
        # all ground points still feed the local ground height.
        seen = pixels > 0
        seen[0] = True
        seg_seen = np.where((segment >= 0) & seen[np.maximum(segment, 0)], segment, -1)
        groups.append(geometric_descriptors(xyz, seg_seen, num_segments, ground,
                                            frame.intensity, dcfg.geometric))
    if dcfg.use_colour:
        groups.append(colour.features())
    if dino is not None:
        with np.errstate(invalid='ignore', divide='ignore'):
            groups.append((dino_sum / dino_w[:, None]).astype(np.float32))
    desc = (np.concatenate(groups, axis=1) if groups
            else np.zeros((num_segments, 0), np.float32))
    clusterable = pixels >= cfg.min_segment_pixels
    clusterable[0] = False  # ground is class 0, never clustered
    # Pixels of too-small segments stay unlabelled.
    small = pixels < cfg.min_segment_pixels
    if cfg.label_ground:
        small[0] = pixels[0] == 0
    else:
        small[0] = True
    for seg_map in seg_maps.values():
        drop_segments(seg_map, small)
    return FrameResult(segment=segment, num_segments=num_segments, descriptors=desc,
                       clusterable=clusterable, seg_maps=seg_maps, in_image=in_image,
                       uv=uvs, pixels=pixels)


# ------------------------------------------------------------------------------------------
# Frame sources


def source_names(bags: list[str]) -> list[str]:
    """Unique sample-id prefixes for bags: the folder/file name, with parent folders added
    when two bags share a name."""
    paths = [Path(b).resolve() for b in bags]
    depth = 1
    while True:
        names = ['_'.join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth > 8:
            return names
        depth += 1


def iter_bag_frames(bag: str | os.PathLike[str], frames_cfg: Any = None,
                    cameras: list[str] | None = None, source: str | None = None
                    ) -> Iterator[FrameInput]:
    """Frames of a bag through ``dsseg_core.frames.iter_frames`` as :class:`FrameInput`.

    ``source`` names the bag in sample ids (default: its folder/file name).
    """
    from dsseg_core import frames as frames_mod

    if frames_cfg is None:
        frames_cfg = frames_mod.FramesConfig()
    source = source or Path(bag).name
    for fr in frames_mod.iter_frames(bag, frames_cfg):
        cams = [CameraInput(name=c.name, image=c.image, calib=c.calib, stamp_ns=c.stamp_ns)
                for c in fr.cameras.values() if not cameras or c.name in cameras]
        cloud = fr.cloud
        yield FrameInput(source=source, index=int(fr.index), stamp_ns=int(fr.stamp_ns),
                         xyz=cloud.xyz, intensity=cloud.intensity, ring=cloud.ring,
                         cameras=cams)


def iter_kitti_raw_frames(directory: str | os.PathLike[str], cam: int = 2,
                          max_frames: int | None = None) -> Iterator[FrameInput]:
    """Frames of a KITTI raw drive folder (``image_0<cam>/data`` + ``velodyne_points/data``).

    For development and benchmarks; the CLI works on bags (``dsseg convert kitti-raw``).
    KITTI raw has no ring field (``ring=None``).
    """
    from PIL import Image

    from dsseg_core.calibration import load_kitti_raw

    directory = Path(directory)
    calib = load_kitti_raw(directory, cam)
    velo = sorted((directory / 'velodyne_points' / 'data').glob('*.bin'))
    if not velo:
        raise DatasetError(f'{directory}/velodyne_points/data: no .bin scans found')
    for i, path in enumerate(velo[:max_frames]):
        img_path = directory / f'image_0{cam}' / 'data' / (path.stem + '.png')
        data = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
        cams = []
        if img_path.exists():
            with Image.open(img_path) as im:
                cams.append(CameraInput(name=calib.camera.name or f'image_0{cam}',
                                        image=np.asarray(im.convert('RGB')), calib=calib,
                                        stamp_ns=i * 100_000_000))
        yield FrameInput(source=directory.name, index=i, stamp_ns=i * 100_000_000,
                         xyz=np.ascontiguousarray(data[:, :3]),
                         intensity=np.ascontiguousarray(data[:, 3]), ring=None, cameras=cams)


# ------------------------------------------------------------------------------------------
# Run


@dataclass
class RunSummary:
    """What a run did (printed by the CLI)."""

    frames: int = 0
    frames_skipped: int = 0
    samples: int = 0
    empty_samples: int = 0
    segments: int = 0
    clustered_segments: int = 0
    labelled_fraction: float = 0.0
    class_histogram: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    k: int = 0
    gathered: bool = False
    shard: tuple[int, int] = (0, 1)
    out: Path | None = None


def parse_shard(text: str | None) -> tuple[int, int]:
    """``'i/n'`` → ``(i, n)`` with ``0 <= i < n``."""
    if not text:
        return 0, 1
    m = re.fullmatch(r'\s*(\d+)\s*/\s*(\d+)\s*', text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(f'--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4')
    return int(m.group(1)), int(m.group(2))


def _frame_key(source: str, index: int) -> str:
    stem = re.sub(r'[^A-Za-z0-9_.-]+', '_', source) or 'bag'
    return f'{stem}_{index:06d}'


def _sample_id(key: str, camera: str) -> str:
    return f'{key}_{re.sub(r"[^A-Za-z0-9_.-]+", "_", camera)}'


def _config_hash(cfg_dict: dict) -> str:
    # Pass-1 relevant settings only (clustering may change between pass 1 and gather).
    d = {k: v for k, v in cfg_dict.items() if k != 'clustering'}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def cache_files(out: Path) -> list[Path]:
    """The frame caches ``OUT/work/frames/<key>.npz`` (never hidden / temporary files)."""
    return sorted(p for p in (out / WORK / 'frames').glob('*.npz')
                  if not p.name.startswith('.') and p.is_file())


def _check_work_config(out: Path, cfg_dict: dict, resume: bool) -> None:
    work = out / WORK
    meta = work / 'pass1.json'
    h = _config_hash(cfg_dict)
    if meta.exists() and not cache_files(out) and not (out / 'dataset.yaml').exists():
        # A run that failed before caching any frame (bad bag, model, ...): nothing to keep
        # or resume, so a rerun (with or without --resume, any config) starts afresh.
        log.info('%s: previous run cached no frame; starting afresh', out)
        meta.unlink(missing_ok=True)
    if meta.exists():
        try:
            old = json.loads(meta.read_text(encoding='utf-8'))
        except (OSError, ValueError) as err:
            raise DatasetError(f'{meta}: unreadable run record ({err}); delete {work} and '
                               'rerun, or choose a new --out') from err
        if not resume:
            raise DatasetError(f'{out}: already holds a pseudo-labelling run; pass --resume to '
                               'continue it, or choose a new --out')
        if old.get('config_hash') != h:
            raise DatasetError(f'{out}: --resume with a different pass-1 config than the run '
                               f'that wrote {meta}; use the same config or a new --out')
    elif (out / 'dataset.yaml').exists() and not resume:
        raise DatasetError(f'{out}: already holds a dataset; choose a new --out')
    work.mkdir(parents=True, exist_ok=True)
    if not meta.exists():
        write_text_atomic(meta, json.dumps({'config_hash': h, 'config': cfg_dict}, indent=1))


def _save_cache(path: Path, frame: FrameInput, res: FrameResult, spec: DescriptorSpec) -> None:
    arrays: dict[str, np.ndarray] = {
        'xyz': np.asarray(frame.xyz, np.float32).reshape(-1, 3),
        'intensity': (np.asarray(frame.intensity, np.float32) if frame.intensity is not None
                      else np.zeros(0, np.float32)),
        'segment': res.segment, 'descriptors': res.descriptors.astype(np.float32),
        'clusterable': res.clusterable, 'pixels': res.pixels,
        'spec_groups': np.array(spec.groups, dtype='U32'),
        'spec_dims': np.array(spec.dims, dtype=np.int64),
    }
    meta = {'source': frame.source, 'index': frame.index, 'stamp_ns': frame.stamp_ns,
            'cameras': []}
    for i, cam in enumerate(frame.cameras):
        seg_map = res.seg_maps[cam.name]
        if res.num_segments <= np.iinfo(np.int16).max:
            seg_map = seg_map.astype(np.int16)  # half the bytes to write and read back
        arrays[f'seg_map_{i}'] = seg_map
        arrays[f'in_image_{i}'] = res.in_image[cam.name]
        arrays[f'uv_{i}'] = res.uv[cam.name]
        meta['cameras'].append({'name': cam.name, 'stamp_ns': int(cam.stamp_ns),
                                'width': int(cam.image.shape[1]),
                                'height': int(cam.image.shape[0])})
    arrays['meta'] = np.array(json.dumps(meta))
    write_points(path, **arrays)


_SMALL_KEYS = ('descriptors', 'clusterable', 'spec_groups', 'spec_dims', 'meta')


def _load_cache(path: Path, keys: tuple[str, ...] | None = None,
                skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A frame cache (``keys``: only those arrays, to keep pass 2's first loop small;
    ``skip``: not those, already loaded)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files
                   if (keys is None or k in keys) and k not in skip}
        if 'meta' not in skip:
            out['meta'] = json.loads(str(out['meta']))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError) as err:
        raise DatasetError(f'{path}: unreadable frame cache ({err}); delete it and rerun with '
                           '--resume (the frame is then recomputed)') from err
    return out


def _load_raw_members(path: Path, names: list[str]) -> dict[str, NpyBytes]:
    """Raw ``.npy`` members of a frame cache (CRC-checked), for copying into points files."""
    try:
        return read_npy_members(path, names)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError) as err:
        raise DatasetError(f'{path}: unreadable frame cache ({err}); delete it and rerun with '
                           '--resume (the frame is then recomputed)') from err


def _cache_ok(path: Path) -> bool:
    """Cheap check that an existing frame cache is a complete cache (else it is recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            if not {'meta', *_SMALL_KEYS, 'segment', 'xyz'} <= files:
                return False
            json.loads(str(data['meta']))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError):
        return False
    return True


def _make_dino(cfg: PseudoLabelConfig) -> Any:
    if not cfg.descriptors.dino.enabled:
        return None
    from dsseg_core.pseudolabel.descriptors.dino import DinoExtractor

    return DinoExtractor(cfg.descriptors.dino)


def run_pass1(
    frames: Iterable[FrameInput],
    out: Path,
    cfg: PseudoLabelConfig,
    shard: tuple[int, int] = (0, 1),
    dino: Any | None = None,
    on_frame: Callable[[int, str], None] | None = None,
    progress: Any = None,
) -> RunSummary:
    """Compute and cache every frame of this shard (skipping cached ones)."""
    summary = RunSummary(shard=shard, out=out)
    cache_dir = out / WORK / 'frames'
    cache_dir.mkdir(parents=True, exist_ok=True)
    spec = None
    counters: dict[str, int] = {}
    ordinal = -1
    for frame in frames:
        n_src = counters.get(frame.source, 0)
        counters[frame.source] = n_src + 1
        if cfg.max_frames is not None and n_src >= cfg.max_frames * cfg.every_n:
            continue
        if n_src % cfg.every_n:
            continue
        ordinal += 1
        if ordinal % shard[1] != shard[0]:
            continue
        if cfg.cameras:
            frame.cameras = [c for c in frame.cameras if c.name in cfg.cameras]
        key = _frame_key(frame.source, frame.index)
        path = cache_dir / f'{key}.npz'
        if path.exists() and not _cache_ok(path):
            log.warning('%s: corrupt frame cache; recomputing the frame', path)
            path.unlink()
        if path.exists():
            summary.frames_skipped += 1
            if progress is not None:
                progress.update(1)
            continue
        if spec is None:
            spec = DescriptorSpec.from_config(cfg.descriptors, getattr(dino, 'dim', 0))
        res = process_frame(frame, cfg, dino)
        for cam in frame.cameras:
            write_png(out / 'images' / f'{_sample_id(key, cam.name)}.png',
                      np.ascontiguousarray(cam.image[..., :3], dtype=np.uint8))
        _save_cache(path, frame, res, spec)
        summary.frames += 1
        if progress is not None:
            progress.update(1)
        if on_frame is not None:
            on_frame(summary.frames, key)
    done = {'shard': list(shard), 'frames': summary.frames + summary.frames_skipped}
    write_text_atomic(out / WORK / f'shard_{shard[0]}_of_{shard[1]}.done', json.dumps(done))
    return summary


def shards_done(out: Path, n: int) -> bool:
    return all((out / WORK / f'shard_{i}_of_{n}.done').exists() for i in range(n))


def _label_image(seg_map: np.ndarray, lut: np.ndarray, ignore: int, dtype: np.dtype,
                 hist: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels of a cached segment map (image) or of the points' segments: ``lut[s]``
    (``lut[-1]`` for ``s = -1``), ``ignore`` where that is negative, and the number of
    labelled pixels, added per class to ``hist`` (classes beyond ``len(hist)`` not counted)."""
    if jit_enabled():
        label_img = np.empty(seg_map.shape, dtype=dtype)
        n_lab = label_pixels_kernel(np.ascontiguousarray(seg_map, dtype=np.int32), lut,
                                    int(ignore), label_img, hist)
        return label_img, int(n_lab)
    ns = len(lut) - 1
    seg_map = seg_map.astype(np.int64)
    lab = lut[np.where((seg_map >= 0) & (seg_map < ns), seg_map, ns)]
    hist += np.bincount(lab[lab >= 0], minlength=len(hist))[:len(hist)]
    return np.where(lab >= 0, lab, ignore).astype(dtype), int((lab >= 0).sum())


def gather_and_label(out: Path, cfg: PseudoLabelConfig, bags: list[str],
                     centroids_path: str | os.PathLike[str] | None = None,
                     progress_factory: Callable[..., Any] | None = None,
                     extra_config: dict | None = None) -> RunSummary:
    """Pass 2: fit (or load) the centroids on all cached frames and write the dataset."""
    summary = RunSummary(out=out, gathered=True)
    cache_paths = cache_files(out)
    if not cache_paths:
        raise DatasetError(f'{out}/{WORK}/frames: no frame was processed (no synchronised '
                           'frame in the bags? check them with `dsseg frames BAG`)')
    # Only descriptors + metadata stay in memory for the fit; the full caches (points, maps)
    # are read again one at a time when writing.
    caches = []
    for p in cache_paths:
        c = _load_cache(p, _SMALL_KEYS)
        caches.append((p, c))
    caches.sort(key=lambda kc: (kc[1]['meta']['source'], kc[1]['meta']['index']))
    specs = {(tuple(c['spec_groups'].tolist()), tuple(c['spec_dims'].tolist()))
             for _, c in caches}
    if len(specs) != 1:
        raise DatasetError(f'{out}: frame caches were made with different descriptor settings '
                           f'{sorted(specs)}; delete {out}/{WORK} and rerun')
    groups, dims = specs.pop()
    spec = DescriptorSpec(groups, dims)
    desc_all = [c['descriptors'][c['clusterable']] for _, c in caches]
    desc = np.concatenate(desc_all) if desc_all else np.zeros((0, spec.dim), np.float32)
    summary.segments = int(sum(len(c['descriptors']) - 1 for _, c in caches))
    summary.clustered_segments = int(len(desc))
    if centroids_path is not None:
        centroids = Centroids.load(centroids_path)
        if centroids.spec != spec:
            raise DatasetError(
                f'{centroids_path}: centroids were fitted on descriptors {centroids.spec} but '
                f'this run computes {spec}; use the same descriptors config')
    else:
        centroids = fit_centroids(desc, spec, cfg.clustering, cfg.descriptors.group_weights)
    centroids.save(out / 'centroids.npz')
    num_classes = centroids.num_classes
    summary.k = centroids.k
    dtype = label_dtype_for(num_classes)
    ignore = ignore_for(dtype)
    hist = np.zeros(num_classes, dtype=np.int64)
    entries = []
    labelled = total = 0
    cameras: list[str] = []
    bar = progress_factory(total=len(caches), desc='pass 2 labels') if progress_factory else None
    for path, small in caches:
        key = path.stem
        meta = small['meta']
        ncam = len(meta['cameras'])
        # the segment maps as arrays; the point arrays as raw .npy members, copied into the
        # points files without decoding them
        c = {**small, **_load_cache(path, tuple(f'seg_map_{i}' for i in range(ncam)),
                                    skip=_SMALL_KEYS)}
        raw = _load_raw_members(path, ['xyz', 'intensity', 'segment',
                                       *(f'in_image_{i}' for i in range(ncam)),
                                       *(f'uv_{i}' for i in range(ncam))])
        segment = raw['segment'].array()
        seg_points = raw['segment'] if segment.dtype == np.int32 else segment.astype(np.int32)
        ns = len(c['descriptors'])
        lut = np.full(ns + 1, -1, dtype=np.int64)  # last entry: segment -1
        if cfg.label_ground:
            lut[0] = 0
        cl = np.flatnonzero(c['clusterable'])
        if len(cl):
            lut[cl] = centroids.assign(c['descriptors'][cl])
        point_labels, _ = _label_image(segment, lut, -1, np.dtype(np.int32),
                                       np.zeros(0, np.int64))
        for i, cam in enumerate(meta['cameras']):
            sid = _sample_id(key, cam['name'])
            if cam['name'] not in cameras:
                cameras.append(cam['name'])
            label_img, n_lab = _label_image(c[f'seg_map_{i}'], lut, ignore, dtype, hist)
            total += label_img.size
            labelled += n_lab
            summary.samples += 1
            if n_lab == 0:
                summary.empty_samples += 1
                log.warning('%s: no labelled pixel (no segment visible); left out of the index',
                            sid)
                continue
            write_png(out / 'labels' / f'{sid}.png', label_img)
            write_points(out / 'points' / f'{sid}.npz', compress=cfg.compress_points,
                         xyz=raw['xyz'], intensity=raw['intensity'], labels=point_labels,
                         segment=seg_points, in_image=raw[f'in_image_{i}'],
                         uv=raw[f'uv_{i}'])
            entries.append({
                'id': sid, 'image': f'images/{sid}.png', 'labels': f'labels/{sid}.png',
                'points': f'points/{sid}.npz', 'bag': meta['source'],
                'stamp_ns': int(cam['stamp_ns'] or meta['stamp_ns']), 'camera': cam['name'],
                'width': int(cam['width']), 'height': int(cam['height']),
                'frame_index': int(meta['index']),
                'labelled_fraction': round(n_lab / label_img.size, 6),
            })
        summary.frames += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    cfg_dict = resolved_config_dict(cfg)
    sections = {SECTION: cfg_dict, **(extra_config or {})}
    write_text_atomic(out / 'config.yaml', yaml.safe_dump(sections, sort_keys=False))
    classes_path = out / 'classes.yaml'
    names = read_class_names(classes_path, num_classes) if classes_path.exists() else \
        default_class_names(num_classes)
    write_class_names(classes_path, names)
    write_index(out / 'index.jsonl', entries)
    write_dataset_yaml(out, num_classes=num_classes, cameras=cameras, bags=list(bags),
                       num_samples=len(entries),
                       extra={'k': centroids.k, 'requested_k': centroids.requested_k,
                              'seed': centroids.seed, 'descriptor_groups': list(spec.groups)})
    summary.class_histogram = hist
    summary.labelled_fraction = labelled / total if total else 0.0
    return summary


def _peeked(frames: Iterable[FrameInput]) -> Iterator[FrameInput]:
    """Read the first frame now (opens the bag: errors surface here), then yield them all."""
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        return iter(())
    return _chain_first(first, it)


def _chain_first(first: FrameInput, rest: Iterator[FrameInput]) -> Iterator[FrameInput]:
    yield first
    yield from rest


def run_pseudo_label(
    frames: Iterable[FrameInput],
    out: str | os.PathLike[str],
    cfg: PseudoLabelConfig,
    *,
    bags: list[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    gather: bool | None = None,
    centroids_path: str | os.PathLike[str] | None = None,
    on_frame: Callable[[int, str], None] | None = None,
    progress_factory: Callable[..., Any] | None = None,
    dino: Any | None = None,
    extra_config: dict | None = None,
) -> RunSummary:
    """Pass 1 for this shard, then pass 2 when every shard is done (or ``gather=True``).

    ``extra_config``: more sections for config.yaml (e.g. ``{'frames': {...}}``).
    ``gather=None`` → automatic (after pass 1 when all shards are done); ``gather=True`` →
    skip pass 1 and label from the caches (needs every shard done); ``gather=False`` → pass 1
    only. ``on_frame(count, key)`` is called after each frame is cached (progress, tests).
    """
    out = Path(out)
    cfg_dict = resolved_config_dict(cfg)
    if gather is True:
        if not (out / WORK / 'pass1.json').exists():
            raise DatasetError(f'{out}: --gather but no pass 1 was run here')
        if not shards_done(out, shard[1]):
            missing = [i for i in range(shard[1])
                       if not (out / WORK / f'shard_{i}_of_{shard[1]}.done').exists()]
            raise DatasetError(f'{out}: --gather: shards {missing} of {shard[1]} are not done')
        return gather_and_label(out, cfg, bags or [], centroids_path, progress_factory,
                                extra_config)
    # Open every input before anything is written to OUT, so that a bad centroids file, DINO
    # checkpoint or bag fails the run without leaving a half-started run behind.
    if centroids_path is not None:
        Centroids.load(centroids_path)
    if dino is None:
        dino = _make_dino(cfg)
    frames = _peeked(frames)
    _check_work_config(out, cfg_dict, resume or shard[1] > 1)
    bar = progress_factory(desc='pass 1 frames', unit='frame') if progress_factory else None
    s1 = run_pass1(frames, out, cfg, shard, dino, on_frame, bar)
    if bar is not None:
        bar.close()
    if gather is False or not shards_done(out, shard[1]):
        s1.gathered = False
        return s1
    s2 = gather_and_label(out, cfg, bags or [], centroids_path, progress_factory,
                          extra_config)
    s2.frames_skipped = s1.frames_skipped
    s2.shard = shard
    return s2

"""The pseudo-labelled dataset on disk (the contract with training, docs/ARCHITECTURE.md).

```
DATASET/
  dataset.yaml   format_version, num_classes (k + 1), ground_class: 0, ignore_index: 255,
                 label_dtype, cameras, bags, num_samples
  config.yaml    resolved pseudo-labelling config
  centroids.npz  k-means centroids + descriptor normalisation + descriptor spec
  classes.yaml   {id: name}; 0: ground, others class_XX (editable, e.g. after `dsseg gallery`)
  index.jsonl    one JSON object per sample: id, image, labels, points, bag, stamp_ns, camera,
                 width, height (+ frame_index, labelled_fraction)
  images/<id>.png   RGB image
  labels/<id>.png   uint8 (uint16 when > 255 classes) label image, 255 (65535) = unlabelled
  points/<id>.npz   xyz float32, intensity float32, labels int32 (-1 unknown), segment int32
                    (-1 none), in_image bool (the points projected into this sample's image),
                    uv float32 (in_image.sum(), 2) their pixel coordinates, in point order
```

Writers here are atomic (:mod:`dsseg_core.atomic`). :class:`PseudoLabelDataset` reads it.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dsseg_core.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from dsseg_core.errors import DatasetError
from dsseg_core.pseudolabel.png_encoder import encode_png_fast

__all__ = [
    'FORMAT_VERSION',
    'IGNORE_UINT8',
    'IGNORE_UINT16',
    'NpyBytes',
    'PseudoLabelDataset',
    'Sample',
    'default_class_names',
    'encode_png',
    'label_dtype_for',
    'read_class_names',
    'read_npy_members',
    'write_class_names',
    'write_dataset_yaml',
    'write_index',
    'write_points',
]

FORMAT_VERSION = 1
IGNORE_UINT8 = 255
IGNORE_UINT16 = 65535


def label_dtype_for(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= 255 else np.dtype(np.uint16)


def ignore_for(dtype: np.dtype) -> int:
    return IGNORE_UINT8 if np.dtype(dtype) == np.uint8 else IGNORE_UINT16


def default_class_names(num_classes: int) -> dict[int, str]:
    return {i: ('ground' if i == 0 else f'class_{i:02d}') for i in range(num_classes)}


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of an ``(H, W, 3) uint8`` RGB or ``(H, W)`` uint8/uint16 image (deterministic).

    Grey, RGB and RGBA images go through :func:`.png_encoder.encode_png_fast` (Paeth or no
    row filter, run-length/Huffman DEFLATE; ~5 ms for a 1242x375 camera image, files a little
    smaller than PIL's at ``compress_level`` 1); other layouts through PIL with
    ``compress_level`` (zlib level: 1 is ~5x faster than 6 at ~10 % more bytes).
    """
    fast = encode_png_fast(array)
    if fast is not None:
        return fast
    from PIL import Image

    arr = np.ascontiguousarray(array)
    if arr.ndim == 2 and arr.dtype == np.uint16:
        img = Image.fromarray(arr, mode='I;16')
    else:
        img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format='PNG', compress_level=compress_level)
    return buf.getvalue()


@dataclass(frozen=True)
class NpyBytes:
    """One complete ``.npy`` member (header + data) as stored in an ``.npz``, passed through
    unparsed (:func:`read_npy_members`, :func:`write_points`)."""

    data: bytes

    def header(self) -> tuple[tuple[int, ...], bool, np.dtype]:
        """``(shape, fortran_order, dtype)`` from the ``.npy`` header."""
        buf = io.BytesIO(self.data[:65536 + 16])
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(buf)
        return np.lib.format.read_array_header_2_0(buf)

    def array(self) -> np.ndarray:
        return np.lib.format.read_array(io.BytesIO(self.data), allow_pickle=False)


def read_npy_members(path: str | os.PathLike[str], names: list[str]) -> dict[str, NpyBytes]:
    """The raw ``<name>.npy`` members of an uncompressed ``.npz`` (CRC-checked by zipfile)."""
    with zipfile.ZipFile(path) as zf:
        return {name: NpyBytes(zf.read(name + '.npy')) for name in names}


def write_points(path: str | os.PathLike[str], compress: bool = False,
                 **arrays: np.ndarray | NpyBytes) -> None:
    """Atomic ``np.savez`` (``compress``: ``np.savez_compressed``) of the point arrays.

    Uncompressed by default: float32 LiDAR coordinates barely compress (~15 %) and zlib
    costs ~100 ms per 120k-point scan. Values may be :class:`NpyBytes` copied from another
    ``.npz`` (pass 2 copies the cached point arrays without decoding them): written through
    zipfile exactly as ``np.savez`` writes an array, so the file is byte-identical.
    """
    raw = any(isinstance(v, NpyBytes) for v in arrays.values())
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as fh:
            if compress or not raw:
                arrays = {k: v.array() if isinstance(v, NpyBytes) else v
                          for k, v in arrays.items()}
                (np.savez_compressed if compress else np.savez)(fh, **arrays)
                return
            # np.savez, member by member (numpy/lib/_npyio_impl.py: _savez)
            with zipfile.ZipFile(fh, mode='w', compression=zipfile.ZIP_STORED,
                                 allowZip64=True) as zf:
                for key, val in arrays.items():
                    with zf.open(key + '.npy', 'w', force_zip64=True) as fid:
                        if isinstance(val, NpyBytes):
                            fid.write(val.data)
                        else:
                            np.lib.format.write_array(fid, np.asanyarray(val),
                                                      allow_pickle=True)


def read_index(path: str | os.PathLike[str], required: tuple[str, ...] = (),
               hint: str = '') -> list[dict[str, Any]]:
    """Samples of an ``index.jsonl`` file, one JSON object per line (blank lines skipped).

    :class:`DatasetError` names ``file:line`` for bad JSON or a sample without one of the
    ``required`` keys (``hint`` says how to fix that).
    """
    path = Path(path)
    entries: list[dict[str, Any]] = []
    for lineno, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f'{path}:{lineno}: not valid JSON ({err.msg})') from err
        if not isinstance(entry, dict):
            raise DatasetError(f'{path}:{lineno}: expected a JSON object per line')
        for key in required:
            if not entry.get(key):
                raise DatasetError(f'{path}:{lineno}: sample has no {key!r} file; {hint}'
                                   .rstrip('; '))
        entries.append(entry)
    return entries


def write_index(path: str | os.PathLike[str], entries: list[dict[str, Any]]) -> None:
    text = ''.join(json.dumps(e, sort_keys=False) + '\n' for e in entries)
    write_text_atomic(path, text)


def write_dataset_yaml(root: str | os.PathLike[str], *, num_classes: int, cameras: list[str],
                       bags: list[str], num_samples: int, extra: dict | None = None) -> None:
    dtype = label_dtype_for(num_classes)
    data = {
        'format_version': FORMAT_VERSION,
        'num_classes': int(num_classes),
        'ground_class': 0,
        'ignore_index': ignore_for(dtype),
        'label_dtype': str(dtype),
        'cameras': list(cameras),
        'bags': list(bags),
        'num_samples': int(num_samples),
        **(extra or {}),
    }
    write_text_atomic(Path(root) / 'dataset.yaml', yaml.safe_dump(data, sort_keys=False))


def write_class_names(path: str | os.PathLike[str], names: dict[int, str]) -> None:
    header = ('# Pseudo-class names (id: name). Edit the names (e.g. after looking at\n'
              '# `dsseg gallery`); later stages read them. 0 is always the ground.\n')
    body = yaml.safe_dump({int(k): str(v) for k, v in sorted(names.items())}, sort_keys=False)
    write_text_atomic(path, header + body)


def read_class_names(path: str | os.PathLike[str], num_classes: int) -> dict[int, str]:
    """Names from a classes.yaml; missing ids get the defaults."""
    names = default_class_names(num_classes)
    path = Path(path)
    if not path.exists():
        return names
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    except yaml.YAMLError as err:
        raise DatasetError(f'{path}: not valid YAML: {err}'.replace('\n', ' ')) from err
    if not isinstance(data, dict):
        raise DatasetError(f'{path}: expected a mapping {{id: name}}')
    for key, value in data.items():
        try:
            i = int(key)
        except (TypeError, ValueError) as err:
            raise DatasetError(f'{path}: class id {key!r} is not an integer') from err
        if 0 <= i < num_classes:
            names[i] = str(value)
    return names


@dataclass
class Sample:
    """One labelled image of a pseudo-labelled dataset."""

    id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) uint8/uint16, ignore_index = unlabelled
    points_path: Path
    meta: dict = field(default_factory=dict)

    def points(self) -> dict[str, np.ndarray]:
        """The sample's point arrays (xyz, intensity, labels, segment, in_image)."""
        with np.load(self.points_path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


class PseudoLabelDataset:
    """Reader: ``len(ds)``, ``ds[i] -> Sample``, ``num_classes``, ``class_names``,
    ``ignore_index``, ``entries`` (the index rows)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        meta_path = self.root / 'dataset.yaml'
        if not meta_path.exists():
            raise DatasetError(f'{self.root}: not a pseudo-labelled dataset (no dataset.yaml); '
                               'create one with `dsseg pseudo-label BAG --out DIR`')
        try:
            self.meta = yaml.safe_load(meta_path.read_text(encoding='utf-8')) or {}
        except yaml.YAMLError as err:
            raise DatasetError(f'{meta_path}: not valid YAML: {err}') from err
        try:
            self.num_classes = int(self.meta['num_classes'])
            self.ignore_index = int(self.meta.get('ignore_index', IGNORE_UINT8))
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f'{meta_path}: missing or bad num_classes/ignore_index') from err
        if int(self.meta.get('format_version', 0)) > FORMAT_VERSION:
            raise DatasetError(f'{meta_path}: format_version {self.meta["format_version"]} is '
                               f'newer than this dsseg ({FORMAT_VERSION}); update dsseg')
        self.ground_class = int(self.meta.get('ground_class', 0))
        index_path = self.root / 'index.jsonl'
        if not index_path.exists():
            raise DatasetError(f'{index_path}: missing; the pseudo-labelling run did not '
                               'finish — rerun it with --resume')
        self.entries: list[dict] = read_index(index_path)
        self.class_names = read_class_names(self.root / 'classes.yaml', self.num_classes)

    def __len__(self) -> int:
        return len(self.entries)

    def _read_png(self, rel: str, what: str) -> np.ndarray:
        from PIL import Image

        path = self.root / rel
        try:
            with Image.open(path) as img:
                arr = np.asarray(img)
        except FileNotFoundError as err:
            raise DatasetError(f'{path}: {what} listed in index.jsonl is missing') from err
        except OSError as err:
            raise DatasetError(f'{path}: cannot read {what}: {err}') from err
        return arr

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        e = self.entries[i]
        image = self._read_png(e['image'], 'image')
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        labels = self._read_png(e['labels'], 'label image')
        if labels.dtype != np.uint8:
            labels = labels.astype(np.uint16)
        return Sample(id=e['id'], image=np.ascontiguousarray(image[..., :3]), labels=labels,
                      points_path=self.root / e['points'], meta=dict(e))

    def class_histogram(self) -> np.ndarray:
        """Labelled pixel count per class over the whole dataset."""
        hist = np.zeros(self.num_classes, dtype=np.int64)
        for i in range(len(self)):
            lab = self._read_png(self.entries[i]['labels'], 'label image').ravel()
            lab = lab[lab != self.ignore_index]
            hist += np.bincount(lab.astype(np.int64), minlength=self.num_classes)[
                :self.num_classes]
        return hist


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    write_bytes_atomic(path, encode_png(array))

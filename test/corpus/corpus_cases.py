"""The malformed-input corpus (issue #7): every case builds its input and a ``dsseg`` command line.

Small text inputs live next to this file (``test/corpus/*.yaml``, ``*.txt``, ``garbage.onnx``);
bags, datasets and checkpoints are generated in a temporary folder from code so the repo keeps
no large binaries. Each case is a function ``build(res) -> Spec`` registered with :func:`case`;
``test/test_corpus.py`` runs each through ``python -m dsseg_core`` and checks the contract
(exit code != 0, one ``dsseg <command>: error:`` line naming the culprit, no traceback, nothing
half-written). ``docs/reliability.md`` lists the same cases.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CORPUS_DIR = Path(__file__).resolve().parent


@dataclass
class Spec:
    """What to run and what the error line must contain."""

    argv: list[str]                       # after ``python -m dsseg_core``
    expect: tuple[str, ...]               # substrings of the error line (file/topic/field)
    out: Path | None = None               # output folder that must stay absent or complete
    out_complete: tuple[str, ...] = ()    # if ``out`` exists, these files must all exist
    keep: tuple[Path, ...] = ()           # user files the failed command must not touch

    def __post_init__(self) -> None:
        if self.argv[0] == 'frames' and not self.out_complete:
            self.out_complete = ('config.yaml',)   # dsseg frames --out writes it last


@dataclass
class Case:
    id: str
    group: str
    command: str                          # the subcommand named in ``dsseg <command>: error:``
    build: Callable[[Resources], Spec]
    doc: str                              # one line for docs/reliability.md
    needs: tuple[str, ...] = ()           # importable modules the case needs (torch, ...)
    xfail: str | None = None              # known bug (strict xfail)
    timeout_s: float = 60.0


CASES: list[Case] = []


def case(id: str, group: str, command: str, doc: str, needs: tuple[str, ...] = (),  # noqa: A002
         xfail: str | None = None, timeout_s: float = 60.0
         ) -> Callable[[Callable[[Resources], Spec]], Callable[[Resources], Spec]]:
    def register(fn: Callable[[Resources], Spec]) -> Callable[[Resources], Spec]:
        CASES.append(Case(id, group, command, fn, doc, needs, xfail, timeout_s))
        return fn
    return register


# --------------------------------------------------------------------------- shared inputs
class Resources:
    """Inputs shared by several cases, built lazily once per test session in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, Path] = {}

    def dir(self, name: str) -> Path:
        """A fresh folder for one case."""
        path = self.root / 'cases' / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def corpus(self, name: str) -> Path:
        return CORPUS_DIR / name

    def _once(self, key: str, make: Callable[[Path], None]) -> Path:
        if key not in self._cache:
            path = self.root / 'shared' / key
            if path.exists():
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            make(path)
            self._cache[key] = path
        return self._cache[key]

    # -- a good synthetic bag (1 camera 64x48 rgb8, 3 scans, /tf_static) ----------------
    def good_bag(self, storage: str = 'mcap') -> Path:
        from dsseg_core.convert.synthetic import write_rig_bag

        return self._once(f'good_bag_{storage}', lambda p: write_rig_bag(
            p, n_scans=3, storage=storage))

    def good_bag_uncompressed(self) -> Path:
        """A plain mcap (no chunk compression) so truncation hits message records."""
        from dsseg_core.convert.synthetic import SyntheticCamera, make_cloud, make_image

        def make(path: Path) -> None:
            _rig_bag(path, n_scans=3, compress=False,
                     image=lambda bag, cam, t, k: bag.add_image(
                         cam.topic, t, cam.frame_id, make_image(64, 48, k), 'rgb8'),
                     cloud=lambda i: make_cloud(i), camera=SyntheticCamera('cam_front'))
        return self._once('good_bag_plain', make)

    # -- a tiny pseudo-labelled dataset in the ARCHITECTURE.md format ----------------------
    def good_dataset(self) -> Path:
        return self._once('good_dataset', lambda p: write_dataset(p))

    def dataset_copy(self, name: str) -> Path:
        dst = self.dir(name) / 'ds'
        shutil.copytree(self.good_dataset(), dst)
        return dst

    # -- a tiny trained segmenter run (random init, saved with save_run) ------------------
    def good_run(self) -> Path:
        def make(path: Path) -> None:
            import torch

            from dsseg_core.segmenter.checkpoint import save_run
            from dsseg_core.segmenter.model import build_segmenter
            from dsseg_core.segmenter.train import TrainConfig

            torch.manual_seed(0)
            cfg = TrainConfig.model_validate({'model': tiny_model_dict(3), 'batch_size': 2,
                                              'data': {'crop': [32, 64], 'num_workers': 0}})
            model = build_segmenter(cfg.model, load_pretrained=False)
            save_run(model, cfg, path, class_names=['a', 'b', 'c'])
        return self._once('good_run', make)

    def run_copy(self, name: str) -> Path:
        dst = self.dir(name) / 'run'
        shutil.copytree(self.good_run(), dst)
        return dst

    def tiny_train_config(self) -> Path:
        """A ``train:`` section with the tiny random-init ViT (no download), 1 step."""
        import yaml

        def make(path: Path) -> None:
            path.mkdir(parents=True)
            (path / 'train.yaml').write_text(yaml.safe_dump({'train': {
                'model': tiny_model_dict(3), 'batch_size': 2,
                'data': {'crop': [32, 64], 'num_workers': 0},
                'optim': {'warmup_steps': 1}, 'ema': {'start_step': 1}}}))
        return self._once('tiny_train', make) / 'train.yaml'

    def gt_folder(self) -> tuple[Path, Path, Path]:
        """(images dir, gt dir, classes yaml) for ``dsseg eval`` with generic ground truth."""
        def make(path: Path) -> None:
            from PIL import Image

            (path / 'images').mkdir(parents=True)
            (path / 'gt').mkdir()
            rng = np.random.default_rng(1)
            Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(
                path / 'images' / 'a.png')
            Image.fromarray(rng.integers(0, 3, (32, 64)).astype(np.uint8)).save(
                path / 'gt' / 'a.png')
            (path / 'classes.yaml').write_text('0: road\n1: car\n2: tree\n')
        root = self._once('gt', make)
        return root / 'images', root / 'gt', root / 'classes.yaml'


def tiny_model_dict(num_classes: int) -> dict:
    from dsseg_core.segmenter.model import tiny_config

    return tiny_config(num_classes).model_dump(mode='json')


def write_dataset(root: Path, num_images: int = 2, height: int = 32, width: int = 64,
                  num_classes: int = 3) -> Path:
    """Two tiny samples in the pseudo-labelled dataset format (ARCHITECTURE.md)."""
    import yaml
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    (root / 'points').mkdir()
    lines = []
    for i in range(num_images):
        sid = f'{i:06d}'
        labels = rng.integers(0, num_classes, size=(height, width)).astype(np.uint8)
        labels[:, ::2] = 255
        rgb = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / 'images' / f'{sid}.png')
        Image.fromarray(labels).save(root / 'labels' / f'{sid}.png')
        np.savez(root / 'points' / f'{sid}.npz',
                 xyz=rng.normal(size=(10, 3)).astype(np.float32),
                 intensity=np.zeros(10, np.float32),
                 labels=rng.integers(-1, num_classes, 10).astype(np.int32),
                 segments=np.zeros(10, np.int32))
        lines.append(json.dumps({'id': sid, 'image': f'images/{sid}.png',
                                 'labels': f'labels/{sid}.png', 'points': f'points/{sid}.npz',
                                 'bag': 'synthetic', 'stamp_ns': i * 100_000_000,
                                 'camera': 'cam', 'width': width, 'height': height}))
    (root / 'index.jsonl').write_text('\n'.join(lines) + '\n')
    (root / 'dataset.yaml').write_text(yaml.safe_dump({
        'format_version': 1, 'num_classes': num_classes, 'ground_class': 0,
        'ignore_index': 255, 'label_dtype': 'uint8', 'cameras': ['cam'], 'bags': ['synthetic']}))
    (root / 'classes.yaml').write_text(yaml.safe_dump(
        {0: 'ground', **{k: f'class_{k:02d}' for k in range(1, num_classes)}}))
    return root


def _rig_bag(path: Path, n_scans: int, image: Callable | None, cloud: Callable | None,
             camera: object, compress: bool = True, info_k: np.ndarray | None = None,
             storage: str = 'mcap') -> None:
    """A bag like ``write_rig_bag`` whose image/cloud messages come from callbacks.

    ``image(bag, cam, stamp, k)`` writes the k-th image; ``cloud(i) -> arrays`` or
    ``cloud(i) -> ('fields', dict)`` for a hand-built PointCloud2.
    """
    from dsseg_core.convert.bag_writer import write_bag

    cam = camera
    t0 = 1_700_000_000_000_000_000
    with write_bag(path, storage=storage, compress=compress) as bag:
        base_lidar = np.eye(4)
        bag.add_tf_static(t0, [('base_link', 'lidar_link', base_lidar),
                               ('lidar_link', cam.frame_id, np.linalg.inv(cam.cam_from_lidar()))])
        for i in range(n_scans):
            t = t0 + i * 100_000_000
            if cloud is not None:
                arrays = cloud(i)
                if isinstance(arrays, tuple):
                    bag.add_cloud('/rig/lidar/points', t, 'lidar_link', fields=arrays[1])
                else:
                    bag.add_cloud('/rig/lidar/points', t, 'lidar_link', arrays)
            if image is not None:
                image(bag, cam, t, i)
                bag.add_camera_info(cam.info_topic, t, cam.frame_id, cam.width, cam.height,
                                    cam.K if info_k is None else info_k)


def message_bag(res: Resources, name: str, *, image: Callable | None = None,
                cloud: Callable | None = None, info_k: np.ndarray | None = None) -> Path:
    """A 3-scan bag with one faulty message kind; the others are good."""
    from dsseg_core.convert.synthetic import SyntheticCamera, make_cloud, make_image

    cam = SyntheticCamera('cam_front')
    if image is None:
        def image(bag, c, t, k):  # noqa: ANN001, ANN202
            bag.add_image(c.topic, t, c.frame_id, make_image(c.width, c.height, k), 'rgb8')
    if cloud is None:
        cloud = make_cloud
    path = res.dir(name) / 'bag'
    _rig_bag(path, 3, image, cloud, cam, info_k=info_k)
    return path


def _frames(bag: Path, *extra: str | Path) -> list[str]:
    return ['frames', str(bag), *[str(e) for e in extra]]


# =========================================================================== bags
@case('bag_missing', 'bags', 'frames', 'bag path does not exist')
def _bag_missing(res: Resources) -> Spec:
    d = res.dir('bag_missing')
    return Spec(_frames(d / 'no_such_bag', '--out', d / 'out'), ('no_such_bag', 'no such file'),
                out=d / 'out')


@case('bag_not_a_bag', 'bags', 'frames', 'a text file named .mcap')
def _bag_not_a_bag(res: Resources) -> Spec:
    d = res.dir('bag_not_a_bag')
    (d / 'notes.mcap').write_text('these are my notes, not a bag\n')
    return Spec(_frames(d / 'notes.mcap', '--out', d / 'out'), ('notes.mcap', 'cannot open bag'),
                out=d / 'out')


@case('bag_folder_without_metadata', 'bags', 'frames', 'folder without metadata.yaml')
def _bag_empty_folder(res: Resources) -> Spec:
    d = res.dir('bag_folder_without_metadata')
    (d / 'bag').mkdir()
    return Spec(_frames(d / 'bag', '--out', d / 'out'), ('bag', 'metadata.yaml'), out=d / 'out')


@case('bag_truncated_mcap', 'bags', 'frames', 'rosbag2 folder whose .mcap is cut in half')
def _bag_truncated(res: Resources) -> Spec:
    d = res.dir('bag_truncated_mcap')
    bag = d / 'bag'
    shutil.copytree(res.good_bag_uncompressed(), bag)
    mcap = next(bag.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    return Spec(_frames(bag, '--out', d / 'out'), (str(bag), 'cannot open bag'), out=d / 'out')


@case('bag_truncated_mcap_file', 'bags', 'frames', 'a single .mcap file cut to 60 %')
def _bag_truncated_file(res: Resources) -> Spec:
    d = res.dir('bag_truncated_mcap_file')
    mcap = next(res.good_bag_uncompressed().glob('*.mcap'))
    data = mcap.read_bytes()
    (d / 'cut.mcap').write_bytes(data[: len(data) * 6 // 10])
    return Spec(_frames(d / 'cut.mcap', '--out', d / 'out'), ('cut.mcap',), out=d / 'out')


@case('bag_corrupt_sqlite', 'bags', 'frames', 'rosbag2 sqlite3 bag whose .db3 is overwritten '
      'with garbage after the header')
def _bag_corrupt_sqlite(res: Resources) -> Spec:
    d = res.dir('bag_corrupt_sqlite')
    bag = d / 'bag'
    shutil.copytree(res.good_bag('sqlite3'), bag)
    db3 = next(bag.glob('*.db3'))
    data = bytearray(db3.read_bytes())
    rng = np.random.default_rng(0)
    data[100:] = rng.integers(0, 256, len(data) - 100, dtype=np.uint8).tobytes()
    db3.write_bytes(bytes(data))
    return Spec(_frames(bag, '--out', d / 'out'), (db3.name,), out=d / 'out')


@case('bag_not_sqlite', 'bags', 'frames', 'a text file named .db3')
def _bag_not_sqlite(res: Resources) -> Spec:
    d = res.dir('bag_not_sqlite')
    (d / 'x.db3').write_text('not a database')
    return Spec(_frames(d / 'x.db3', '--out', d / 'out'), ('x.db3', 'cannot open bag'),
                out=d / 'out')


@case('bag_bad_metadata', 'bags', 'frames', 'rosbag2 folder whose metadata.yaml is not YAML')
def _bag_bad_metadata(res: Resources) -> Spec:
    d = res.dir('bag_bad_metadata')
    bag = d / 'bag'
    shutil.copytree(res.good_bag(), bag)
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [unclosed\n')
    return Spec(_frames(bag, '--out', d / 'out'), ('bag',), out=d / 'out')


@case('bag_empty', 'bags', 'frames', 'valid rosbag2 bag with no topics/messages')
def _bag_empty(res: Resources) -> Spec:
    from dsseg_core.convert.bag_writer import write_bag

    d = res.dir('bag_empty')
    with write_bag(d / 'bag'):
        pass
    return Spec(_frames(d / 'bag', '--out', d / 'out'), ('bag', 'PointCloud2'), out=d / 'out')


@case('bag_no_images', 'bags', 'frames', 'bag with a LiDAR topic but no image topic')
def _bag_no_images(res: Resources) -> Spec:
    from dsseg_core.convert.synthetic import write_rig_bag

    d = res.dir('bag_no_images')
    write_rig_bag(d / 'bag', cameras=[], n_scans=2)
    return Spec(_frames(d / 'bag', '--out', d / 'out'), ('bag', 'Image'), out=d / 'out')


@case('bag_missing_topic', 'bags', 'frames', 'config names a cloud topic the bag lacks')
def _bag_missing_topic(res: Resources) -> Spec:
    d = res.dir('bag_missing_topic')
    cfg = d / 'cfg.yaml'
    cfg.write_text('frames:\n  cloud_topic: /velodyne_points\n')
    return Spec(_frames(res.good_bag(), '--config', cfg, '--out', d / 'out'),
                ('/velodyne_points',), out=d / 'out')


@case('bag_wrong_type', 'bags', 'frames', 'config names a PointCloud2 topic as an image topic')
def _bag_wrong_type(res: Resources) -> Spec:
    d = res.dir('bag_wrong_type')
    cfg = d / 'cfg.yaml'
    cfg.write_text('frames:\n  image_topics: [/rig/lidar/points]\n')
    return Spec(_frames(res.good_bag(), '--config', cfg, '--out', d / 'out'),
                ('/rig/lidar/points', 'PointCloud2'), out=d / 'out')


@case('bag_missing_pseudo_label', 'bags', 'pseudo-label', 'pseudo-label on a missing bag')
def _pl_missing_bag(res: Resources) -> Spec:
    d = res.dir('bag_missing_pseudo_label')
    return Spec(['pseudo-label', str(d / 'nobag'), '--out', str(d / 'ds'), '--k', '2'],
                ('nobag',), out=d / 'ds', out_complete=('dataset.yaml', 'index.jsonl'))


@case('bag_truncated_pseudo_label', 'bags', 'pseudo-label', 'pseudo-label on a truncated mcap')
def _pl_truncated(res: Resources) -> Spec:
    d = res.dir('bag_truncated_pseudo_label')
    mcap = next(res.good_bag_uncompressed().glob('*.mcap'))
    data = mcap.read_bytes()
    (d / 'cut.mcap').write_bytes(data[: len(data) // 2])
    return Spec(['pseudo-label', str(d / 'cut.mcap'), '--out', str(d / 'ds'), '--k', '2'],
                ('cut.mcap',), out=d / 'ds', out_complete=('dataset.yaml', 'index.jsonl'))


# =========================================================================== messages
def _img_fields(encoding: str, width: int = 64, height: int = 48, step: int | None = None,
                nbytes: int | None = None) -> dict:
    step = width * 3 if step is None else step
    nbytes = step * height if nbytes is None else nbytes
    return {'height': height, 'width': width, 'encoding': encoding, 'is_bigendian': 0,
            'step': step, 'data': bytes(nbytes)}


@case('msg_unknown_encoding', 'messages', 'frames', 'Image with encoding "yuv_weird"')
def _msg_unknown_encoding(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_unknown_encoding', image=lambda bag, c, t, k: bag.add_image(
        c.topic, t, c.frame_id, fields=_img_fields('yuv_weird')))
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/cam_front/image_raw', 'yuv_weird'), out=out)


@case('msg_step_mismatch', 'messages', 'frames', 'Image whose data is shorter than step x height')
def _msg_step_mismatch(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_step_mismatch', image=lambda bag, c, t, k: bag.add_image(
        c.topic, t, c.frame_id, fields=_img_fields('rgb8', nbytes=64 * 3 * 40)))
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/cam_front/image_raw',), out=out)


@case('msg_step_too_small', 'messages', 'frames', 'Image with step < width x 3')
def _msg_step_small(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_step_too_small', image=lambda bag, c, t, k: bag.add_image(
        c.topic, t, c.frame_id, fields=_img_fields('rgb8', step=64)))
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/cam_front/image_raw', 'step'), out=out)


@case('msg_corrupt_jpeg', 'messages', 'frames', 'CompressedImage whose data is not a JPEG')
def _msg_corrupt_jpeg(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_corrupt_jpeg', image=lambda bag, c, t, k: (
        bag.add_compressed_image('/rig/cam_front/image_raw/compressed', t, c.frame_id,
                                 b'\xff\xd8 definitely not a jpeg', 'rgb8; jpeg compressed bgr8')))
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/cam_front/image_raw/compressed',), out=out)


@case('msg_empty_cloud', 'messages', 'frames', 'PointCloud2 messages with 0 points')
def _msg_empty_cloud(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_empty_cloud', cloud=lambda i: {
        'xyz': np.zeros((0, 3), np.float32), 'intensity': np.zeros(0, np.float32)})
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/lidar/points',), out=out)


@case('msg_all_nan_cloud', 'messages', 'frames', 'PointCloud2 messages whose x/y/z are all NaN')
def _msg_nan_cloud(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_all_nan_cloud', cloud=lambda i: {
        'xyz': np.full((100, 3), np.nan, np.float32), 'intensity': np.zeros(100, np.float32)})
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/lidar/points',), out=out)


def _cloud_without_xyz(i: int) -> tuple[str, dict]:
    data = np.zeros((50, 3), np.float32)
    return ('fields', {'height': 1, 'width': 50, 'fields': [('a', 0, 7, 1), ('b', 4, 7, 1),
                                                            ('c', 8, 7, 1)],
                       'is_bigendian': False, 'point_step': 12, 'row_step': 600,
                       'data': data.tobytes(), 'is_dense': True})


@case('msg_cloud_without_xyz', 'messages', 'frames', 'PointCloud2 with fields a, b, c only')
def _msg_cloud_no_xyz(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_cloud_without_xyz', cloud=_cloud_without_xyz)
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/lidar/points', 'x'), out=out)


def _cloud_short_data(i: int) -> tuple[str, dict]:
    data = np.zeros((10, 4), np.float32)
    return ('fields', {'height': 1, 'width': 50, 'fields': [('x', 0, 7, 1), ('y', 4, 7, 1),
                                                            ('z', 8, 7, 1)],
                       'is_bigendian': False, 'point_step': 16, 'row_step': 800,
                       'data': data.tobytes(), 'is_dense': True})


@case('msg_cloud_short_data', 'messages', 'frames',
      'PointCloud2 whose data is shorter than width x point_step')
def _msg_cloud_short(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_cloud_short_data', cloud=_cloud_short_data)
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/lidar/points',), out=out)


@case('msg_camera_info_zero_k', 'messages', 'frames', 'CameraInfo with K = 0 (uncalibrated)')
def _msg_zero_k(res: Resources) -> Spec:
    bag = message_bag(res, 'msg_camera_info_zero_k', info_k=np.zeros((3, 3)))
    out = bag.parent / 'out'
    return Spec(_frames(bag, '--out', out), ('/rig/cam_front/camera_info', 'k is all zeros'),
                out=out)


# =========================================================================== calibration
def _calib_case(name: str, file: str, expect: tuple[str, ...]) -> Callable[[Resources], Spec]:
    def build(res: Resources) -> Spec:
        d = res.dir(name)
        return Spec(_frames(res.good_bag(), '--calibration', res.corpus(file), '--out', d / 'out'),
                    (file, *expect), out=d / 'out')
    return build


case('calib_missing_K', 'calibration', 'frames', 'calibration YAML: camera without K')(
    _calib_case('calib_missing_K', 'calib_missing_K.yaml', ('K',)))
case('calib_K_wrong_shape', 'calibration', 'frames', 'calibration YAML: K is 2x3')(
    _calib_case('calib_K_wrong_shape', 'calib_K_wrong_shape.yaml', ('K',)))
case('calib_not_rotation', 'calibration', 'frames',
     'calibration YAML: T_cam_lidar rotation block scaled by 2')(
    _calib_case('calib_not_rotation', 'calib_not_rotation.yaml', ('T_cam_lidar',)))
case('calib_zero_K', 'calibration', 'frames', 'calibration YAML: K all zeros')(
    _calib_case('calib_zero_K', 'calib_zero_K.yaml', ('K',)))
case('calib_not_yaml', 'calibration', 'frames', 'calibration file is not YAML')(
    _calib_case('calib_not_yaml', 'not_yaml.yaml', ()))


@case('calib_missing_file', 'calibration', 'frames', 'calibration file does not exist')
def _calib_missing(res: Resources) -> Spec:
    d = res.dir('calib_missing_file')
    return Spec(_frames(res.good_bag(), '--calibration', d / 'rig.yaml', '--out', d / 'out'),
                ('rig.yaml',), out=d / 'out')


def _kitti_drive(d: Path, c2c: str | None) -> Path:
    """A one-frame KITTI raw drive folder with the corpus calibration files."""
    from PIL import Image

    drive = d / 'drive'
    (drive / 'image_02' / 'data').mkdir(parents=True)
    (drive / 'velodyne_points' / 'data').mkdir(parents=True)
    Image.fromarray(np.zeros((375, 1242, 3), np.uint8)).save(
        drive / 'image_02' / 'data' / '0000000000.png')
    np.zeros((10, 4), np.float32).tofile(drive / 'velodyne_points' / 'data' / '0000000000.bin')
    if c2c is not None:
        shutil.copy(CORPUS_DIR / c2c, drive / 'calib_cam_to_cam.txt')
    shutil.copy(CORPUS_DIR / 'kitti_calib_velo_to_cam.txt', drive / 'calib_velo_to_cam.txt')
    return drive


@case('kitti_calib_missing_key', 'calibration', 'convert',
      'KITTI calib_cam_to_cam.txt without P_rect_02')
def _kitti_missing_key(res: Resources) -> Spec:
    d = res.dir('kitti_calib_missing_key')
    drive = _kitti_drive(d, 'kitti_calib_cam_to_cam_no_P_rect_02.txt')
    return Spec(['convert', 'kitti-raw', str(drive), '--out', str(d / 'bag')],
                ('calib_cam_to_cam.txt', 'P_rect_02'), out=d / 'bag',
                out_complete=('metadata.yaml',))


@case('kitti_calib_missing_file', 'calibration', 'convert',
      'KITTI drive folder without calib_cam_to_cam.txt')
def _kitti_missing_file(res: Resources) -> Spec:
    d = res.dir('kitti_calib_missing_file')
    drive = _kitti_drive(d, None)
    return Spec(['convert', 'kitti-raw', str(drive), '--out', str(d / 'bag')],
                ('calib_cam_to_cam.txt',), out=d / 'bag', out_complete=('metadata.yaml',))


@case('kitti_bad_velodyne_bin', 'calibration', 'convert',
      'KITTI velodyne .bin whose size is not a multiple of 16 bytes')
def _kitti_bad_bin(res: Resources) -> Spec:
    d = res.dir('kitti_bad_velodyne_bin')
    drive = d / 'drive'
    shutil.copytree(_kitti_drive(d / 'src', None), drive)
    shutil.copy(CORPUS_DIR / 'kitti_calib_velo_to_cam.txt', drive / 'calib_velo_to_cam.txt')
    (drive / 'calib_cam_to_cam.txt').write_text(
        (CORPUS_DIR / 'kitti_calib_cam_to_cam_no_P_rect_02.txt').read_text()
        + 'P_rect_02: 7.215377e+02 0 6.095593e+02 4.485728e+01 0 7.215377e+02 1.728540e+02 '
          '2.163791e-01 0 0 1 2.745884e-03\n')
    (drive / 'velodyne_points' / 'data' / '0000000000.bin').write_bytes(b'\x00' * 21)
    return Spec(['convert', 'kitti-raw', str(drive), '--out', str(d / 'bag')],
                ('0000000000.bin',), out=d / 'bag', out_complete=('metadata.yaml',))


# =========================================================================== configs
def _config_case(name: str, file: str, expect: tuple[str, ...]) -> Callable[[Resources], Spec]:
    def build(res: Resources) -> Spec:
        d = res.dir(name)
        return Spec(_frames(res.good_bag(), '--config', res.corpus(file), '--out', d / 'out'),
                    (file, *expect), out=d / 'out')
    return build


case('config_unknown_key', 'configs', 'frames', "frames section with a typo'd key")(
    _config_case('config_unknown_key', 'config_unknown_key.yaml', ('slopp_s',)))
case('config_wrong_type', 'configs', 'frames', 'frames.stride is a string')(
    _config_case('config_wrong_type', 'config_wrong_type.yaml', ('stride',)))
case('config_not_yaml', 'configs', 'frames', 'config file is not YAML')(
    _config_case('config_not_yaml', 'not_yaml.yaml', ('YAML',)))
case('config_ros_params_bad_value', 'configs', 'frames',
     'ROS 2 parameter file (/**: ros__parameters) with frames.slop_s < 0')(
    _config_case('config_ros_params_bad_value', 'ros_params_bad_value.yaml', ('slop_s',)))
case('config_top_level_list', 'configs', 'frames', 'config whose top level is a list')(
    _config_case('config_top_level_list', 'config_top_level_list.yaml', ('mapping',)))


@case('config_missing_file', 'configs', 'frames', '--config names a missing file')
def _config_missing(res: Resources) -> Spec:
    d = res.dir('config_missing_file')
    return Spec(_frames(res.good_bag(), '--config', d / 'nope.yaml', '--out', d / 'out'),
                ('nope.yaml', 'not found'), out=d / 'out')


@case('config_pseudo_label_unknown_key', 'configs', 'pseudo-label',
      'pseudo_label section with an unknown key')
def _pl_unknown_key(res: Resources) -> Spec:
    d = res.dir('config_pseudo_label_unknown_key')
    cfg = d / 'pl.yaml'
    cfg.write_text('pseudo_label:\n  no_such_option: 3\n')
    return Spec(['pseudo-label', str(res.good_bag()), '--out', str(d / 'ds'), '--config',
                 str(cfg)], ('pl.yaml', 'no_such_option'), out=d / 'ds',
                out_complete=('dataset.yaml', 'index.jsonl'))


@case('config_train_wrong_type', 'configs', 'train', 'train.batch_size is a string',
      needs=('torch', 'timm'))
def _train_wrong_type(res: Resources) -> Spec:
    d = res.dir('config_train_wrong_type')
    cfg = d / 'train.yaml'
    cfg.write_text('train:\n  batch_size: lots\n')
    return Spec(['train', str(res.good_dataset()), '--out', str(d / 'run'), '--config', str(cfg),
                 '--max-steps', '1', '--device', 'cpu'], ('train.yaml', 'batch_size'),
                out=d / 'run', out_complete=('model.safetensors', 'config.yaml'))


# =========================================================================== datasets
def _train_argv(res: Resources, ds: Path, run: Path) -> list[str]:
    return ['train', str(ds), '--out', str(run), '--config', str(res.tiny_train_config()),
            '--max-steps', '1', '--device', 'cpu', '--workers', '0']


@case('dataset_missing_index', 'datasets', 'gallery', 'dataset without index.jsonl (gallery)')
def _ds_missing_index_gallery(res: Resources) -> Spec:
    ds = res.dataset_copy('dataset_missing_index')
    (ds / 'index.jsonl').unlink()
    return Spec(['gallery', str(ds), '--out', str(ds.parent / 'g')], ('index.jsonl',),
                out=ds.parent / 'g', out_complete=('gallery.html',))


@case('dataset_missing_index_train', 'datasets', 'train', 'dataset without index.jsonl (train)',
      needs=('torch', 'timm'))
def _ds_missing_index_train(res: Resources) -> Spec:
    ds = res.dataset_copy('dataset_missing_index_train')
    (ds / 'index.jsonl').unlink()
    run = ds.parent / 'run'
    return Spec(_train_argv(res, ds, run), ('index.jsonl',), out=run,
                out_complete=('model.safetensors',))


@case('dataset_bad_index_line', 'datasets', 'gallery', 'index.jsonl with a broken JSON line')
def _ds_bad_line(res: Resources) -> Spec:
    ds = res.dataset_copy('dataset_bad_index_line')
    with open(ds / 'index.jsonl', 'a') as fh:
        fh.write('{"id": "000002", "image": \n')
    return Spec(['gallery', str(ds), '--out', str(ds.parent / 'g')], ('index.jsonl',),
                out=ds.parent / 'g', out_complete=('gallery.html',))


@case('dataset_label_wrong_size', 'datasets', 'train', 'label PNG 16x16 for a 32x64 image',
      needs=('torch', 'timm'))
def _ds_label_size(res: Resources) -> Spec:
    from PIL import Image

    ds = res.dataset_copy('dataset_label_wrong_size')
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(ds / 'labels' / '000001.png')
    run = ds.parent / 'run'
    return Spec(_train_argv(res, ds, run), ('000001.png',), out=run,
                out_complete=('model.safetensors',))


@case('dataset_missing_image', 'datasets', 'train', 'image listed in index.jsonl is missing',
      needs=('torch', 'timm'))
def _ds_missing_image(res: Resources) -> Spec:
    ds = res.dataset_copy('dataset_missing_image')
    (ds / 'images' / '000001.png').unlink()
    run = ds.parent / 'run'
    return Spec(_train_argv(res, ds, run), ('000001.png',), out=run,
                out_complete=('model.safetensors',))


@case('dataset_missing_image_gallery', 'datasets', 'gallery',
      'image listed in index.jsonl is missing (gallery)')
def _ds_missing_image_gallery(res: Resources) -> Spec:
    ds = res.dataset_copy('dataset_missing_image_gallery')
    for png in (ds / 'images').glob('*.png'):
        png.unlink()
    return Spec(['gallery', str(ds), '--out', str(ds.parent / 'g')], ('images',),
                out=ds.parent / 'g', out_complete=('gallery.html',))


@case('dataset_future_version', 'datasets', 'gallery', 'dataset.yaml format_version 99')
def _ds_version(res: Resources) -> Spec:
    ds = res.dataset_copy('dataset_future_version')
    text = (ds / 'dataset.yaml').read_text().replace('format_version: 1', 'format_version: 99')
    (ds / 'dataset.yaml').write_text(text)
    return Spec(['gallery', str(ds), '--out', str(ds.parent / 'g')],
                ('dataset.yaml', 'format_version'), out=ds.parent / 'g',
                out_complete=('gallery.html',))


@case('dataset_yaml_no_num_classes', 'datasets', 'gallery', 'dataset.yaml without num_classes')
def _ds_no_classes(res: Resources) -> Spec:
    ds = res.dataset_copy('dataset_yaml_no_num_classes')
    (ds / 'dataset.yaml').write_text('format_version: 1\nignore_index: 255\n')
    return Spec(['gallery', str(ds), '--out', str(ds.parent / 'g')],
                ('dataset.yaml', 'num_classes'), out=ds.parent / 'g',
                out_complete=('gallery.html',))


@case('dataset_not_a_dataset', 'datasets', 'train', 'train on an empty folder',
      needs=('torch', 'timm'))
def _ds_empty(res: Resources) -> Spec:
    d = res.dir('dataset_not_a_dataset')
    (d / 'ds').mkdir()
    return Spec(_train_argv(res, d / 'ds', d / 'run'), ('dataset.yaml',), out=d / 'run',
                out_complete=('model.safetensors',))


# =========================================================================== checkpoints
def _export_argv(run: Path, out: Path) -> list[str]:
    return ['export', str(run), '--format', 'onnx', '--out', str(out), '--no-check']


@case('ckpt_corrupt_safetensors', 'checkpoints', 'export',
      'model.safetensors overwritten with random bytes', needs=('torch', 'timm'))
def _ckpt_corrupt(res: Resources) -> Spec:
    run = res.run_copy('ckpt_corrupt_safetensors')
    (run / 'model.safetensors').write_bytes(np.random.default_rng(0).bytes(4096))
    out = run.parent / 'model.onnx'
    return Spec(_export_argv(run, out), ('model.safetensors',), out=out)


@case('ckpt_truncated_safetensors', 'checkpoints', 'export', 'model.safetensors cut in half',
      needs=('torch', 'timm'))
def _ckpt_truncated(res: Resources) -> Spec:
    run = res.run_copy('ckpt_truncated_safetensors')
    data = (run / 'model.safetensors').read_bytes()
    (run / 'model.safetensors').write_bytes(data[: len(data) // 2])
    out = run.parent / 'model.onnx'
    return Spec(_export_argv(run, out), ('model.safetensors',), out=out)


@case('ckpt_config_mismatch', 'checkpoints', 'export',
      'config.yaml says 7 classes, weights have 3', needs=('torch', 'timm'))
def _ckpt_mismatch(res: Resources) -> Spec:
    import yaml

    run = res.run_copy('ckpt_config_mismatch')
    cfg = yaml.safe_load((run / 'config.yaml').read_text())
    cfg['train']['model']['num_classes'] = 7
    (run / 'config.yaml').write_text(yaml.safe_dump(cfg))
    out = run.parent / 'model.onnx'
    return Spec(_export_argv(run, out), ('model.safetensors',), out=out)


@case('ckpt_missing_weights', 'checkpoints', 'export', 'run dir without model.safetensors',
      needs=('torch', 'timm'))
def _ckpt_missing(res: Resources) -> Spec:
    run = res.run_copy('ckpt_missing_weights')
    (run / 'model.safetensors').unlink()
    out = run.parent / 'model.onnx'
    return Spec(_export_argv(run, out), ('model.safetensors',), out=out)


@case('ckpt_not_a_run', 'checkpoints', 'export', 'export of an empty folder',
      needs=('torch', 'timm'))
def _ckpt_not_run(res: Resources) -> Spec:
    d = res.dir('ckpt_not_a_run')
    (d / 'run').mkdir()
    return Spec(_export_argv(d / 'run', d / 'model.onnx'), ('config.yaml',), out=d / 'model.onnx')


@case('ckpt_bad_latest_pointer', 'checkpoints', 'train',
      'train --resume with a corrupt checkpoints/latest.json', needs=('torch', 'timm'))
def _ckpt_bad_pointer(res: Resources) -> Spec:
    run = res.run_copy('ckpt_bad_latest_pointer')
    (run / 'checkpoints').mkdir(exist_ok=True)
    (run / 'checkpoints' / 'latest.json').write_text('{"step": 3, "dir": ')
    return Spec(['train', str(res.good_dataset()), '--out', str(run), '--resume',
                 '--max-steps', '2', '--device', 'cpu'], ('latest.json',))


@case('onnx_garbage_eval', 'checkpoints', 'eval', 'dsseg eval of a garbage .onnx file',
      needs=('onnxruntime',))
def _onnx_garbage(res: Resources) -> Spec:
    images, gt, classes = res.gt_folder()
    d = res.dir('onnx_garbage_eval')
    return Spec(['eval', str(res.corpus('garbage.onnx')), '--gt', str(gt), '--images', str(images),
                 '--gt-format', 'generic', '--classes', str(classes), '--out', str(d / 'eval')],
                ('garbage.onnx',), out=d / 'eval', out_complete=('metrics.json',))


@case('onnx_garbage_label_points', 'checkpoints', 'label-points',
      'dsseg label-points --model garbage.onnx', needs=('onnxruntime',))
def _onnx_garbage_lp(res: Resources) -> Spec:
    d = res.dir('onnx_garbage_label_points')
    return Spec(['label-points', str(res.good_bag()), '--model', str(res.corpus('garbage.onnx')),
                 '--out', str(d / 'pts')], ('garbage.onnx',), out=d / 'pts')


# =========================================================================== LiDAR scans
@case('scan_bad_size', 'scans', 'eval-proposals', '.bin scan of 21 bytes (not N x 16)')
def _scan_bad_size(res: Resources) -> Spec:
    d = res.dir('scan_bad_size')
    (d / 'scan.bin').write_bytes(b'\x00' * 21)
    (d / 'scan.label').write_bytes(b'')
    return Spec(['eval-proposals', str(d / 'scan.bin'), '--labels', str(d / 'scan.label'),
                 '--json', str(d / 'out.json')], ('scan.bin',), out=d / 'out.json')


@case('scan_label_count_mismatch', 'scans', 'eval-points',
      '.label file with fewer entries than the scan has points')
def _scan_label_mismatch(res: Resources) -> Spec:
    d = res.dir('scan_label_count_mismatch')
    np.zeros((100, 4), np.float32).tofile(d / 'scan.bin')
    np.zeros(50, '<u4').tofile(d / 'scan.label')
    return Spec(['eval-points', str(d / 'scan.bin'), '--labels', str(d / 'scan.label')],
                ('scan.label',))


# =========================================================================== other stages
@case('pseudo_label_missing_centroids', 'checkpoints', 'pseudo-label',
      '--centroids names a missing file')
def _pl_missing_centroids(res: Resources) -> Spec:
    d = res.dir('pseudo_label_missing_centroids')
    return Spec(['pseudo-label', str(res.good_bag()), '--out', str(d / 'ds'), '--centroids',
                 str(d / 'centroids.npz')], ('centroids.npz', 'not found'), out=d / 'ds',
                out_complete=('dataset.yaml', 'index.jsonl'))


@case('pseudo_label_corrupt_centroids', 'checkpoints', 'pseudo-label',
      '--centroids file of random bytes')
def _pl_corrupt_centroids(res: Resources) -> Spec:
    d = res.dir('pseudo_label_corrupt_centroids')
    (d / 'centroids.npz').write_bytes(np.random.default_rng(0).bytes(500))
    return Spec(['pseudo-label', str(res.good_bag()), '--out', str(d / 'ds'), '--centroids',
                 str(d / 'centroids.npz')], ('centroids.npz',), out=d / 'ds',
                out_complete=('dataset.yaml', 'index.jsonl'))


@case('pseudo_label_corrupt_dino_checkpoint', 'checkpoints', 'pseudo-label',
      '--dino-checkpoint file of random bytes', needs=('torch',))
def _pl_corrupt_dino(res: Resources) -> Spec:
    d = res.dir('pseudo_label_corrupt_dino_checkpoint')
    (d / 'dino.pth').write_bytes(np.random.default_rng(0).bytes(500))
    return Spec(['pseudo-label', str(res.good_bag()), '--out', str(d / 'ds'), '--max-frames',
                 '1', '--dino-checkpoint', str(d / 'dino.pth')], ('dino.pth',), out=d / 'ds',
                out_complete=('dataset.yaml', 'index.jsonl'))


@case('train_3d_empty_dataset', 'datasets', 'train-3d', 'train-3d on an empty folder',
      needs=('torch',))
def _train3d_empty(res: Resources) -> Spec:
    d = res.dir('train_3d_empty_dataset')
    (d / 'pts').mkdir()
    return Spec(['train-3d', str(d / 'pts'), '--out', str(d / 'run'), '--max-steps', '1',
                 '--device', 'cpu'], ('pts', 'no point samples'), out=d / 'run',
                out_complete=('model.safetensors',))


@case('name_classes_missing_vocabulary', 'configs', 'name-classes',
      '--vocabulary names a missing file')
def _names_missing_vocab(res: Resources) -> Spec:
    d = res.dir('name_classes_missing_vocabulary')
    (d / 'gallery').mkdir()
    return Spec(['name-classes', str(d / 'gallery'), '--vocabulary', str(d / 'vocab.yaml'),
                 '--pretrained', 'none', '--out', str(d / 'names.yaml')], ('vocab.yaml',),
                out=d / 'names.yaml')


@case('name_classes_vocabulary_not_yaml', 'configs', 'name-classes',
      '--vocabulary file is not YAML')
def _names_bad_vocab(res: Resources) -> Spec:
    d = res.dir('name_classes_vocabulary_not_yaml')
    (d / 'gallery').mkdir()
    return Spec(['name-classes', str(d / 'gallery'), '--vocabulary',
                 str(res.corpus('not_yaml.yaml')), '--pretrained', 'none', '--out',
                 str(d / 'names.yaml')], ('not_yaml.yaml', 'YAML'), out=d / 'names.yaml')


@case('onnx_garbage_label_points_bag_ok', 'checkpoints', 'label-points',
      'dsseg label-points on a good bag with a garbage .onnx', needs=('onnxruntime',))
def _onnx_garbage_lp_good_bag(res: Resources) -> Spec:
    d = res.dir('onnx_garbage_label_points_bag_ok')
    model = d / 'model.onnx'
    shutil.copy(res.corpus('garbage.onnx'), model)
    return Spec(['label-points', str(res.good_bag()), '--model', str(model), '--out',
                 str(d / 'pts'), '--max-frames', '1'], ('model.onnx', 'onnxruntime'),
                out=d / 'pts')


def _good_kitti_drive(d: Path) -> Path:
    """A one-frame synthetic KITTI raw drive that converts fine."""
    drive = _kitti_drive(d, None)
    (drive / 'calib_cam_to_cam.txt').write_text(
        (CORPUS_DIR / 'kitti_calib_cam_to_cam_no_P_rect_02.txt').read_text()
        + 'P_rect_02: 7.215377e+02 0 6.095593e+02 4.485728e+01 0 7.215377e+02 1.728540e+02 '
          '2.163791e-01 0 0 1 2.745884e-03\n')
    return drive


@case('convert_out_is_a_file', 'bags', 'convert', '--out names an existing regular file')
def _convert_out_file(res: Resources) -> Spec:
    d = res.dir('convert_out_is_a_file')
    drive = _good_kitti_drive(d)
    (d / 'out.bag').write_text('a file the user keeps\n')
    return Spec(['convert', 'kitti-raw', str(drive), '--out', str(d / 'out.bag')],
                ('out.bag',), keep=(d / 'out.bag',))


@case('convert_out_is_a_user_folder', 'bags', 'convert',
      '--out names an existing folder that is not a bag (holds a user file)')
def _convert_out_folder(res: Resources) -> Spec:
    d = res.dir('convert_out_is_a_user_folder')
    drive = _good_kitti_drive(d)
    (d / 'mydata').mkdir()
    (d / 'mydata' / 'notes.txt').write_text('keep me\n')
    return Spec(['convert', 'kitti-raw', str(drive), '--out', str(d / 'mydata')],
                ('mydata', 'exists'), keep=(d / 'mydata' / 'notes.txt',))


@case('cli_flag_out_of_range', 'configs', 'frames', '--max-frames -1 on the command line')
def _cli_flag(res: Resources) -> Spec:
    d = res.dir('cli_flag_out_of_range')
    return Spec(_frames(res.good_bag(), '--max-frames', '-1', '--out', d / 'out'),
                ('max_frames',), out=d / 'out')

"""label-points: transfer + smoothing per scan, the point dataset, resume and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsseg_core.calibration import CameraCalibration, CameraModel
from dsseg_core.cli import main
from dsseg_core.errors import CalibrationError, DatasetError
from dsseg_core.points3d.label_points import LabelPointsConfig, label_points, label_scan
from dsseg_core.points3d.smoothing import SmoothingConfig
from dsseg_core.points3d.transfer import CameraView
from dsseg_core.projection import project_points, zbuffer_visible


def _blocks(h: int, w: int) -> np.ndarray:
    """A piecewise constant label image: 6 vertical bands x 2 halves = 12 classes."""
    u = np.arange(w)[None, :].repeat(h, 0)
    v = np.arange(h)[:, None].repeat(w, 1)
    return ((u * 6) // w + 6 * (v > h // 2)).astype(np.uint8)


def _kitti_scan(kitti_raw_dir, i: int = 0) -> np.ndarray:
    return np.fromfile(kitti_raw_dir / 'velodyne_points' / 'data' / f'{i:010d}.bin',
                       np.float32).reshape(-1, 4)


def test_transferred_labels_agree_with_the_image_labels(kitti_raw_dir) -> None:
    from dsseg_core.calibration import load_kitti_raw

    calib = load_kitti_raw(kitti_raw_dir)
    pts = _kitti_scan(kitti_raw_dir)
    img = _blocks(calib.camera.height, calib.camera.width)
    conf = np.full(img.shape, 0.8, np.float32)
    cfg = LabelPointsConfig(smoothing=SmoothingConfig(method='none'))
    res = label_scan(pts[:, :3], [CameraView(calib, img, conf)], cfg, num_classes=12)
    proj = project_points(pts[:, :3], calib, min_depth=cfg.min_depth)
    vis = zbuffer_visible(proj, calib.camera.width, calib.camera.height)
    idx = proj.point_index[vis]
    u = np.clip(proj.uv[vis, 0].astype(int), 0, calib.camera.width - 1)
    v = np.clip(proj.uv[vis, 1].astype(int), 0, calib.camera.height - 1)
    assert len(idx) > 5000
    agree = (res.transfer_labels[idx] == img[v, u]).mean()
    assert agree > 0.99  # exact pixel lookup (rounding at band edges aside)
    assert (res.transfer_labels[res.n_views == 0] == -1).all()
    assert np.allclose(res.transfer_confidence[idx], 0.8)
    # geometric smoothing keeps the labels of the seen points (piecewise constant image)
    smoothed = label_scan(pts[:, :3], [CameraView(calib, img, conf)],
                          LabelPointsConfig(ground_method='none'), num_classes=12)
    seen = smoothed.transfer_labels >= 0
    assert (smoothed.labels[seen] == smoothed.transfer_labels[seen]).mean() > 0.9
    assert (smoothed.labels >= 0).sum() >= seen.sum()  # nothing lost, neighbours filled


def _camera(width: int = 64, height: int = 48) -> CameraCalibration:
    k = np.array([[50.0, 0, width / 2], [0, 50.0, height / 2], [0, 0, 1]])
    # camera looks along +x of the LiDAR: optical z = x, x = -y, y = -z
    t = np.eye(4)
    t[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
    return CameraCalibration(CameraModel(width, height, k, np.zeros(5), 'plumb_bob'), t)


def test_scan_without_camera_overlap_gives_unknown_labels() -> None:
    rng = np.random.default_rng(0)
    behind = np.c_[rng.uniform(-30, -2, 500), rng.uniform(-5, 5, 500), rng.uniform(-2, 2, 500)]
    calib = _camera()
    img = np.ones((48, 64), np.uint8)
    res = label_scan(behind.astype(np.float32), [CameraView(calib, img)], num_classes=2)
    assert (res.labels == -1).all() and (res.n_views == 0).all()
    front = np.c_[np.full(500, 10.0), rng.uniform(-1, 1, 500), rng.uniform(-1, 1, 500)]  # wall
    res = label_scan(np.concatenate([behind, front]).astype(np.float32),
                     [CameraView(calib, img)], LabelPointsConfig(ground_method='none'),
                     num_classes=2)
    assert (res.transfer_labels[500:] == 1).mean() > 0.9
    assert (res.labels[500:] == 1).mean() > 0.9


def test_bad_views_raise_calibration_errors() -> None:
    xyz = np.random.default_rng(0).uniform(1, 10, (100, 3)).astype(np.float32)
    with pytest.raises(CalibrationError, match='label image is 32x24'):
        label_scan(xyz, [CameraView(_camera(), np.zeros((24, 32), np.uint8))])
    with pytest.raises(CalibrationError, match='no calibration'):
        label_scan(xyz, [CameraView(None, np.zeros((48, 64), np.uint8))])  # type: ignore[arg-type]


class BandPredictor:
    """Stand-in image model: class = image column band (4 classes)."""

    num_classes = 4
    class_names = ['road', 'car', 'tree', 'wall']

    def __init__(self, shape_bug: bool = False) -> None:
        self.calls = 0
        self.shape_bug = shape_bug

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        h, w = rgb.shape[:2]
        if self.shape_bug:
            h, w = h // 2, w // 2
        ids = np.repeat(((np.arange(w) * 4) // w)[None, :], h, 0).astype(np.uint8)
        return ids, np.ones((h, w), np.float32)


def test_label_points_writes_a_resumable_point_dataset(sample_bag, tmp_path) -> None:
    from dsseg_core.frames import FramesConfig

    out = tmp_path / 'pts'
    cfg = LabelPointsConfig(smoothing=SmoothingConfig(ground_classes=[0], voxel_size=0.3))
    pred = BandPredictor()
    summary = label_points([sample_bag], pred, out, cfg, FramesConfig(max_frames=2))
    assert summary.frames == 2 and pred.calls == 2 and summary.no_overlap == 0
    assert 0 < summary.transferred_points < summary.labelled_points <= summary.points
    entries = [json.loads(x) for x in (out / 'index.jsonl').read_text().splitlines()]
    assert len(entries) == 2
    data = np.load(out / entries[0]['points'])
    for key in ('xyz', 'intensity', 'labels', 'confidence', 'transfer_labels', 'n_views'):
        assert key in data.files
    assert data['labels'].dtype == np.int32 and data['labels'].max() < 4
    assert 'num_classes: 4' in (out / 'dataset.yaml').read_text()
    assert 'car' in (out / 'classes.yaml').read_text()
    with pytest.raises(DatasetError, match='--resume'):
        label_points([sample_bag], pred, out, cfg, FramesConfig(max_frames=2))
    again = label_points([sample_bag], pred, out, cfg, FramesConfig(max_frames=2), resume=True)
    assert again.reused == 2 and pred.calls == 2  # nothing predicted twice
    assert again.labelled_points == summary.labelled_points
    blind = BandPredictor()
    blind.predict = lambda rgb: (np.full(rgb.shape[:2], 255, np.uint8), None)  # all ignored
    with pytest.raises(DatasetError, match='no point got a label'):
        label_points([sample_bag], blind, tmp_path / 'blind', cfg, FramesConfig(max_frames=1))
    with pytest.raises(CalibrationError, match='full-resolution'):
        label_points([sample_bag], BandPredictor(shape_bug=True), tmp_path / 'bad', cfg,
                     FramesConfig(max_frames=1))


def test_label_points_cli(sample_bag, tmp_path, monkeypatch, capsys) -> None:
    import dsseg_core.segmenter.inference as inference

    monkeypatch.setattr(inference, 'load_predictor', lambda path, device='cpu': BandPredictor())
    rc = main(['label-points', str(sample_bag), '--model', 'fake.onnx', '--out',
               str(tmp_path / 'o'), '--max-frames', '1', '--smoothing', 'knn'])
    assert rc == 0
    text = capsys.readouterr().out
    assert 'scans: 1' in text and 'labelled after smoothing' in text
    assert 'method: knn' in (tmp_path / 'o' / 'config.yaml').read_text()


def test_signed_labels_and_pixel_confidence_threshold() -> None:
    from dsseg_core.points3d.label_points import signed_labels

    assert signed_labels(np.array([[0, 255, 3]], np.uint8)).tolist() == [[0, -1, 3]]
    assert signed_labels(np.array([[300, 65535]], np.uint16)).tolist() == [[300, -1]]
    assert signed_labels(np.array([[-5, 2]], np.int64)).tolist() == [[-1, 2]]
    wall = np.c_[np.full(400, 10.0), np.linspace(-1, 1, 400), np.zeros(400)].astype(np.float32)
    img = np.ones((48, 64), np.uint8)
    conf = np.full((48, 64), 0.3, np.float32)
    cfg = LabelPointsConfig(min_pixel_confidence=0.5, ground_method='none')
    res = label_scan(wall, [CameraView(_camera(), img, conf)], cfg, num_classes=2)
    assert (res.transfer_labels == -1).all()  # every pixel below the threshold
    res = label_scan(wall, [CameraView(_camera(), img, conf + 0.5)], cfg, num_classes=2)
    assert (res.transfer_labels[res.n_views > 0] == 1).all() and (res.n_views > 0).any()

"""3D student: network shapes, Lovász loss, learning on transferred labels, run dirs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from dsseg_core.cli import main  # noqa: E402
from dsseg_core.errors import CheckpointError, DatasetError  # noqa: E402
from dsseg_core.points3d.lovasz import lovasz_softmax  # noqa: E402
from dsseg_core.points3d.student import (  # noqa: E402
    StudentConfig,
    build_student,
    load_student,
    scan_to_tensors,
)
from dsseg_core.points3d.train3d import (  # noqa: E402
    Train3dConfig,
    save_student_run,
    train_student,
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _scan(rng: np.random.Generator, n: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic 32-beam ring scan: ground + a box; returns xyz, intensity."""
    az = rng.uniform(-np.pi, np.pi, n)
    beam = rng.integers(0, 32, n)
    el = np.radians(-25 + beam * (28 / 31))
    r = np.where(el < 0, np.minimum(1.7 / np.tan(-np.minimum(el, -1e-3)), 40.0), 20.0)
    xyz = np.c_[r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)]
    return xyz.astype(np.float32), rng.uniform(0, 255, n).astype(np.float32)


def _write_dataset(root: Path, scans: list[dict[str, np.ndarray]], num_classes: int) -> Path:
    (root / 'points').mkdir(parents=True)
    lines = []
    for i, arrays in enumerate(scans):
        np.savez(root / 'points' / f'{i:04d}.npz', **arrays)
        lines.append(json.dumps({'id': f'{i:04d}', 'points': f'points/{i:04d}.npz'}))
    (root / 'index.jsonl').write_text('\n'.join(lines) + '\n')
    (root / 'dataset.yaml').write_text(f'num_classes: {num_classes}\n')
    return root


def test_student_shapes_any_size() -> None:
    model = build_student(StudentConfig(num_classes=5, width=4, depth=3)).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 6, 37, 100))
    assert out.shape == (2, 5, 37, 100)


def test_lovasz_is_zero_for_perfect_and_large_for_wrong() -> None:
    labels = torch.tensor([[[0, 1], [2, -1]]])
    good = torch.full((1, 3, 2, 2), -20.0)
    for c, (y, x) in zip([0, 1, 2], [(0, 0), (0, 1), (1, 0)], strict=True):
        good[0, c, y, x] = 20.0
    assert float(lovasz_softmax(good, labels)) < 1e-6
    bad = good.roll(1, dims=1)
    assert float(lovasz_softmax(bad, labels)) > 0.9
    assert float(lovasz_softmax(good, torch.full_like(labels, -1))) == 0.0
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    lovasz_softmax(logits, labels).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_scan_features_and_back_projection_label_all_points(tmp_path) -> None:
    rng = np.random.default_rng(0)
    xyz, inten = _scan(rng)
    xyz[:5] = [0.2, 0.1, 0.0]  # inside min_range: no pixel
    cfg = StudentConfig(num_classes=3, width=4)
    scan = scan_to_tensors(xyz, inten, None, cfg)
    assert scan.features.shape[0] == 6
    assert scan.features[5].max() == 1.0  # mask channel
    assert np.abs(scan.features[4][scan.features[5] > 0]).max() < 10  # 0..255 auto-scaled
    run = save_student_run(build_student(cfg), Train3dConfig(student=cfg), tmp_path / 'run')
    pred = load_student(run)
    labels, conf = pred.predict(xyz, inten)
    assert labels.shape == (len(xyz),) and (labels >= 0).all() and (labels < 3).all()
    assert (conf[:5] == 0).all() and (conf[5:] > 0).all()
    empty_l, empty_c = pred.predict(np.zeros((0, 3), np.float32))
    assert empty_l.shape == (0,) and empty_c.shape == (0,)


def test_student_learns_transferred_labels_and_labels_out_of_view_points(
        kitti_raw_dir, tmp_path) -> None:
    """Real learning test: KITTI scans, labels transferred from a label image of the camera."""
    from dsseg_core.calibration import load_kitti_raw
    from dsseg_core.points3d.transfer import CameraView, transfer_labels

    calib = load_kitti_raw(kitti_raw_dir)
    w, h = calib.camera.width, calib.camera.height
    u = np.arange(w)[None, :].repeat(h, 0)
    v = np.arange(h)[:, None].repeat(w, 1)
    image_labels = ((u * 2) // w + 2 * (v > h * 0.55)).astype(np.uint8)  # 4 classes
    scans = []
    for i in range(2):
        pts = np.fromfile(kitti_raw_dir / 'velodyne_points' / 'data' / f'{i:010d}.bin',
                          np.float32).reshape(-1, 4)
        res = transfer_labels(pts[:, :3], [CameraView(calib, image_labels)])
        scans.append({'xyz': pts[:, :3], 'intensity': pts[:, 3], 'labels': res.labels})
    data = _write_dataset(tmp_path / 'ds', scans, 4)
    cfg = Train3dConfig(student={'width': 8, 'depth': 3, 'dropout': 0.0}, max_steps=80,
                        batch_size=2, crop_width=128, lr=1e-2, flip=False, device='cpu',
                        checkpoint_every=1000)
    result = train_student(data, tmp_path / 'run', cfg, progress=False)
    assert result.steps == 80
    assert (tmp_path / 'run' / 'model.safetensors').is_file()
    pred = load_student(tmp_path / 'run')
    for s in scans:
        labels, conf = pred.predict(s['xyz'], s['intensity'])
        seen = s['labels'] >= 0
        assert 0.05 < seen.mean() < 0.5  # the camera sees a part of the scan only
        assert (labels[seen] == s['labels'][seen]).mean() > 0.9
        assert (labels[~seen] >= 0).all()  # out-of-view points are labelled too
        assert conf.shape == labels.shape


def test_resume_gives_the_same_weights(tmp_path) -> None:
    rng = np.random.default_rng(0)
    scans = []
    for _ in range(2):
        xyz, inten = _scan(rng, 3000)
        scans.append({'xyz': xyz, 'intensity': inten,
                      'labels': (xyz[:, 2] > -1.0).astype(np.int32)})
    data = _write_dataset(tmp_path / 'ds', scans, 2)
    base = {'student': {'width': 4, 'depth': 2}, 'batch_size': 2, 'crop_width': 64,
            'device': 'cpu', 'checkpoint_every': 2}
    straight = train_student(data, tmp_path / 'a', Train3dConfig(max_steps=4, **base),
                             progress=False)
    # Simulate a crash right after the step-2 checkpoint: a copy of the run at that point.
    import shutil

    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    ckpts = tmp_path / 'b' / 'checkpoints'
    assert (ckpts / 'step_00000002').is_dir()
    shutil.rmtree(ckpts / 'step_00000004')
    (ckpts / 'latest.json').write_text(json.dumps({'step': 2, 'dir': 'step_00000002'}))
    (tmp_path / 'b' / 'model.safetensors').unlink()
    with pytest.raises(CheckpointError, match='--resume'):
        train_student(data, tmp_path / 'b', Train3dConfig(max_steps=4, **base), progress=False)
    resumed = train_student(data, tmp_path / 'b', Train3dConfig(max_steps=4, **base),
                            resume=True, progress=False)
    assert straight.steps == resumed.steps == 4
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / 'a' / 'model.safetensors'))
    wb = load_file(str(tmp_path / 'b' / 'model.safetensors'))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_train_3d_cli_and_dataset_errors(tmp_path, capsys) -> None:
    rng = np.random.default_rng(1)
    xyz, inten = _scan(rng, 3000)
    data = _write_dataset(tmp_path / 'ds', [{'xyz': xyz, 'intensity': inten,
                                             'labels': (xyz[:, 0] > 0).astype(np.int32)}], 2)
    cfg_file = tmp_path / 'c.yaml'
    cfg_file.write_text('train3d:\n  student: {width: 4, depth: 2}\n  crop_width: 64\n'
                        '  batch_size: 1\n')
    rc = main(['train-3d', str(data), '--out', str(tmp_path / 'run'), '--config', str(cfg_file),
               '--max-steps', '2', '--device', 'cpu', '--export-onnx', '64'])
    assert rc == 0
    out = capsys.readouterr().out
    assert 'trained 2 steps' in out and 'student_64x2048.onnx' in out
    assert (tmp_path / 'run' / 'student_64x2048.onnx').is_file()
    cfg_text = (tmp_path / 'run' / 'config.yaml').read_text()
    assert 'train3d:' in cfg_text and 'num_classes: 2' in cfg_text
    # no labelled point at all -> clear error
    bad = _write_dataset(tmp_path / 'bad', [{'xyz': xyz, 'labels': np.full(len(xyz), -1)}], 2)
    with pytest.raises(DatasetError, match='no labelled point'):
        train_student(bad, tmp_path / 'r2', Train3dConfig(max_steps=1, device='cpu'),
                      progress=False)
    rc = main(['train-3d', str(tmp_path / 'missing'), '--out', str(tmp_path / 'r3'),
               '--max-steps', '1', '--device', 'cpu'])
    assert rc == 1
    assert 'not found' in capsys.readouterr().err
    with pytest.raises(CheckpointError, match='not a dsseg train-3d run'):
        load_student(tmp_path / 'nothing')


def test_onnx_export_gives_the_same_labels(tmp_path) -> None:
    pytest.importorskip('onnxruntime')
    from dsseg_core.errors import ModelError
    from dsseg_core.points3d.student import export_student_onnx

    rng = np.random.default_rng(2)
    xyz, inten = _scan(rng, 4000)
    cfg = StudentConfig(num_classes=3, width=4, depth=2,
                        range_image={'width': 256, 'row_method': 'elevation', 'num_rows': 32})
    torch.manual_seed(0)
    run = save_student_run(build_student(cfg), Train3dConfig(student=cfg), tmp_path / 'run')
    onnx_path = export_student_onnx(run, rows=32)
    eager = load_student(run)
    exported = load_student(onnx_path)
    assert exported.class_names == eager.class_names
    le, ce = eager.predict(xyz, inten)
    lo, co = exported.predict(xyz, inten)
    assert (le == lo).mean() > 0.999
    assert np.abs(ce - co).max() < 1e-3
    with pytest.raises(ModelError, match='not found'):
        load_student(tmp_path / 'missing.onnx')

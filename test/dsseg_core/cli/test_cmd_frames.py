"""``dsseg frames`` on the sample bag and on broken bags: summary, overlays, exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsseg_core.cli import main
from dsseg_core.convert.bag_writer import write_bag
from dsseg_core.convert.synthetic import SyntheticCamera, make_cloud, make_image


def test_frames_summary_and_overlays(sample_bag: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'overlays'
    rc = main(['frames', str(sample_bag), '--out', str(out), '--max-frames', '3'])
    assert rc == 0
    text = capsys.readouterr().out
    assert '/kitti/velo/pointcloud  sensor_msgs/msg/PointCloud2  20' in text
    assert 'camera camera_color_left' in text and '20 pairs, 0 unmatched images' in text
    assert 'calibration: CameraInfo + /tf_static' in text
    line = next(x for x in text.splitlines() if x.startswith('points in image'))
    numbers = [int(float(v)) for v in line.replace(',', ' ').split() if v[0].isdigit()]
    assert all(14_000 <= v <= 17_200 for v in numbers[:3]) and numbers[3] == 3
    pngs = sorted(p.name for p in out.glob('*.png'))
    assert pngs == [f'00000{i}_camera_color_left.png' for i in range(3)]
    assert (out / 'config.yaml').read_text().startswith('frames:')
    overlay = np.asarray(Image.open(out / pngs[0]))
    assert overlay.shape == (375, 1242, 3)
    # The overlay differs from the plain image where points were drawn (thousands of pixels).
    from dsseg_core.frames import FramesConfig, iter_frames
    plain = next(iter(iter_frames(sample_bag, FramesConfig(max_frames=1))))
    changed = np.any(overlay != plain.cameras['camera_color_left'].image, axis=2)
    assert changed.sum() > 10_000


def test_frames_without_out_writes_nothing(sample_bag: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(['frames', str(sample_bag), '--max-frames', '1', '--stride', '5']) == 0
    assert list(tmp_path.iterdir()) == []
    assert 'frames: 1 of 1 planned' in capsys.readouterr().out


def test_missing_bag_exit_1_names_path(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'o'
    assert main(['frames', str(tmp_path / 'nope'), '--out', str(out)]) == 1
    err = capsys.readouterr().err
    assert 'dsseg frames: error:' in err and str(tmp_path / 'nope') in err
    assert not out.exists()


def test_truncated_sample_exit_1(sample_bag: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / 'cut'
    shutil.copytree(sample_bag, bag)
    mcap = bag / 'sample_kitti.mcap'
    with open(mcap, 'r+b') as fh:
        fh.truncate(mcap.stat().st_size // 2)
    out = tmp_path / 'o'
    assert main(['frames', str(bag), '--out', str(out)]) == 1
    assert 'truncated or corrupt' in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_missing_topic_from_config(sample_bag: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('frames:\n  cloud_topic: /velodyne_points\n')
    assert main(['frames', str(sample_bag), '--config', str(cfg)]) == 1
    err = capsys.readouterr().err
    assert '/velodyne_points' in err and '/kitti/velo/pointcloud' in err


def test_error_midway_keeps_complete_pngs_and_no_partial_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cam = SyntheticCamera('cam_front')
    bag_path = tmp_path / 'bag'
    t0 = 1_700_000_000_000_000_000
    with write_bag(bag_path) as bag:
        bag.add_tf_static(t0, [('lidar_link', cam.frame_id, np.linalg.inv(cam.cam_from_lidar()))])
        for i in range(3):
            t = t0 + i * 100_000_000
            if i < 2:
                bag.add_cloud('/lidar', t, 'lidar_link', make_cloud(i))
            else:  # a cloud without z: cannot be decoded
                bag.add_cloud('/lidar', t, 'lidar_link', fields={
                    'height': 1, 'width': 2, 'fields': [('x', 0, 7, 1), ('y', 4, 7, 1)],
                    'is_bigendian': False, 'point_step': 8, 'row_step': 16,
                    'data': bytes(16), 'is_dense': True})
            bag.add_image(cam.topic, t, cam.frame_id, make_image(cam.width, cam.height, i))
            bag.add_camera_info(cam.info_topic, t, cam.frame_id, cam.width, cam.height, cam.K)
    out = tmp_path / 'o'
    assert main(['frames', str(bag_path), '--out', str(out)]) == 1
    err = capsys.readouterr().err
    assert '/lidar' in err and 'dsseg frames: error:' in err
    names = sorted(p.name for p in out.iterdir())
    assert names == ['000000_cam_front.png', '000001_cam_front.png']  # no .tmp, no frame 2
    for name in names:
        assert Image.open(out / name).size == (cam.width, cam.height)

"""``dsseg convert kitti-raw`` end to end (tiny KITTI folder in tmp_path, real data if present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsseg_core.bag import open_bag
from dsseg_core.cli import main


def _kitti_dir(root: Path, n: int = 3) -> Path:
    d = root / 'drive'
    (d / 'image_02' / 'data').mkdir(parents=True)
    (d / 'velodyne_points' / 'data').mkdir(parents=True)
    (d / 'calib_cam_to_cam.txt').write_text(
        'R_rect_00: 1 0 0 0 1 0 0 0 1\nS_rect_02: 16 12\nP_rect_02: 10 0 8 0 0 10 6 0 0 0 1 0\n')
    (d / 'calib_velo_to_cam.txt').write_text('R: 0 -1 0 0 0 -1 1 0 0\nT: 0 0 0\n')
    for i in range(n):
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(
            d / 'image_02' / 'data' / f'{i:010d}.png')
        np.full((10, 4), i + 1.0, np.float32).tofile(
            d / 'velodyne_points' / 'data' / f'{i:010d}.bin')
    return d


def test_convert_kitti_raw_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _kitti_dir(tmp_path)
    out = tmp_path / 'bag'
    rc = main(['convert', 'kitti-raw', str(src), '--out', str(out), '--image-format', 'png',
               '--max-frames', '2', '--stride', '1', '--compression-level', '5'])
    assert rc == 0
    text = capsys.readouterr().out
    assert f'wrote {out}: 2 frames, 7 messages' in text and '10 Hz' in text
    with open_bag(out) as bag:
        assert bag.topics['/kitti/camera_color_left/image_raw/compressed'].count == 2


def test_convert_errors_exit_nonzero_without_output(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = _kitti_dir(tmp_path)
    (src / 'calib_velo_to_cam.txt').unlink()
    out = tmp_path / 'bag'
    rc = main(['convert', 'kitti-raw', str(src), '--out', str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert 'dsseg convert: error:' in err and 'calib_velo_to_cam' in err
    assert not out.exists()
    assert main(['convert', 'kitti-raw', str(src), '--out', str(out),
                 '--jpeg-quality', '0']) == 1
    assert main(['convert']) == 2


@pytest.mark.shared_data
def test_convert_real_kitti_cli(kitti_raw_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / 'k'
    rc = main(['convert', 'kitti-raw', str(kitti_raw_dir), '--out', str(out), '--max-frames',
               '3', '--start', '47', '--storage', 'sqlite3'])
    assert rc == 0
    with open_bag(out) as bag:
        assert bag.topics['/kitti/velo/pointcloud'].count == 3

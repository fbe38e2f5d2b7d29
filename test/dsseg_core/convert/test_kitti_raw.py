"""convert_kitti_raw on a tiny KITTI-layout folder built in tmp_path (and on the real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsseg_core.bag import open_bag
from dsseg_core.convert.kitti_raw import (
    CAMERA_INFO_TOPIC,
    CLOUD_TOPIC,
    IMAGE_TOPIC,
    convert_kitti_raw,
    parse_kitti_timestamps,
)
from dsseg_core.errors import DatasetError
from dsseg_core.frames import FramesConfig, iter_frames
from dsseg_core.msgs.tf import TransformTree

W, H = 40, 30
STAMPS = ['2011-09-26 13:02:25.964389445', '2011-09-26 13:02:26.074054548',
          '2011-09-26 13:02:26.183719651', '2011-09-26 13:02:26.293384754']


def _kitti_dir(root: Path, n: int = 4, timestamps: bool = True) -> Path:
    """A KITTI raw drive layout with small images and a hand-made calibration."""
    d = root / '2011_09_26_drive_0001_sync'
    (d / 'image_02' / 'data').mkdir(parents=True)
    (d / 'velodyne_points' / 'data').mkdir(parents=True)
    (d / 'calib_cam_to_cam.txt').write_text(
        'calib_time: 09-Jan-2012 13:57:47\n'
        'R_rect_00: 1 0 0 0 1 0 0 0 1\n'
        f'S_rect_02: {W} {H}\n'
        f'P_rect_02: 30 0 {W / 2} 3 0 30 {H / 2} 0 0 0 1 0\n')
    # Velodyne x forward → camera z forward (the usual KITTI axes), 0.1 m offsets.
    (d / 'calib_velo_to_cam.txt').write_text(
        'calib_time: 15-Mar-2012 11:37:16\n'
        'R: 0 -1 0 0 0 -1 1 0 0\n'
        'T: 0.0 -0.1 -0.2\n')
    rng = np.random.default_rng(1)
    for i in range(n):
        yy, xx = np.mgrid[0:H, 0:W]   # smooth picture (JPEG-friendly), different per frame
        img = np.stack([xx * 6 + i * 9, yy * 8, (xx + yy) * 3 + i * 20], axis=2)
        img = (img % 256).astype(np.uint8)
        Image.fromarray(img).save(d / 'image_02' / 'data' / f'{i:010d}.png')
        scan = np.c_[rng.uniform(2, 20, (50, 1)), rng.uniform(-3, 3, (50, 2)),
                     rng.uniform(0, 1, (50, 1))].astype(np.float32)
        scan.tofile(d / 'velodyne_points' / 'data' / f'{i:010d}.bin')
    if timestamps:
        for sub, shift in (('image_02', 0), ('velodyne_points', 1)):
            lines = [s[:-1] + str(shift) for s in STAMPS[:n]]
            (d / sub / 'timestamps.txt').write_text('\n'.join(lines) + '\n')
    return d


def test_parse_kitti_timestamps(tmp_path: Path) -> None:
    path = tmp_path / 'timestamps.txt'
    path.write_text('2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.5\n')
    stamps = parse_kitti_timestamps(path)
    assert stamps.tolist() == [1317042145964389445, 1317042146500000000]
    path.write_text('2011-09-26 13:02:25.964389445\nyesterday\n')
    with pytest.raises(DatasetError, match=r'timestamps\.txt:2: bad timestamp'):
        parse_kitti_timestamps(path)


@pytest.mark.parametrize('image_format', ['raw', 'jpeg', 'png'])
def test_convert_topics_stamps_and_content(tmp_path: Path, image_format: str) -> None:
    src = _kitti_dir(tmp_path)
    out = tmp_path / 'bag'
    stats = convert_kitti_raw(src, out, image_format=image_format)
    assert stats.frames == 4 and stats.timestamps == 'timestamps.txt'
    assert stats.messages == 1 + 4 * 3
    image_topic = IMAGE_TOPIC if image_format == 'raw' else IMAGE_TOPIC + '/compressed'
    with open_bag(out) as bag:
        topics = bag.topics
        assert topics[image_topic].msgtype == ('sensor_msgs/msg/Image' if image_format == 'raw'
                                               else 'sensor_msgs/msg/CompressedImage')
        assert topics[CLOUD_TOPIC].count == 4 and topics[CAMERA_INFO_TOPIC].count == 4
        stamps = bag.stamps([image_topic, CLOUD_TOPIC])
        info = bag.first_message(CAMERA_INFO_TOPIC)
        tf_msg = bag.first_message('/tf_static')
    expected = parse_kitti_timestamps(src / 'image_02' / 'timestamps.txt')
    assert stamps[image_topic].tolist() == expected.tolist()
    assert (stamps[CLOUD_TOPIC] - stamps[image_topic]).tolist() == [1] * 4
    assert (info.width, info.height) == (W, H)
    assert info.header.frame_id == 'camera_color_left_optical_frame'
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3),
                               [[30, 0, W / 2], [0, 30, H / 2], [0, 0, 1]])
    frames_ids = {(t.header.frame_id, t.child_frame_id) for t in tf_msg.transforms}
    assert frames_ids == {('base_link', 'velo_link'), ('base_link', 'camera_color_left'),
                          ('camera_color_left', 'camera_color_left_optical_frame')}

    # The TF chain gives back T_cam_lidar = [I | K^-1 p] @ R_rect @ [R|T].
    tree = TransformTree()
    tree.add(tf_msg, static=True)
    t_cam_lidar = tree.lookup('camera_color_left_optical_frame', 'velo_link')
    expect = np.eye(4)
    expect[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
    expect[:3, 3] = [0.1, -0.1, -0.2]   # K^-1 [3, 0, 0] = [0.1, 0, 0] added to T
    np.testing.assert_allclose(t_cam_lidar, expect, atol=1e-9)
    # REP 103 body frame of the camera: x forward (= velodyne x), z up.
    body = tree.lookup('base_link', 'camera_color_left')
    np.testing.assert_allclose(body[:3, :3], np.eye(3), atol=1e-9)
    np.testing.assert_allclose(tree.lookup('base_link', 'velo_link')[:3, 3], [0, 0, 1.73])

    frames = list(iter_frames(out, FramesConfig()))
    assert len(frames) == 4
    for i, frame in enumerate(frames):
        scan = np.fromfile(src / 'velodyne_points' / 'data' / f'{i:010d}.bin',
                           dtype=np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(frame.cloud.xyz, scan[:, :3])
        np.testing.assert_array_equal(frame.cloud.intensity, scan[:, 3])
        png = np.asarray(Image.open(src / 'image_02' / 'data' / f'{i:010d}.png'))
        image = frame.cameras['camera_color_left'].image
        if image_format == 'jpeg':
            assert np.abs(image.astype(int) - png).mean() < 6  # lossy, but the same picture
        else:
            np.testing.assert_array_equal(image, png)


def test_selection_and_10hz_without_timestamps(tmp_path: Path) -> None:
    src = _kitti_dir(tmp_path, n=6, timestamps=False)
    (src / 'image_02' / 'data' / '0000000005.png').unlink()   # frame 5 has no image
    stats = convert_kitti_raw(src, tmp_path / 'bag', start=1, stride=2, max_frames=2)
    assert stats.frames == 2 and stats.skipped == 1
    assert stats.timestamps == '10 Hz (no timestamps.txt)'
    with open_bag(tmp_path / 'bag') as bag:
        stamps = bag.stamps([CLOUD_TOPIC])[CLOUD_TOPIC]
    midnight = 1316995200 * 10**9   # 2011-09-26 00:00:00 UTC, from the folder name
    assert stamps.tolist() == [midnight + 100_000_000, midnight + 300_000_000]


def test_sqlite3_storage(tmp_path: Path) -> None:
    src = _kitti_dir(tmp_path, n=2)
    convert_kitti_raw(src, tmp_path / 'bag', storage='sqlite3', image_format='raw')
    assert (tmp_path / 'bag' / 'bag.db3').exists()
    assert len(list(iter_frames(tmp_path / 'bag'))) == 2


def test_error_midway_leaves_no_bag_and_keeps_old_one(tmp_path: Path) -> None:
    src = _kitti_dir(tmp_path, n=3)
    out = tmp_path / 'bag'
    convert_kitti_raw(src, out, max_frames=1)
    before = sorted(p.name for p in out.iterdir())
    (src / 'velodyne_points' / 'data' / '0000000002.bin').write_bytes(b'\x00' * 10)
    with pytest.raises(DatasetError, match=r'0000000002\.bin.*multiple of 16'):
        convert_kitti_raw(src, out)
    assert sorted(p.name for p in out.iterdir()) == before   # old bag untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []  # no temp dir
    with pytest.raises(DatasetError, match='no such folder'):
        convert_kitti_raw(tmp_path / 'missing', tmp_path / 'other')
    assert not (tmp_path / 'other').exists()


def test_bad_arguments(tmp_path: Path) -> None:
    src = _kitti_dir(tmp_path, n=1)
    with pytest.raises(DatasetError, match='image format'):
        convert_kitti_raw(src, tmp_path / 'b', image_format='bmp')
    with pytest.raises(DatasetError, match='stride'):
        convert_kitti_raw(src, tmp_path / 'b', stride=0)
    with pytest.raises(DatasetError, match='no frame to convert'):
        convert_kitti_raw(src, tmp_path / 'b', start=5)
    assert not (tmp_path / 'b').exists()


@pytest.mark.shared_data
def test_real_kitti_subset_raw_images(kitti_raw_dir: Path, tmp_path: Path) -> None:
    stats = convert_kitti_raw(kitti_raw_dir, tmp_path / 'bag', image_format='raw',
                              max_frames=2, start=10)
    assert stats.frames == 2
    frames = list(iter_frames(tmp_path / 'bag'))
    png = np.asarray(Image.open(kitti_raw_dir / 'image_02' / 'data' / '0000000011.png'))
    np.testing.assert_array_equal(frames[1].cameras['camera_color_left'].image, png)


def test_out_must_be_missing_empty_or_a_bag(tmp_path: Path) -> None:
    from dsseg_core.errors import BagError

    src = _kitti_dir(tmp_path, n=1)
    afile = tmp_path / 'out.bag'
    afile.write_text('a file the user keeps\n')
    with pytest.raises(BagError, match=r'out\.bag: output path exists and is a file.*--out'):
        convert_kitti_raw(src, afile)
    assert afile.read_text() == 'a file the user keeps\n'
    user = tmp_path / 'mydata'
    user.mkdir()
    (user / 'notes.txt').write_text('keep me\n')
    with pytest.raises(BagError, match=r'mydata: output folder exists and is not a rosbag2'):
        convert_kitti_raw(src, user)
    assert sorted(p.name for p in user.iterdir()) == ['notes.txt']
    empty = tmp_path / 'empty'
    empty.mkdir()
    convert_kitti_raw(src, empty)           # an empty folder and an old bag are replaced
    assert (empty / 'metadata.yaml').is_file()
    convert_kitti_raw(src, empty)
    assert len(list(iter_frames(empty))) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []

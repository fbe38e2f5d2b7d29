"""open_bag / BagSource / discover_topics on real bags (the shipped sample and tiny bags)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dsseg_core.bag import camera_name_from_topic, discover_topics, open_bag
from dsseg_core.convert.synthetic import SyntheticCamera, write_rig_bag
from dsseg_core.errors import BagError, TopicError

KITTI_IMAGE = '/kitti/camera_color_left/image_raw/compressed'
KITTI_INFO = '/kitti/camera_color_left/camera_info'
KITTI_CLOUD = '/kitti/velo/pointcloud'


def test_sample_bag_topics_and_counts(sample_bag: Path) -> None:
    with open_bag(sample_bag) as bag:
        topics = bag.topics
        assert bag.is_ros2
    assert topics[KITTI_IMAGE].msgtype == 'sensor_msgs/msg/CompressedImage'
    assert topics[KITTI_IMAGE].count == 20
    assert topics[KITTI_INFO].count == 20
    assert topics[KITTI_CLOUD].msgtype == 'sensor_msgs/msg/PointCloud2'
    assert topics[KITTI_CLOUD].count == 20
    assert topics['/tf_static'].count == 1


def test_discover_topics_on_sample(sample_bag: Path) -> None:
    with open_bag(sample_bag) as bag:
        sel = discover_topics(bag)
    assert sel.images == [KITTI_IMAGE]
    assert sel.clouds == [KITTI_CLOUD]
    assert sel.tf_static == '/tf_static'
    assert sel.camera_info_of == {KITTI_IMAGE: KITTI_INFO}


def test_mcap_file_path_inside_bag_folder_opens_the_bag(sample_bag: Path) -> None:
    with open_bag(sample_bag / 'sample_kitti.mcap') as bag:
        assert bag.topics[KITTI_CLOUD].count == 20


def test_stamps_are_header_stamps_without_decoding(sample_bag: Path) -> None:
    with open_bag(sample_bag) as bag:
        stamps = bag.stamps([KITTI_CLOUD, KITTI_IMAGE])
        decoded = [(t, s, m) for t, s, m in bag.messages([KITTI_CLOUD])]
    header = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _t, _s, m in decoded]
    assert stamps[KITTI_CLOUD].tolist() == header
    assert [s for _t, s, _m in decoded] == header
    assert stamps[KITTI_IMAGE].size == 20
    assert np.all(np.diff(stamps[KITTI_CLOUD]) == 100_000_000)  # 10 Hz without timestamps.txt


def test_scan_cache_and_partial_reread_give_the_same_messages(sample_bag: Path) -> None:
    topics = [KITTI_CLOUD, KITTI_IMAGE]
    wanted = {KITTI_CLOUD: {0, 5, 19}, KITTI_IMAGE: {1, 5, 18}}
    with open_bag(sample_bag) as bag:
        assert bag.header_frame_id(KITTI_CLOUD) == 'velo_link'
        full = bag.scan_stamps(topics, cache_bytes=10**9)
        assert len(full.cache) == 40
        assert bag.header_frame_id(KITTI_CLOUD, full) == 'velo_link'
        part = bag.scan_stamps(topics, cache_bytes=8 * 10**6)   # only the first few messages
        assert 0 < len(part.cache) < 40
        got_full = {(t, i): (s, m.header.stamp.sec, len(m.data))
                    for t, i, s, m in bag.indexed_messages(topics, wanted, full)}
        got_part = {(t, i): (s, m.header.stamp.sec, len(m.data))
                    for t, i, s, m in bag.indexed_messages(topics, wanted, part)}
        got_none = {(t, i): (s, m.header.stamp.sec, len(m.data))
                    for t, i, s, m in bag.indexed_messages(topics, wanted)}
    assert got_full == got_part == got_none
    assert sorted(got_full) == sorted((t, i) for t, v in wanted.items() for i in v)
    for (topic, idx), (stamp, _sec, _n) in got_full.items():
        assert stamp == full.stamps[topic][idx]


def test_indexed_messages_decodes_only_wanted(sample_bag: Path) -> None:
    with open_bag(sample_bag) as bag:
        got = list(bag.indexed_messages([KITTI_CLOUD, KITTI_IMAGE],
                                        {KITTI_CLOUD: {3, 7}, KITTI_IMAGE: {7}}))
        stamps = bag.stamps([KITTI_CLOUD])[KITTI_CLOUD]
    assert sorted((t, i) for t, i, _s, _m in got) == [
        (KITTI_IMAGE, 7), (KITTI_CLOUD, 3), (KITTI_CLOUD, 7)]
    for topic, idx, stamp, msg in got:
        if topic == KITTI_CLOUD:
            assert stamp == stamps[idx]
            assert msg.width > 60000


def test_raw_messages_are_cdr_that_deserialize(tmp_path: Path) -> None:
    from rosbags.typesys import Stores, get_typestore

    info = write_rig_bag(tmp_path / 'rig', n_scans=2)
    ts = get_typestore(Stores.ROS2_KILTED)
    with open_bag(info.path) as bag:
        raws = list(bag.raw_messages([info.lidar_topic]))
    assert [r.stamp_ns for r in raws] == info.lidar_stamps.tolist()
    msg = ts.deserialize_cdr(raws[0].data, raws[0].msgtype)
    assert msg.header.frame_id == info.lidar_frame


def test_sqlite3_bag_reads_like_mcap(tmp_path: Path) -> None:
    cams = [SyntheticCamera('cam_front'), SyntheticCamera('cam_left', yaw_deg=90)]
    a = write_rig_bag(tmp_path / 'a', cams, n_scans=3, storage='sqlite3')
    b = write_rig_bag(tmp_path / 'b', cams, n_scans=3, storage='mcap')
    assert (a.path / 'a.db3').exists() and (b.path / 'b.mcap').exists()
    with open_bag(a.path) as bag_a, open_bag(b.path) as bag_b:
        assert bag_a.topics == bag_b.topics
        sel = discover_topics(bag_a)
        stamps_a = bag_a.stamps(sel.images)
        stamps_b = bag_b.stamps(sel.images)
    assert sel.camera_info_of == {'/rig/cam_front/image_raw': '/rig/cam_front/camera_info',
                                  '/rig/cam_left/image_raw': '/rig/cam_left/camera_info'}
    for topic in sel.images:
        assert stamps_a[topic].tolist() == stamps_b[topic].tolist()


def test_ros1_bag(tmp_path: Path) -> None:
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    Header = ts.types['std_msgs/msg/Header']  # noqa: N806
    Time = ts.types['builtin_interfaces/msg/Time']  # noqa: N806
    Image = ts.types['sensor_msgs/msg/Image']  # noqa: N806
    path = tmp_path / 'drive.bag'
    with Writer(path) as writer:
        conn = writer.add_connection('/cam/image_raw', Image.__msgtype__, typestore=ts)
        for k in range(3):
            msg = Image(header=Header(seq=k, stamp=Time(sec=100 + k, nanosec=5), frame_id='cam'),
                        height=2, width=3, encoding='rgb8', is_bigendian=0, step=9,
                        data=np.arange(18, dtype=np.uint8))
            writer.write(conn, 1_000 + k, ts.serialize_ros1(msg, Image.__msgtype__))
    with open_bag(path) as bag:
        assert not bag.is_ros2
        assert bag.topics['/cam/image_raw'].count == 3
        stamps = bag.stamps(['/cam/image_raw'])['/cam/image_raw']
        raw = next(iter(bag.raw_messages(['/cam/image_raw'])))
        first = bag.first_message('/cam/image_raw')
        scan = bag.scan_stamps(['/cam/image_raw'], cache_bytes=10**6)
        assert bag.header_frame_id('/cam/image_raw', scan) == 'cam'
        assert scan.stamps['/cam/image_raw'].tolist() == stamps.tolist()
        assert scan.log_times['/cam/image_raw'].tolist() == [1000, 1001, 1002]
    assert stamps.tolist() == [(100 + k) * 10**9 + 5 for k in range(3)]
    assert first.data.tolist() == list(range(18))
    cdr = get_typestore(Stores.ROS2_KILTED).deserialize_cdr(raw.data, raw.msgtype)
    assert cdr.encoding == 'rgb8' and cdr.header.frame_id == 'cam'


# ------------------------------------------------------------------------------ bad input
def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / 'nope'
    with pytest.raises(BagError, match=str(missing)):
        open_bag(missing)


def test_folder_without_metadata_is_not_a_bag(tmp_path: Path) -> None:
    (tmp_path / 'junk').mkdir()
    with pytest.raises(BagError, match='not a rosbag2 folder'):
        open_bag(tmp_path / 'junk')


def test_unknown_file_is_not_a_bag(tmp_path: Path) -> None:
    path = tmp_path / 'notes.txt'
    path.write_text('hello')
    with pytest.raises(BagError, match='not a bag'):
        open_bag(path)


def test_garbage_mcap_file(tmp_path: Path) -> None:
    path = tmp_path / 'x.mcap'
    path.write_bytes(os.urandom(4096))
    with pytest.raises(BagError, match=r'x\.mcap.*cannot open bag'):
        open_bag(path)


def test_truncated_mcap(tmp_path: Path, sample_bag: Path) -> None:
    bag_dir = tmp_path / 'cut'
    shutil.copytree(sample_bag, bag_dir)
    mcap = bag_dir / 'sample_kitti.mcap'
    with open(mcap, 'r+b') as fh:
        fh.truncate(mcap.stat().st_size // 3)
    with pytest.raises(BagError, match='truncated or corrupt') as info:
        with open_bag(bag_dir) as bag:
            list(bag.stamps([KITTI_CLOUD]))
    assert str(bag_dir) in str(info.value)


def test_corrupt_db3(tmp_path: Path) -> None:
    info = write_rig_bag(tmp_path / 'rig', n_scans=2, storage='sqlite3')
    db = info.path / 'rig.db3'
    data = bytearray(db.read_bytes())
    data[:100] = bytes(100)  # destroys the SQLite header
    db.write_bytes(bytes(data))
    with pytest.raises(BagError, match=r'rig.*cannot open bag.*corrupt'):
        open_bag(info.path)


def test_corrupt_compressed_db3_messages(tmp_path: Path) -> None:
    info = write_rig_bag(tmp_path / 'rig', n_scans=3, storage='sqlite3')
    db = info.path / 'rig.db3'
    data = bytearray(db.read_bytes())
    for off in range(len(data) // 4, len(data), 997):  # damage the (zstd) message blobs
        data[off] = (data[off] + 77) % 256
    db.write_bytes(bytes(data))
    with pytest.raises(BagError, match=r'rig'):
        with open_bag(info.path) as bag:
            list(bag.messages(list(bag.topics)))


def test_missing_topic_lists_available(sample_bag: Path) -> None:
    with open_bag(sample_bag) as bag, pytest.raises(TopicError) as info:
        bag.stamps(['/camera/does_not_exist'])
    text = str(info.value)
    assert '/camera/does_not_exist' in text and KITTI_CLOUD in text and 'PointCloud2' in text


def test_wrong_topic_type(sample_bag: Path) -> None:
    with open_bag(sample_bag) as bag, pytest.raises(TopicError, match='expected one of'):
        bag.require_topics([KITTI_INFO], ['sensor_msgs/msg/PointCloud2'])


@pytest.mark.parametrize(('topic', 'name'), [
    ('/kitti/camera_color_left/image_raw/compressed', 'camera_color_left'),
    ('/cam_front/image_rect_color', 'cam_front'),
    ('/camera/left/image', 'left'),
    ('/front', 'front'),
])
def test_camera_name_from_topic(topic: str, name: str) -> None:
    assert camera_name_from_topic(topic) == name


def test_discovery_matches_camera_info_by_namespace(tmp_path: Path) -> None:
    from dsseg_core.convert.bag_writer import write_bag
    from dsseg_core.convert.synthetic import make_image

    img = make_image(8, 6, 0)
    k = np.eye(3)
    with write_bag(tmp_path / 'rgbd') as bag:
        for topic in ('/camera/color/image_raw', '/camera/color/image_raw/compressed',
                      '/camera/depth/image_rect_raw', '/stereo/left/image_rect',
                      '/stereo/right/image_rect'):
            if topic.endswith('compressed'):
                bag.add_compressed_image(topic, 1, 'c', b'\xff\xd8', 'jpeg')
            else:
                bag.add_image(topic, 1, 'c', img, 'rgb8')
        for topic in ('/camera/color/camera_info', '/camera/depth/camera_info',
                      '/stereo/left/camera_info', '/stereo/right/camera_info'):
            bag.add_camera_info(topic, 1, 'c', 8, 6, k)
        bag.add_cloud('/points', 1, 'lidar', {'xyz': np.zeros((3, 3), np.float32)})
    with open_bag(tmp_path / 'rgbd') as bag:
        sel = discover_topics(bag)
    assert sel.images == ['/camera/color/image_raw', '/stereo/left/image_rect',
                          '/stereo/right/image_rect']
    assert sel.camera_info_of == {
        '/camera/color/image_raw': '/camera/color/camera_info',
        '/stereo/left/image_rect': '/stereo/left/camera_info',
        '/stereo/right/image_rect': '/stereo/right/camera_info',
    }
    assert sel.clouds == ['/points'] and sel.tf_static is None

"""bag_player: original timing, /clock, topic filter, start offset, serialized republishing;
recorder: raw subscriptions written to a rosbag2 mcap folder."""

from __future__ import annotations

import time

import numpy as np
import pytest
from rclpy.node import Node
from ros_helpers import Collector, unique
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
from std_msgs.msg import String

from dsseg_core.errors import BagError, ConfigError
from dsseg_ros.bag_player_node import BagPlayerNode, RecorderNode, message_class

INFO = '/kitti/camera_color_left/camera_info'
CLOUD = '/kitti/velo/pointcloud'
IMAGE = '/kitti/camera_color_left/image_raw/compressed'


def test_message_class_resolves_installed_types_only() -> None:
    assert message_class('sensor_msgs/msg/Image').__name__ == 'Image'
    assert message_class('std_msgs/String') is String  # ROS 1 style name
    assert message_class('no_such_pkg/msg/Thing') is None


def test_replays_with_original_timing_clock_and_identical_bytes(ros_context, spinner,
                                                                sample_bag):
    from dsseg_core.bag.reader import open_bag

    probe = spinner.add(Node(unique('probe'), context=ros_context))
    infos = Collector(probe, CameraInfo, INFO)
    clouds = Collector(probe, PointCloud2, CLOUD)
    images = Collector(probe, CompressedImage, IMAGE)
    clock = Collector(probe, Clock, '/clock', 100)
    player = spinner.add(BagPlayerNode(unique('player'), context=ros_context, autostart=False,
                                       config={'bag': str(sample_bag), 'rate': 2.0,
                                               'topics': [INFO, CLOUD]}))
    assert spinner.spin_until(lambda: infos.sub.get_publisher_count() > 0)
    t0 = time.monotonic()
    player.start()
    assert spinner.spin_until(lambda: player.done.is_set() and len(infos) == 20
                              and len(clouds) == 20, 30.0)
    wall = time.monotonic() - t0
    spinner.spin_for(0.3)  # the last /clock messages
    assert wall >= 1.9 / 2.0 * 0.9  # 1.9 s of bag at rate 2 cannot finish much sooner
    assert len(images) == 0  # not in the topic filter
    with open_bag(sample_bag) as bag:
        expected = [m for _t, _s, m in bag.messages([CLOUD])]
    got = clouds.msgs
    assert [c.header.stamp.nanosec for c in got] == [m.header.stamp.nanosec for m in expected]
    assert bytes(got[3].data) == expected[3].data.tobytes()
    stamps = [c.clock.sec * 10**9 + c.clock.nanosec for c in clock.msgs]
    assert len(stamps) > 20 and stamps == sorted(stamps)
    assert stamps[-1] == expected[-1].header.stamp.sec * 10**9 + \
        expected[-1].header.stamp.nanosec
    assert '/tf_static' not in player.publishers_by_topic or message_class(
        'tf2_msgs/msg/TFMessage') is not None


def test_start_offset_skips_the_beginning(ros_context, spinner, sample_bag):
    probe = spinner.add(Node(unique('probe'), context=ros_context))
    infos = Collector(probe, CameraInfo, INFO)
    player = spinner.add(BagPlayerNode(unique('player'), context=ros_context, autostart=False,
                                       config={'bag': str(sample_bag), 'rate': 10.0,
                                               'topics': [INFO], 'start_offset_s': 1.0,
                                               'publish_clock': False}))
    assert spinner.spin_until(lambda: infos.sub.get_publisher_count() > 0)
    player.start()
    assert spinner.spin_until(lambda: player.done.is_set(), 20.0)
    spinner.spin_for(0.2)
    assert len(infos) == 10  # frames at 1.0 .. 1.9 s
    assert player.pub_clock is None


def test_bad_bag_and_missing_topic_are_clear_errors(ros_context, tmp_path, sample_bag):
    with pytest.raises(BagError, match='no such file'):
        BagPlayerNode(unique('p'), context=ros_context, config={'bag': str(tmp_path / 'nope')})
    with pytest.raises(BagError, match='not in the bag'):
        BagPlayerNode(unique('p'), context=ros_context,
                      config={'bag': str(sample_bag), 'topics': ['/nope']})
    with pytest.raises(ConfigError, match='bag_player.bag is empty'):
        BagPlayerNode(unique('p'), context=ros_context)


def test_recorder_writes_subscribed_messages_unchanged(ros_context, spinner, tmp_path):
    from dsseg_core.bag.reader import open_bag

    ns = '/' + unique('rec')
    out = tmp_path / 'recorded'
    recorder = RecorderNode(unique('recorder'), context=ros_context,
                            config={'output': str(out), 'topics': [f'{ns}/a', f'{ns}/b']})
    spinner.add(recorder)
    probe = spinner.add(Node(unique('probe'), context=ros_context))
    pub = probe.create_publisher(String, f'{ns}/a', 10)
    assert spinner.spin_until(lambda: pub.get_subscription_count() > 0, 10.0)
    for i in range(5):
        pub.publish(String(data=f'm{i}'))
    assert spinner.spin_until(lambda: recorder.counts.get(f'{ns}/a') == 5)
    assert not out.exists()  # appears only when complete
    recorder.close()
    spinner.nodes.remove(recorder)
    with open_bag(out) as bag:
        assert bag.topics[f'{ns}/a'].count == 5
        assert [m.data for _t, _s, m in bag.messages([f'{ns}/a'])] == [f'm{i}'
                                                                        for i in range(5)]
    assert np.all([not p.name.startswith('.') for p in tmp_path.iterdir()])

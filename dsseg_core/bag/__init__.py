"""Reading ROS bags (rosbag2 sqlite3/mcap, ROS 1) with ``rosbags``."""

from __future__ import annotations

from dsseg_core.bag.reader import (
    BagSource,
    RawMessage,
    TopicInfo,
    TopicSelection,
    camera_name_from_topic,
    discover_topics,
    open_bag,
)

__all__ = [
    'BagSource',
    'RawMessage',
    'TopicInfo',
    'TopicSelection',
    'camera_name_from_topic',
    'discover_topics',
    'open_bag',
]

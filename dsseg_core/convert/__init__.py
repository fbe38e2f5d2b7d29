"""Dataset → rosbag2 converters (KITTI raw) and a small rosbag2 writer."""

from __future__ import annotations

from dsseg_core.convert.kitti_raw import ConvertStats, convert_kitti_raw

__all__ = ['ConvertStats', 'convert_kitti_raw']

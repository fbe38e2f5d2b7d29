"""Replay a bag through the pipeline: bag_player (/clock) + dsseg.launch.py with sim time.

    ros2 launch dsseg replay.launch.py bag:=data/sample_kitti model:=runs/seg rviz:=true

The bag is republished with its original timing (``rate``, ``loop``, ``start_offset``) and
``/clock``; the segmenter and cloud labeller run with ``use_sim_time: true``. The cloud
labeller also reads ``/tf_static`` from the bag itself (``tf_static_bag``), so extrinsics work
even where tf2_msgs is not installed. Same as ``dsseg run --replay BAG`` in one process.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = 'dsseg'


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    config = LaunchConfiguration('config')
    bag = LaunchConfiguration('bag')
    return LaunchDescription([
        DeclareLaunchArgument(
            'bag', description='bag to replay: rosbag2 folder, .mcap/.db3 or ROS 1 .bag'),
        DeclareLaunchArgument(
            'rate', default_value='1.0', description='playback speed factor'),
        DeclareLaunchArgument(
            'loop', default_value='false', description='start the bag again at its end'),
        DeclareLaunchArgument(
            'start_offset', default_value='0.0', description='skip this many seconds'),
        DeclareLaunchArgument(
            'config', default_value=PathJoinSubstitution([share, 'config', 'dsseg.yaml']),
            description='ROS 2 parameter file for all nodes'),
        DeclareLaunchArgument(
            'model', default_value='',
            description='checkpoint run dir or .onnx file; empty = the config value'),
        DeclareLaunchArgument(
            'rviz', default_value='false', description='start RViz with config/dsseg.rviz'),
        DeclareLaunchArgument(
            'fastdds_profile',
            default_value=PathJoinSubstitution([share, 'config', 'fastdds_shm.xml']),
            description='Fast DDS XML profile exported as FASTDDS_DEFAULT_PROFILES_FILE'),
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                               LaunchConfiguration('fastdds_profile')),
        Node(package=PACKAGE, executable='bag_player', name='bag_player', output='screen',
             parameters=[config, {
                 'bag_player.bag': bag,
                 'bag_player.rate': LaunchConfiguration('rate'),
                 'bag_player.loop': LaunchConfiguration('loop'),
                 'bag_player.start_offset_s': LaunchConfiguration('start_offset'),
             }]),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(
                PathJoinSubstitution([share, 'launch', 'dsseg.launch.py'])),
            launch_arguments={
                'config': config,
                'model': LaunchConfiguration('model'),
                'use_sim_time': 'true',
                'tf_static_bag': bag,
                'rviz': LaunchConfiguration('rviz'),
                'fastdds_profile': LaunchConfiguration('fastdds_profile'),
            }.items()),
    ])

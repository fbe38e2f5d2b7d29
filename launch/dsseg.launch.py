"""Launch the on-car pipeline: segmenter + cloud labeller (+ RViz).

    ros2 launch dsseg dsseg.launch.py model:=/path/to/run_or.onnx rviz:=true

Every option is a launch argument (``ros2 launch dsseg dsseg.launch.py --show-args``). Node
parameters come from ``config`` (``config/dsseg.yaml``, one section per node); the Fast DDS
large-data profile is exported for the nodes. ROS 2 discovery (ROS_DOMAIN_ID,
ROS_AUTOMATIC_DISCOVERY_RANGE) is left to the environment: the car's network decides.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = 'dsseg'


def _nodes(context, *args, **kwargs):
    config = LaunchConfiguration('config').perform(context)
    model = LaunchConfiguration('model').perform(context)
    sim = LaunchConfiguration('use_sim_time').perform(context).lower() in ('true', '1')
    log_level = LaunchConfiguration('log_level').perform(context)
    tf_static_bag = LaunchConfiguration('tf_static_bag').perform(context)
    common = {'use_sim_time': sim}
    segmenter_params = [config, common]
    if model:
        segmenter_params.append({'segmenter.model.path': model})
    labeller_params = [config, common]
    if tf_static_bag:
        labeller_params.append({'cloud_labeller.tf_static_bag': tf_static_bag})
    ros_args = ['--log-level', log_level]
    return [
        Node(package=PACKAGE, executable='segmenter', name='segmenter', output='screen',
             parameters=segmenter_params, ros_arguments=ros_args),
        Node(package=PACKAGE, executable='cloud_labeller', name='cloud_labeller',
             output='screen', parameters=labeller_params, ros_arguments=ros_args),
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument(
            'config', default_value=PathJoinSubstitution([share, 'config', 'dsseg.yaml']),
            description='ROS 2 parameter file with the segmenter and cloud_labeller sections'),
        DeclareLaunchArgument(
            'model', default_value='',
            description='checkpoint run dir or .onnx file; empty = segmenter.model.path of '
                        'the config'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='run on /clock (true when replaying a bag)'),
        DeclareLaunchArgument(
            'tf_static_bag', default_value='',
            description='read /tf_static from this bag (when /tf_static is not published)'),
        DeclareLaunchArgument(
            'rviz', default_value='false',
            description='start RViz with config/dsseg.rviz (overlay + labelled cloud)'),
        DeclareLaunchArgument(
            'rviz_config', default_value=PathJoinSubstitution([share, 'config', 'dsseg.rviz']),
            description='RViz display config'),
        DeclareLaunchArgument(
            'fastdds_profile',
            default_value=PathJoinSubstitution([share, 'config', 'fastdds_shm.xml']),
            description='Fast DDS XML profile (64 MB shared memory + localhost UDP) exported '
                        'as FASTDDS_DEFAULT_PROFILES_FILE'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='node log level (debug, info, warn, error)'),
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                               LaunchConfiguration('fastdds_profile')),
        OpaqueFunction(function=_nodes),
        Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
             arguments=['-d', LaunchConfiguration('rviz_config')],
             parameters=[{'use_sim_time': LaunchConfiguration('use_sim_time')}],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])

"""Parameters declared from a schema: flattening, dict sections, lists, validation."""

from __future__ import annotations

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_helpers import unique

from dsseg_core.errors import ConfigError
from dsseg_core.nodes_config import BagPlayerConfig, CloudLabellerConfig
from dsseg_ros.params import ParameterBinding, flatten, unflatten


def test_flatten_roundtrip() -> None:
    data = {'a': 1, 'b': {'c': [1, 2], 'd': {'e': 'x'}}, 'f': {}}
    flat = flatten(data)
    assert flat == {'a': 1, 'b.c': [1, 2], 'b.d.e': 'x', 'f': {}}
    assert unflatten(flat) == data


def test_dict_of_cameras_from_overrides_becomes_parameters(ros_context) -> None:
    overrides = [Parameter('cloud_labeller.cameras.left.mask_topic', value='/l/mask'),
                 Parameter('cloud_labeller.cameras.left.confidence_topic', value=''),
                 Parameter('cloud_labeller.cameras.left.camera_info_topic', value='/l/info'),
                 Parameter('cloud_labeller.cameras.right.mask_topic', value='/r/mask'),
                 Parameter('cloud_labeller.slop_s', value=1),  # int for a float: accepted
                 Parameter('other_node.value', value=3)]
    node = Node(unique('n'), context=ros_context, parameter_overrides=overrides)
    try:
        changes = []
        binding = ParameterBinding(node, CloudLabellerConfig, 'cloud_labeller',
                                   on_change=lambda cfg, keys: changes.append(keys))
        cfg = binding.config
        assert sorted(cfg.cameras) == ['left', 'right']
        assert cfg.cameras['left'].confidence_topic == ''
        assert cfg.cameras['right'].camera_info_topic == '/segmenter/camera_info'  # default
        assert cfg.slop_s == 1.0
        assert node.has_parameter('cloud_labeller.cameras.right.mask_topic')
        assert not node.has_parameter('other_node.value')
        descriptor = node.describe_parameter('cloud_labeller.cameras.left.mask_topic')
        assert descriptor.read_only and 'mask' in descriptor.description
        result = node.set_parameters([Parameter('cloud_labeller.min_confidence', value=0.4),
                                      Parameter('cloud_labeller.slop_s', value=0.1)])
        assert all(r.successful for r in result)
        assert binding.config.min_confidence == 0.4 and changes == [{'min_confidence'},
                                                                    {'slop_s'}]
        bad = node.set_parameters([Parameter('cloud_labeller.extrinsics', value='magic')])[0]
        assert not bad.successful and 'extrinsics' in bad.reason
        assert binding.config.extrinsics == 'auto'
    finally:
        node.destroy_node()


def test_empty_and_given_lists(ros_context) -> None:
    node = Node(unique('n'), context=ros_context, parameter_overrides=[
        Parameter('bag_player.bag', value='/x')])
    try:
        binding = ParameterBinding(node, BagPlayerConfig, 'bag_player')
        assert binding.config.topics == []
    finally:
        node.destroy_node()
    node = Node(unique('n'), context=ros_context, parameter_overrides=[
        Parameter('bag_player.topics', value=['/a', '/b'])])
    try:
        assert ParameterBinding(node, BagPlayerConfig, 'bag_player').config.topics == ['/a',
                                                                                        '/b']
    finally:
        node.destroy_node()


def test_invalid_initial_parameter_is_a_config_error(ros_context) -> None:
    node = Node(unique('n'), context=ros_context, parameter_overrides=[
        Parameter('bag_player.rate', value=-2.0)])
    try:
        with pytest.raises(ConfigError, match='rate'):
            ParameterBinding(node, BagPlayerConfig, 'bag_player')
    finally:
        node.destroy_node()

"""segmenter node in a real rclpy graph: outputs, headers, encodings, bad input, parameters."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter
from ros_helpers import (
    Collector,
    FakePredictor,
    H,
    W,
    camera_info_msg,
    header,
    rgb_image_msg,
    synthetic_rgb,
    unique,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dsseg_core.errors import ConfigError
from dsseg_core.palette import blend_overlay
from dsseg_ros.conversions import decode_confidence, decode_image, decode_mask, image_msg
from dsseg_ros.segmenter_node import SegmenterNode


def _setup(ros_context, spinner, predictor=None, transport='raw', extra=None):
    ns = '/' + unique('seg')
    cfg = {'image_topic': f'{ns}/image', 'camera_info_topic': f'{ns}/camera_info',
           'transport': transport, 'warn_throttle_s': 60.0, **(extra or {})}
    predictor = predictor or FakePredictor()
    node = spinner.add(SegmenterNode('segmenter', namespace=ns, context=ros_context,
                                     predictor=predictor, config=cfg))
    probe = spinner.add(rclpy_node(ros_context, ns))
    msg_type = CompressedImage if transport == 'compressed' else Image
    pubs = {'image': probe.create_publisher(msg_type, f'{ns}/image', 10),
            'info': probe.create_publisher(CameraInfo, f'{ns}/camera_info', 10)}
    outs = {name: Collector(probe, Image, f'{ns}/segmenter/{name}')
            for name in ('mask', 'overlay', 'confidence')}
    outs['camera_info'] = Collector(probe, CameraInfo, f'{ns}/segmenter/camera_info')
    # overlay and confidence are only computed for subscribers: wait until the node sees ours
    assert spinner.spin_until(lambda: pubs['image'].get_subscription_count() > 0
                              and outs['mask'].sub.get_publisher_count() > 0
                              and node.pub_overlay.get_subscription_count() > 0
                              and node.pub_confidence.get_subscription_count() > 0)
    return node, pubs, outs, predictor


def rclpy_node(ctx, ns):
    from rclpy.node import Node

    return Node(unique('probe'), context=ctx)


def _send_info(spinner, pubs, node) -> None:
    pubs['info'].publish(camera_info_msg(0, 'cam_optical'))
    assert spinner.spin_until(lambda: node._camera_info is not None)


def test_outputs_copy_the_header_and_have_the_documented_encodings(ros_context, spinner):
    node, pubs, outs, predictor = _setup(ros_context, spinner)
    _send_info(spinner, pubs, node)
    stamp = 1_700_000_000_123_456_789
    pubs['image'].publish(rgb_image_msg(stamp, 'cam_optical', seed=3))
    assert spinner.spin_until(lambda: all(len(c) for c in outs.values()))
    rgb = synthetic_rgb(3)
    ids, conf = predictor.predict(rgb)
    mask_msg = outs['mask'].msgs[0]
    assert (mask_msg.encoding, mask_msg.height, mask_msg.width) == ('mono8', H, W)
    np.testing.assert_array_equal(decode_mask(mask_msg), ids)
    overlay = outs['overlay'].msgs[0]
    assert overlay.encoding == 'rgb8'
    np.testing.assert_array_equal(decode_image(overlay), blend_overlay(rgb, ids, 0.5, 5))
    conf_msg = outs['confidence'].msgs[0]
    assert conf_msg.encoding == '32FC1'
    np.testing.assert_allclose(decode_confidence(conf_msg), conf, atol=1e-6)
    for msg in [*(c.msgs[0] for c in outs.values())]:
        assert msg.header.frame_id == 'cam_optical'
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
    assert list(outs['camera_info'].msgs[0].k) == list(camera_info_msg().k)


def test_mono8_confidence_and_mono16_mask_for_many_classes(ros_context, spinner):
    node, pubs, outs, predictor = _setup(
        ros_context, spinner, FakePredictor(num_classes=300),
        extra={'confidence_encoding': 'mono8', 'publish_overlay': False})
    _send_info(spinner, pubs, node)
    pubs['image'].publish(rgb_image_msg(5, seed=1))
    assert spinner.spin_until(lambda: len(outs['mask']) and len(outs['confidence']))
    mask = decode_mask(outs['mask'].msgs[0])
    assert outs['mask'].msgs[0].encoding == 'mono16' and mask.dtype == np.uint16
    assert mask.min() >= 256
    conf_msg = outs['confidence'].msgs[0]
    assert conf_msg.encoding == 'mono8'
    np.testing.assert_array_equal(np.frombuffer(bytes(conf_msg.data), np.uint8).reshape(H, W),
                                  synthetic_rgb(1)[..., 1])
    spinner.spin_for(0.1)
    assert len(outs['overlay']) == 0  # publish_overlay: false


def test_compressed_input(ros_context, spinner):
    from dsseg_core.msgs.image import encode_compressed

    node, pubs, outs, predictor = _setup(ros_context, spinner, transport='compressed')
    _send_info(spinner, pubs, node)
    rgb = synthetic_rgb(2)
    msg = CompressedImage(header=header(7, 'cam_optical'), format='png')
    msg.data = encode_compressed(rgb, 'png')
    pubs['image'].publish(msg)
    assert spinner.spin_until(lambda: len(outs['mask']))
    np.testing.assert_array_equal(decode_mask(outs['mask'].msgs[0]), predictor.predict(rgb)[0])


def test_images_before_camera_info_give_one_warning_and_are_dropped(ros_context, spinner):
    node, pubs, outs, predictor = _setup(ros_context, spinner)
    for i in range(4):
        pubs['image'].publish(rgb_image_msg(i + 1))
    assert spinner.spin_until(lambda: node.warnings.counts.get('no_camera_info', 0) == 4)
    assert node.warnings.emitted['no_camera_info'] == 1
    assert predictor.calls == 0 and len(outs['mask']) == 0
    _send_info(spinner, pubs, node)
    pubs['image'].publish(rgb_image_msg(10))
    assert spinner.spin_until(lambda: len(outs['mask']) == 1)


@pytest.mark.parametrize('problem', ['encoding', 'step', 'size'])
def test_bad_images_warn_once_are_dropped_and_the_node_keeps_running(ros_context, spinner,
                                                                      problem):
    node, pubs, outs, predictor = _setup(ros_context, spinner)
    _send_info(spinner, pubs, node)
    for i in range(3):
        bad = rgb_image_msg(i + 1)
        if problem == 'encoding':
            bad.encoding = 'yuv_weird'
        elif problem == 'step':
            bad.step = W * 3 - 5
        else:
            bad.data = bytes(W * H)  # a third of the bytes an rgb8 image needs
        pubs['image'].publish(bad)
        spinner.spin_until(lambda i=i: node.worker.stats().errors == i + 1, 5.0)
    assert node.warnings.counts.get('bad_image') == 3
    assert node.warnings.emitted['bad_image'] == 1
    assert len(outs['mask']) == 0
    pubs['image'].publish(rgb_image_msg(99))
    assert spinner.spin_until(lambda: len(outs['mask']) == 1)
    # The mask is published first; the counter moves once overlay and confidence are out too.
    assert spinner.spin_until(lambda: node.diagnostic_values()['published'] == '1')
    assert node.diagnostic_values()['bad.bad_image'] == '3'


def test_parameters_are_validated_by_the_schema(ros_context, spinner):
    node, pubs, outs, predictor = _setup(ros_context, spinner)
    result = node.set_parameters([Parameter('segmenter.overlay_alpha', value=1.5)])[0]
    assert not result.successful and 'overlay_alpha' in result.reason
    result = node.set_parameters([Parameter('segmenter.confidence_encoding', value='16UC1')])[0]
    assert not result.successful and 'confidence_encoding' in result.reason
    result = node.set_parameters([Parameter('segmenter.image_topic', value='/other')])[0]
    assert not result.successful  # read-only
    assert node.set_parameters([Parameter('segmenter.overlay_alpha', value=0.25)])[0].successful
    assert node.config.overlay_alpha == 0.25
    assert node.get_parameter('segmenter.overlay_alpha').value == 0.25


def test_invalid_initial_parameters_and_missing_model_are_config_errors(ros_context):
    with pytest.raises(ConfigError, match='overlay_alpha'):
        SegmenterNode(unique('bad'), context=ros_context, predictor=FakePredictor(),
                      config={'overlay_alpha': 3.0})
    with pytest.raises(ConfigError, match='segmenter.model.path is empty'):
        SegmenterNode(unique('nomodel'), context=ros_context)


def test_parameter_file_sections_and_overrides(ros_context, repo_root):
    node = SegmenterNode(unique('fromfile'), context=ros_context, predictor=FakePredictor(),
                         cli_args=['--ros-args', '--params-file',
                                   str(repo_root / 'config' / 'dsseg.yaml'),
                                   '-p', 'segmenter.model.window_size:=256'])
    try:
        assert node.config.model.window_size == 256
        assert node.config.image_topic.startswith('/kitti/')
        assert node.get_parameter('segmenter.model.device').value == 'cpu'
    finally:
        node.close()


def test_image_msg_roundtrip_keeps_header():
    msg = image_msg(np.zeros((2, 3), np.uint8), 'mono8', header(12, 'f'))
    assert (msg.height, msg.width, msg.step, msg.header.frame_id) == (2, 3, 3, 'f')


def test_statistics_are_published_on_diagnostics(ros_context, spinner):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    node, pubs, outs, predictor = _setup(ros_context, spinner,
                                         extra={'diagnostics_period_s': 0.1})
    probe = spinner.nodes[-1]
    diags = Collector(probe, DiagnosticArray, '/diagnostics', 50)
    _send_info(spinner, pubs, node)
    pubs['image'].publish(rgb_image_msg(1))
    name = f'dsseg: {node.get_fully_qualified_name()}'

    def mine():
        return [s for m in diags.msgs for s in m.status if s.name == name]

    assert spinner.spin_until(lambda: any(
        {kv.key: kv.value for kv in s.values}.get('processed') == '1' for s in mine()), 10.0)
    status = mine()[-1]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.OK
    for key in ('received', 'dropped', 'queue_len', 'latency_p50_ms', 'latency_p99_ms',
                'processing_p50_ms', 'published'):
        assert key in values
    assert float(values['latency_p50_ms']) >= float(values['processing_p50_ms']) > 0


def test_overlay_and_confidence_are_skipped_without_subscribers(ros_context, spinner,
                                                                monkeypatch):
    import dsseg_ros.segmenter_node as segmenter_node

    calls = []

    def counting_blend(*args, **kwargs):
        calls.append(1)
        return blend_overlay(*args, **kwargs)

    monkeypatch.setattr(segmenter_node, 'blend_overlay', counting_blend)
    ns = '/' + unique('seg')
    node = spinner.add(SegmenterNode('segmenter', namespace=ns, context=ros_context,
                                     predictor=FakePredictor(),
                                     config={'image_topic': f'{ns}/image',
                                             'require_camera_info': False}))
    probe = spinner.add(rclpy_node(ros_context, ns))
    pub = probe.create_publisher(Image, f'{ns}/image', 10)
    mask = Collector(probe, Image, f'{ns}/segmenter/mask')
    assert spinner.spin_until(lambda: pub.get_subscription_count() > 0
                              and mask.sub.get_publisher_count() > 0)
    pub.publish(rgb_image_msg(7, seed=2))
    assert spinner.spin_until(lambda: len(mask) == 1)
    assert node.worker.wait_idle(5.0)
    assert calls == [] and node.pub_overlay.get_subscription_count() == 0
    overlay = Collector(probe, Image, f'{ns}/segmenter/overlay')  # now someone listens
    assert spinner.spin_until(lambda: node.pub_overlay.get_subscription_count() > 0)
    pub.publish(rgb_image_msg(8, seed=2))
    assert spinner.spin_until(lambda: len(overlay) == 1)
    assert calls == [1]

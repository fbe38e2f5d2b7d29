"""Overload: images at twice the rate a (slow, fake) model can take. The node must keep its
queue bounded, drop and count frames, and keep the latency of processed frames bounded
(an unbounded queue would make it grow by ~one model time per frame)."""

from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from ros_helpers import Collector, FakePredictor, camera_info_msg, rgb_image_msg, unique
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from dsseg_ros.cloud_labeller_node import CloudLabellerNode
from dsseg_ros.segmenter_node import SegmenterNode

MODEL_S = 0.1          # the fake model takes 100 ms per image ...
PERIOD_S = MODEL_S / 2  # ... and images come every 50 ms (twice the rate it can take)
N_IMAGES = 40


def test_segmenter_under_twice_its_rate_drops_and_keeps_latency_bounded(ros_context, spinner):
    ns = '/' + unique('load')
    predictor = FakePredictor(delay_s=MODEL_S)
    node = spinner.add(SegmenterNode('segmenter', namespace=ns, context=ros_context,
                                     predictor=predictor,
                                     config={'image_topic': f'{ns}/image',
                                             'camera_info_topic': f'{ns}/info',
                                             'queue_size': 2}))
    probe = spinner.add(Node(unique('probe'), context=ros_context))
    pub = probe.create_publisher(Image, f'{ns}/image', 10)
    info = probe.create_publisher(CameraInfo, f'{ns}/info', 10)
    masks = Collector(probe, Image, f'{ns}/segmenter/mask', 100)
    assert spinner.spin_until(lambda: pub.get_subscription_count() > 0)
    info.publish(camera_info_msg())
    assert spinner.spin_until(lambda: node._camera_info is not None)
    queue_lengths = []
    t_next = time.monotonic()
    for i in range(N_IMAGES):
        pub.publish(rgb_image_msg(i + 1))
        t_next += PERIOD_S
        spinner.spin_until(lambda t=t_next: time.monotonic() >= t, 1.0)
        queue_lengths.append(node.worker.queue_len())
    assert node.worker.wait_idle(5.0)
    spinner.spin_for(0.2)
    stats = node.worker.stats()
    assert stats.received == N_IMAGES
    assert stats.dropped > 0
    assert stats.processed + stats.dropped == N_IMAGES
    assert stats.max_queue_len <= 2 and max(queue_lengths) <= 2
    assert len(masks) == stats.processed
    # Latency of a processed frame: at most the frames waiting ahead of it plus its own run
    # (3 x 100 ms) plus scheduling slack; an unbounded queue would end near 2 s.
    latencies = node.worker.latency.values_ms()
    assert latencies.max() < 1000.0, latencies
    first, last = np.median(latencies[:5]), np.median(latencies[-5:])
    assert last < first + 500.0, (first, last)
    values = node.diagnostic_values()
    assert int(values['dropped']) == stats.dropped


def test_cloud_labeller_sync_queues_stay_bounded_when_masks_never_come(ros_context, spinner,
                                                                        tmp_path):
    from ros_helpers import synthetic_cloud_msg, write_calibration

    ns = '/' + unique('load')
    node = spinner.add(CloudLabellerNode(
        'cloud_labeller', namespace=ns, context=ros_context,
        config={'cloud_topic': f'{ns}/points', 'sync_queue_size': 5,
                'calibration_file': str(write_calibration(tmp_path / 'c.yaml', 'camera')),
                'cameras': {'camera': {'mask_topic': f'{ns}/mask',
                                       'confidence_topic': '', 'camera_info_topic': f'{ns}/i'}}}))
    probe = spinner.add(Node(unique('probe'), context=ros_context))
    pub = probe.create_publisher(PointCloud2, f'{ns}/points', 10)
    assert spinner.spin_until(lambda: pub.get_subscription_count() > 0)
    for i in range(20):
        pub.publish(synthetic_cloud_msg((i + 1) * 100_000_000, n=50))
        spinner.spin_for(0.01)
    assert spinner.spin_until(lambda: node.sync.drops[0] == 15, 5.0)
    assert node.sync.pending() == [5, 0]
    assert node.diagnostic_values()['sync.cloud.dropped'] == '15'

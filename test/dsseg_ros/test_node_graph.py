"""The whole on-car graph in one process on the shipped sample bag: bag player -> segmenter
-> cloud labeller, checked against what dsseg_core computes offline for the same frames."""

from __future__ import annotations

import numpy as np
from model_fixture import FAST_MODEL, test_config
from rclpy.node import Node
from ros_helpers import Collector, Spinner, unique
from sensor_msgs.msg import Image, PointCloud2

from dsseg_core.msgs.pointcloud import cloud_to_structured
from dsseg_ros.cloud_labeller_node import label_cloud
from dsseg_ros.conversions import decode_confidence, decode_mask, stamp_ns
from dsseg_ros.run import build_pipeline

IMAGE = '/kitti/camera_color_left/image_raw/compressed'
INFO = '/kitti/camera_color_left/camera_info'
CLOUD = '/kitti/velo/pointcloud'


def _offline_frames(sample_bag, stamps):
    """Per stamp: RGB image, CameraInfo, cloud msg, and T_cam_lidar from the bag's /tf_static."""
    from dsseg_core.bag.reader import open_bag
    from dsseg_core.msgs.image import compressed_to_numpy
    from dsseg_core.msgs.tf import TransformTree

    tree = TransformTree()
    frames: dict[int, dict] = {s: {} for s in stamps}
    with open_bag(sample_bag) as bag:
        for _t, _s, msg in bag.messages(['/tf_static']):
            tree.add(msg, static=True)
        for topic, stamp, msg in bag.messages([IMAGE, INFO, CLOUD]):
            if stamp in frames:
                frames[stamp][topic] = msg
    for frame in frames.values():
        frame['rgb'] = compressed_to_numpy(frame[IMAGE])
        frame['T'] = tree.lookup(frame[INFO].header.frame_id, frame[CLOUD].header.frame_id)
    return frames


def test_replayed_bag_through_segmenter_and_cloud_labeller(ros_context, sample_bag, tiny_run,
                                                           tmp_path, repo_root):
    from dsseg_core.calibration import CameraCalibration
    from dsseg_core.msgs.camera_info import camera_model_from_camera_info
    from dsseg_core.msgs.pointcloud import cloud_to_points
    from dsseg_core.points3d.transfer import CameraView
    from dsseg_core.segmenter.inference import load_predictor

    config = test_config(repo_root, tmp_path / 'dsseg.yaml', tiny_run,
                         bag_player={'rate': 1.0})
    spinner = Spinner(ros_context)
    try:
        probe = spinner.add(Node(unique('probe'), context=ros_context))
        masks = Collector(probe, Image, '/segmenter/mask', 50)
        overlays = Collector(probe, Image, '/segmenter/overlay', 50)
        confs = Collector(probe, Image, '/segmenter/confidence', 50)
        clouds = Collector(probe, PointCloud2, '/cloud_labeller/labelled_cloud', 50)
        nodes = build_pipeline(ros_context, str(config), replay=str(sample_bag))
        for node in nodes:
            spinner.add(node)
        player = nodes[-1]
        assert player.get_name() == 'bag_player'
        assert spinner.spin_until(lambda: player.done.is_set() and len(clouds) >= 2, 60.0)
        spinner.spin_until(lambda: len(clouds) >= len(masks), 5.0)
        segmenter = nodes[0]
        assert segmenter.worker.stats().processed >= 2
    finally:
        spinner.close()

    # Images: encodings, sizes, headers copied from the bag's image messages.
    for msg in masks.msgs + overlays.msgs + confs.msgs:
        assert (msg.height, msg.width) == (375, 1242)
        assert msg.header.frame_id == 'camera_color_left_optical_frame'
    assert {m.encoding for m in masks.msgs} == {'mono8'}
    assert {m.encoding for m in overlays.msgs} == {'rgb8'}
    assert {m.encoding for m in confs.msgs} == {'32FC1'}
    mask_by_stamp = {stamp_ns(m.header): m for m in masks.msgs}
    conf_by_stamp = {stamp_ns(m.header): m for m in confs.msgs}
    cloud_by_stamp = {stamp_ns(m.header): m for m in clouds.msgs}
    assert set(cloud_by_stamp) <= set(mask_by_stamp)

    predictor = load_predictor(tiny_run, **{'window': FAST_MODEL['window_size'],
                                            'stride': FAST_MODEL['window_stride'],
                                            'short_side': FAST_MODEL['short_side']})
    frames = _offline_frames(sample_bag, list(cloud_by_stamp))
    for stamp, msg in cloud_by_stamp.items():
        frame = frames[stamp]
        assert msg.header.frame_id == frame[CLOUD].header.frame_id == 'velo_link'
        assert [(f.name, f.datatype) for f in msg.fields] == [
            ('x', 7), ('y', 7), ('z', 7), ('intensity', 7), ('label', 6), ('confidence', 7),
            ('rgb', 7)]
        ids, conf = predictor.predict(frame['rgb'])
        np.testing.assert_array_equal(decode_mask(mask_by_stamp[stamp]), ids)
        np.testing.assert_allclose(decode_confidence(conf_by_stamp[stamp]), conf, atol=1e-5)
        arrays = cloud_to_points(frame[CLOUD])
        model = camera_model_from_camera_info(frame[INFO])
        view = CameraView(CameraCalibration(model, frame['T']), ids,
                          decode_confidence(conf_by_stamp[stamp]))
        expected = label_cloud(arrays.xyz, arrays.intensity, [view])
        got = cloud_to_structured(msg)
        assert got.shape[0] == arrays.xyz.shape[0]
        np.testing.assert_array_equal(got['x'], arrays.xyz[:, 0])
        np.testing.assert_array_equal(got['label'], expected.labels.view(np.uint32))
        np.testing.assert_allclose(got['confidence'], expected.confidence)
        seen = expected.labels >= 0
        assert 5_000 < seen.sum() < arrays.xyz.shape[0]  # ~15k of ~115k points are in view

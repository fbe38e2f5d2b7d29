"""cloud_labeller node: sync, labelled cloud layout, labels = offline transfer, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_helpers import (
    T_CAM_LIDAR,
    Collector,
    H,
    K,
    W,
    camera_info_msg,
    header,
    synthetic_cloud_msg,
    synthetic_points,
    unique,
    write_calibration,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from dsseg_core.calibration import CameraCalibration, CameraModel
from dsseg_core.msgs.pointcloud import cloud_to_structured
from dsseg_core.nodes_config import UNKNOWN_LABEL
from dsseg_core.palette import class_colors
from dsseg_core.points3d.transfer import CameraView
from dsseg_ros.cloud_labeller_node import CloudLabellerNode, LabelledCloud, label_cloud
from dsseg_ros.conversions import image_msg


def _mask(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = (np.arange(W) // 16).astype(np.uint8)[None, :].repeat(H, 0)
    ids[:4] = 255  # an unlabelled strip
    conf = rng.uniform(0.2, 1.0, (H, W)).astype(np.float32)
    return ids, conf


def _setup(ros_context, spinner, tmp_path, extra=None, with_conf=True):
    ns = '/' + unique('lab')
    cam = {'mask_topic': f'{ns}/mask', 'camera_info_topic': f'{ns}/info',
           'confidence_topic': f'{ns}/conf' if with_conf else ''}
    cfg = {'cloud_topic': f'{ns}/points', 'cameras': {'cam': cam}, 'warn_throttle_s': 60.0,
           'calibration_file': str(write_calibration(tmp_path / 'calib.yaml')),
           **(extra or {})}
    node = spinner.add(CloudLabellerNode('cloud_labeller', namespace=ns, context=ros_context,
                                         config=cfg, num_classes=5))
    probe = spinner.add(Node(unique('probe'), context=ros_context))
    pubs = {'cloud': probe.create_publisher(PointCloud2, f'{ns}/points', 10),
            'mask': probe.create_publisher(Image, f'{ns}/mask', 10),
            'conf': probe.create_publisher(Image, f'{ns}/conf', 10),
            'info': probe.create_publisher(CameraInfo, f'{ns}/info', 10)}
    out = Collector(probe, PointCloud2, f'{ns}/cloud_labeller/labelled_cloud')
    assert spinner.spin_until(lambda: pubs['cloud'].get_subscription_count() > 0
                              and out.sub.get_publisher_count() > 0)
    return node, pubs, out


def _send_set(pubs, stamp, cloud=None, mask=None, with_conf=True, seed=0):
    ids, conf = _mask(seed)
    pubs['mask'].publish(mask or image_msg(ids, 'mono8', header(stamp + 3_000_000, 'cam')))
    if with_conf:
        pubs['conf'].publish(image_msg(conf, '32FC1', header(stamp + 3_000_000, 'cam')))
    pubs['cloud'].publish(cloud or synthetic_cloud_msg(stamp, 'velo'))


def test_labelled_cloud_layout_header_and_labels_match_offline(ros_context, spinner, tmp_path,
                                                               kernel_path):
    node, pubs, out = _setup(ros_context, spinner, tmp_path)
    pubs['info'].publish(camera_info_msg(0, 'cam'))
    assert spinner.spin_until(lambda: 'cam' in node._infos)
    stamp = 1_600_000_000_500_000_000
    _send_set(pubs, stamp)
    assert spinner.spin_until(lambda: len(out) == 1)
    msg = out.msgs[0]
    assert msg.header.frame_id == 'velo'
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
    layout = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert layout == [('x', 0, PointField.FLOAT32, 1), ('y', 4, PointField.FLOAT32, 1),
                      ('z', 8, PointField.FLOAT32, 1), ('intensity', 12, PointField.FLOAT32, 1),
                      ('label', 16, PointField.UINT32, 1),
                      ('confidence', 20, PointField.FLOAT32, 1),
                      ('rgb', 24, PointField.FLOAT32, 1)]
    cloud = cloud_to_structured(msg)
    xyz, intensity = synthetic_points()
    ids, conf = _mask()
    calib = CameraCalibration(CameraModel(W, H, K, np.zeros(5), 'plumb_bob', 'cam'),
                              T_CAM_LIDAR)
    expected = label_cloud(xyz, intensity, [CameraView(calib, ids, conf)])
    labels = cloud['label'].astype(np.int64)
    np.testing.assert_array_equal(cloud['label'], expected.labels.view(np.uint32))
    np.testing.assert_allclose(cloud['confidence'], expected.confidence)
    np.testing.assert_array_equal(cloud['intensity'], intensity)
    assert (labels == UNKNOWN_LABEL).sum() > 50          # points behind / outside the image
    assert ((labels >= 0) & (labels < 4)).sum() > 50     # points labelled from the mask
    assert set(np.unique(labels[labels != UNKNOWN_LABEL])) <= {0, 1, 2, 3}
    rgb_bits = cloud['rgb'].view(np.uint32)
    colors = class_colors(expected.labels, 5)
    packed = (colors[:, 0].astype(np.uint32) << 16) | (colors[:, 1].astype(np.uint32) << 8) \
        | colors[:, 2]
    np.testing.assert_array_equal(rgb_bits, packed)
    assert node.diagnostic_values()['sync.matched'] == '1'


def test_unmatched_stamps_are_not_paired_and_are_counted(ros_context, spinner, tmp_path):
    node, pubs, out = _setup(ros_context, spinner, tmp_path, extra={'slop_s': 0.01},
                             with_conf=False)
    pubs['info'].publish(camera_info_msg(0, 'cam'))
    assert spinner.spin_until(lambda: 'cam' in node._infos)
    ids, _ = _mask()
    pubs['mask'].publish(image_msg(ids, 'mono8', header(1_000_000_000, 'cam')))
    pubs['cloud'].publish(synthetic_cloud_msg(1_200_000_000, 'velo'))  # 200 ms apart
    pubs['mask'].publish(image_msg(ids, 'mono8', header(2_000_000_000, 'cam')))
    pubs['cloud'].publish(synthetic_cloud_msg(2_005_000_000, 'velo'))  # 5 ms apart
    assert spinner.spin_until(lambda: len(out) == 1)
    assert out.msgs[0].header.stamp.sec == 2
    assert node.sync.matched == 1 and sum(node.sync.drops) >= 1


def _bad_cloud(kind: str, stamp: int):
    msg = synthetic_cloud_msg(stamp, 'velo', n=10)
    if kind == 'empty':
        msg.width = 0
        msg.row_step = 0
        msg.data = b''
    elif kind == 'no_xyz':
        msg.fields = [PointField(name='a', offset=0, datatype=7, count=1),
                      PointField(name='b', offset=4, datatype=7, count=1)]
    elif kind == 'nan':
        msg = synthetic_cloud_msg(stamp, 'velo', n=10)
        data = np.frombuffer(bytes(msg.data), np.float32).copy()
        data[:] = np.nan
        msg.data = data.tobytes()
    return msg


@pytest.mark.parametrize('kind,warning', [('empty', 'empty_cloud'), ('no_xyz', 'bad_message'),
                                          ('nan', 'empty_cloud'), ('mask_encoding',
                                                                   'bad_message')])
def test_bad_input_warns_once_drops_and_keeps_running(ros_context, spinner, tmp_path, kind,
                                                      warning):
    node, pubs, out = _setup(ros_context, spinner, tmp_path, with_conf=False)
    pubs['info'].publish(camera_info_msg(0, 'cam'))
    assert spinner.spin_until(lambda: 'cam' in node._infos)
    for i in range(3):
        stamp = (i + 1) * 1_000_000_000
        if kind == 'mask_encoding':
            bad_mask = image_msg(np.zeros((H, W, 3), np.uint8), 'rgb8', header(stamp, 'cam'))
            _send_set(pubs, stamp, mask=bad_mask, with_conf=False)
        else:
            _send_set(pubs, stamp, cloud=_bad_cloud(kind, stamp), with_conf=False)
        assert spinner.spin_until(lambda i=i: node.worker.stats().errors == i + 1, 5.0)
    assert node.warnings.counts[warning] == 3
    assert node.warnings.emitted[warning] == 1
    assert len(out) == 0
    _send_set(pubs, 10_000_000_000, with_conf=False)
    assert spinner.spin_until(lambda: len(out) == 1)


def test_missing_camera_info_warns_and_drops(ros_context, spinner, tmp_path):
    node, pubs, out = _setup(ros_context, spinner, tmp_path, with_conf=False)
    for i in range(3):
        _send_set(pubs, (i + 1) * 1_000_000_000, with_conf=False)
        spinner.spin_until(lambda i=i: node.warnings.counts.get('no_camera_info.cam') == i + 1,
                           5.0)
    assert node.warnings.counts['no_camera_info.cam'] == 3
    assert node.warnings.emitted['no_camera_info.cam'] == 1
    assert len(out) == 0
    pubs['info'].publish(camera_info_msg(0, 'cam'))
    assert spinner.spin_until(lambda: 'cam' in node._infos)
    _send_set(pubs, 10_000_000_000, with_conf=False)
    assert spinner.spin_until(lambda: len(out) == 1)


def test_two_cameras_vote_by_confidence(ros_context, spinner, tmp_path, kernel_path):
    xyz = np.array([[5.0, 0.0, 0.0], [6.0, 0.5, 0.2], [-5.0, 0.0, 0.0]], np.float32)
    model = CameraModel(W, H, K, np.zeros(5), 'plumb_bob', 'cam')
    calib = CameraCalibration(model, T_CAM_LIDAR)
    a = CameraView(calib, np.full((H, W), 1, np.uint8), np.full((H, W), 0.9, np.float32))
    b = CameraView(calib, np.full((H, W), 2, np.uint8), np.full((H, W), 0.4, np.float32))
    result = label_cloud(xyz, None, [a, b])
    assert result.labels.tolist() == [1, 1, -1]
    assert result.n_views.tolist() == [2, 2, 0]
    low = label_cloud(xyz, None, [
        CameraView(calib, np.full((H, W), 1, np.uint8), np.full((H, W), 0.3, np.float32))],
        min_confidence=0.5)
    assert low.labels.tolist() == [-1, -1, -1]


def test_config_errors(ros_context, tmp_path):
    from dsseg_core.errors import ConfigError

    with pytest.raises(ConfigError, match='no calibration for camera'):
        CloudLabellerNode(unique('c'), context=ros_context, config={
            'calibration_file': str(write_calibration(tmp_path / 'c.yaml', name='other'))})
    with pytest.raises(ConfigError, match='cameras'):
        CloudLabellerNode(unique('c'), context=ros_context, config={'cameras': {}})
    node = CloudLabellerNode(unique('c'), context=ros_context, config={
        'calibration_file': str(write_calibration(tmp_path / 'c2.yaml', name='camera'))})
    try:
        bad = node.set_parameters([Parameter('cloud_labeller.slop_s', value=-1.0)])[0]
        assert not bad.successful and 'slop_s' in bad.reason
    finally:
        node.close()


def test_stamps_going_back_in_time_reset_the_synchronizer(ros_context, spinner, tmp_path):
    node, pubs, out = _setup(ros_context, spinner, tmp_path, with_conf=False)
    pubs['info'].publish(camera_info_msg(0, 'cam'))
    assert spinner.spin_until(lambda: 'cam' in node._infos)
    _send_set(pubs, 50_000_000_000, with_conf=False)
    assert spinner.spin_until(lambda: len(out) == 1)
    _send_set(pubs, 1_000_000_000, with_conf=False)  # a looping bag starts again
    assert spinner.spin_until(lambda: len(out) == 2)
    assert out.msgs[1].header.stamp.sec == 1


def test_labelled_cloud_message_bytes_equal_on_both_paths(monkeypatch):
    """LabelledCloud.to_msg: the packing kernel writes the bytes of the numpy path (NaN points,
    unknown labels, ids beyond num_classes, a reused buffer that shrinks and grows)."""
    import array

    rng = np.random.default_rng(0)
    n = 4000
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    xyz[::98, 1] = np.nan  # even indexes only: the odd half is dense
    cloud = LabelledCloud(xyz, rng.random(n).astype(np.float32),
                          rng.integers(-1, 8, n).astype(np.int32),
                          rng.random(n).astype(np.float32), np.ones(n, np.uint8))
    for sl in (slice(None), slice(0, 1000), slice(1, None, 2)):
        part = LabelledCloud(np.ascontiguousarray(cloud.xyz[sl]), cloud.intensity[sl],
                             cloud.labels[sl], cloud.confidence[sl], cloud.n_views[sl])
        msgs = {}
        for mode in ('1', '0'):
            monkeypatch.setenv('DSSEG_JIT', mode)
            buffer = array.array('B', bytes(50))
            msgs[mode] = part.to_msg(header(5, 'velo'), 5, buffer)
        assert bytes(msgs['1'].data) == bytes(msgs['0'].data)
        assert msgs['1'].is_dense == msgs['0'].is_dense == (sl == slice(1, None, 2))


def test_kernel_warm_up_compiles_the_labelling_kernels(kernel_path):
    from dsseg_core.points3d import transfer_kernels
    from dsseg_core.projection_kernels import project_pinhole_kernel
    from dsseg_ros.cloud_labeller_node import warm_up_kernels

    assert warm_up_kernels() >= 0.0
    if kernel_path == 'jit':
        assert project_pinhole_kernel.signatures
        assert transfer_kernels.lookup_votes_kernel.signatures
        assert transfer_kernels.vote_kernel.signatures

"""cloud_labeller + 3D student: fill_unknown / replace, student alone without masks, bad paths."""

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
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from dsseg_core.calibration import CameraCalibration, CameraModel
from dsseg_core.errors import ConfigError
from dsseg_core.msgs.pointcloud import cloud_to_structured
from dsseg_core.nodes_config import UNKNOWN_LABEL
from dsseg_core.points3d.transfer import CameraView, transfer_labels
from dsseg_ros.cloud_labeller_node import CloudLabellerNode, label_cloud
from dsseg_ros.conversions import image_msg

torch = pytest.importorskip('torch')

NUM_CLASSES = 5


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope='module')
def student_run(tmp_path_factory):
    """A tiny randomly initialised train-3d run whose labels vary from point to point."""
    from dsseg_core.points3d.student import StudentConfig, build_student
    from dsseg_core.points3d.train3d import Train3dConfig, save_student_run
    from dsseg_core.pseudolabel.range_image import RangeImageConfig

    torch.manual_seed(0)
    cfg = StudentConfig(num_classes=NUM_CLASSES, width=4, depth=2,
                        range_image=RangeImageConfig(width=64))
    model = build_student(cfg)
    with torch.no_grad():  # sharper logits: random weights otherwise give one class everywhere
        model.head.weight.mul_(30.0)
        model.head.bias.zero_()
    return save_student_run(model, Train3dConfig(student=cfg),
                            tmp_path_factory.mktemp('student') / 'run')


def _mask() -> tuple[np.ndarray, np.ndarray]:
    ids = (np.arange(W) // 16).astype(np.uint8)[None, :].repeat(H, 0)  # classes 0..3
    ids[:4] = 255
    conf = np.random.default_rng(0).uniform(0.2, 1.0, (H, W)).astype(np.float32)
    return ids, conf


def _calib() -> CameraCalibration:
    return CameraCalibration(CameraModel(W, H, K, np.zeros(5), 'plumb_bob', 'cam'), T_CAM_LIDAR)


def _setup(ros_context, spinner, tmp_path, student: dict):
    ns = '/' + unique('stu')
    cam = {'mask_topic': f'{ns}/mask', 'camera_info_topic': f'{ns}/info',
           'confidence_topic': f'{ns}/conf'}
    cfg = {'cloud_topic': f'{ns}/points', 'cameras': {'cam': cam}, 'warn_throttle_s': 60.0,
           'calibration_file': str(write_calibration(tmp_path / 'calib.yaml')),
           'student': student}
    node = spinner.add(CloudLabellerNode('cloud_labeller', namespace=ns, context=ros_context,
                                         config=cfg))
    probe = spinner.add(Node(unique('probe'), context=ros_context))
    pubs = {'cloud': probe.create_publisher(PointCloud2, f'{ns}/points', 10),
            'mask': probe.create_publisher(Image, f'{ns}/mask', 10),
            'conf': probe.create_publisher(Image, f'{ns}/conf', 10),
            'info': probe.create_publisher(CameraInfo, f'{ns}/info', 10)}
    out = Collector(probe, PointCloud2, f'{ns}/cloud_labeller/labelled_cloud')
    assert spinner.spin_until(lambda: pubs['cloud'].get_subscription_count() > 0
                              and pubs['mask'].get_subscription_count() > 0
                              and out.sub.get_publisher_count() > 0)
    return node, pubs, out


def _send_masks(spinner, node, pubs, stamp: int) -> None:
    """Mask + confidence, spun until the node has received the mask (then send the cloud)."""
    ids, conf = _mask()
    before = node._last_mask_time
    pubs['mask'].publish(image_msg(ids, 'mono8', header(stamp + 3_000_000, 'cam')))
    pubs['conf'].publish(image_msg(conf, '32FC1', header(stamp + 3_000_000, 'cam')))
    assert spinner.spin_until(lambda: node._last_mask_time > before)


def _offline_student(run):
    from dsseg_core.points3d.student import load_student

    xyz, intensity = synthetic_points()
    return load_student(run).predict(xyz, intensity)


def test_fill_unknown_keeps_camera_votes_and_student_labels_the_rest(
        ros_context, spinner, tmp_path, student_run):
    node, pubs, out = _setup(ros_context, spinner, tmp_path, {'path': str(student_run)})
    assert node.num_classes == NUM_CLASSES  # taken from the student
    pubs['info'].publish(camera_info_msg(0, 'cam'))
    assert spinner.spin_until(lambda: 'cam' in node._infos)
    stamp = 1_600_000_000_500_000_000
    _send_masks(spinner, node, pubs, stamp)
    pubs['cloud'].publish(synthetic_cloud_msg(stamp, 'velo'))
    assert spinner.spin_until(lambda: len(out) == 1, 20.0)
    cloud = cloud_to_structured(out.msgs[0])
    labels = cloud['label'].view(np.int32)
    assert not (cloud['label'] == UNKNOWN_LABEL).any()

    xyz, intensity = synthetic_points()
    ids, conf = _mask()
    cam_labels, cam_conf = transfer_labels(xyz, [CameraView(_calib(), ids, conf)])
    seen = cam_labels >= 0
    assert 50 < seen.sum() < len(xyz) - 50
    np.testing.assert_array_equal(labels[seen], cam_labels[seen])
    np.testing.assert_allclose(cloud['confidence'][seen], cam_conf[seen])

    s_labels, s_conf = _offline_student(student_run)
    np.testing.assert_array_equal(labels[~seen], s_labels[~seen])
    np.testing.assert_allclose(cloud['confidence'][~seen], s_conf[~seen], atol=1e-5)
    assert len(np.unique(s_labels[~seen])) >= 3  # the comparison is not against one constant
    assert (s_labels[seen] != cam_labels[seen]).any()  # camera votes won where they exist
    values = node.diagnostic_values()
    assert values['student'].startswith(str(student_run)) and 'fill_unknown' in values['student']
    assert values['student.published_alone'] == '0'


def test_student_alone_without_masks_then_cameras_then_replace_at_run_time(
        ros_context, spinner, tmp_path, student_run):
    node, pubs, out = _setup(ros_context, spinner, tmp_path, {
        'path': str(student_run), 'without_cameras': True, 'camera_timeout_s': 0.3})
    s_labels, s_conf = _offline_student(student_run)
    spinner.spin_for(0.4)  # no mask for longer than camera_timeout_s (and no CameraInfo)
    pubs['cloud'].publish(synthetic_cloud_msg(1_000_000_000, 'velo'))
    assert spinner.spin_until(lambda: len(out) == 1, 20.0)
    alone = cloud_to_structured(out.msgs[0])
    np.testing.assert_array_equal(alone['label'].view(np.int32), s_labels)
    np.testing.assert_allclose(alone['confidence'], s_conf, atol=1e-5)
    assert node.student_published == 1

    # Masks arrive again: the next cloud waits for its mask and is camera-labelled in view.
    pubs['info'].publish(camera_info_msg(0, 'cam'))
    assert spinner.spin_until(lambda: 'cam' in node._infos)
    _send_masks(spinner, node, pubs, 2_000_000_000)
    pubs['cloud'].publish(synthetic_cloud_msg(2_000_000_000, 'velo'))
    assert spinner.spin_until(lambda: len(out) == 2, 20.0)
    fused = cloud_to_structured(out.msgs[1])['label'].view(np.int32)
    xyz, intensity = synthetic_points()
    ids, conf = _mask()
    cam_labels = label_cloud(xyz, intensity, [CameraView(_calib(), ids, conf)]).labels
    seen = cam_labels >= 0
    np.testing.assert_array_equal(fused[seen], cam_labels[seen])
    np.testing.assert_array_equal(fused[~seen], s_labels[~seen])
    assert node.student_published == 1 and node.sync.matched == 1

    # replace at run time: the student labels every point, the cloud does not wait for masks.
    bad = node.set_parameters([Parameter('cloud_labeller.student.mode', value='bogus')])[0]
    assert not bad.successful and 'mode' in bad.reason
    ok = node.set_parameters([Parameter('cloud_labeller.student.mode', value='replace')])[0]
    assert ok.successful and node.config.student.mode == 'replace'
    _send_masks(spinner, node, pubs, 3_000_000_000)  # masks are fresh, replace ignores them
    pubs['cloud'].publish(synthetic_cloud_msg(3_000_000_000, 'velo'))
    assert spinner.spin_until(lambda: len(out) == 3, 20.0)
    replaced = cloud_to_structured(out.msgs[2])
    np.testing.assert_array_equal(replaced['label'].view(np.int32), s_labels)
    np.testing.assert_allclose(replaced['confidence'], s_conf, atol=1e-5)
    assert node.sync.matched == 1 and sum(node.sync.pending()) == 0  # masks were not queued
    ro = node.set_parameters([Parameter('cloud_labeller.student.path', value='')])[0]
    assert not ro.successful  # the student is loaded once, at start


def test_without_student_points_no_camera_sees_stay_unknown(ros_context, spinner, tmp_path):
    node, pubs, out = _setup(ros_context, spinner, tmp_path, {'without_cameras': True,
                                                              'camera_timeout_s': 0.1})
    assert node.student is None
    spinner.spin_for(0.2)
    pubs['info'].publish(camera_info_msg(0, 'cam'))
    assert spinner.spin_until(lambda: 'cam' in node._infos)
    pubs['cloud'].publish(synthetic_cloud_msg(5_000_000_000, 'velo'))  # no student: waits
    spinner.spin_for(0.3)
    assert len(out) == 0
    _send_masks(spinner, node, pubs, 5_000_000_000)
    assert spinner.spin_until(lambda: len(out) == 1)
    labels = cloud_to_structured(out.msgs[0])['label']
    assert (labels == UNKNOWN_LABEL).sum() > 50


def test_label_cloud_student_modes_offline(student_run):
    from dsseg_core.points3d.student import load_student

    student = load_student(student_run)
    xyz, intensity = synthetic_points()
    ids, conf = _mask()
    view = CameraView(_calib(), ids, conf)
    s_labels, s_conf = student.predict(xyz, intensity)
    fill = label_cloud(xyz, intensity, [view], student=student)
    cam = label_cloud(xyz, intensity, [view])
    np.testing.assert_array_equal(fill.student, cam.labels < 0)
    assert (fill.labels >= 0).all()
    rep = label_cloud(xyz, intensity, [view], student=student, student_mode='replace')
    np.testing.assert_array_equal(rep.labels, s_labels)
    np.testing.assert_array_equal(rep.confidence, s_conf)
    assert rep.student.all()
    with pytest.raises(ConfigError, match='student.mode'):
        label_cloud(xyz, intensity, [view], student=student, student_mode='fill')


def test_bad_student_path_is_a_clear_error_at_start(ros_context, tmp_path):
    calib = str(write_calibration(tmp_path / 'calib.yaml', name='camera'))
    missing = tmp_path / 'no_such_run'
    with pytest.raises(ConfigError, match=r'cloud_labeller\.student\.path .*no_such_run.* '
                                          'does not exist'):
        CloudLabellerNode(unique('c'), context=ros_context, config={
            'calibration_file': calib, 'student': {'path': str(missing)}})
    not_a_run = tmp_path / 'empty_dir'
    not_a_run.mkdir()
    with pytest.raises(ConfigError, match=r'cloud_labeller\.student\.path .*empty_dir.*'
                                          'not a dsseg train-3d run'):
        CloudLabellerNode(unique('c'), context=ros_context, config={
            'calibration_file': calib, 'student': {'path': str(not_a_run)}})
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'not an onnx model')
    with pytest.raises(ConfigError, match=r'cloud_labeller\.student\.path .*broken\.onnx'):
        CloudLabellerNode(unique('c'), context=ros_context, config={
            'calibration_file': calib, 'student': {'path': str(broken)}})


@pytest.mark.parametrize('n,num_classes', [(500, 5), (500, None), (0, 5)])
def test_to_msg_is_the_cloud_msg_layout_byte_for_byte(n, num_classes):
    from dsseg_ros.cloud_labeller_node import LabelledCloud
    from dsseg_ros.conversions import cloud_msg

    rng = np.random.default_rng(n)
    xyz = rng.normal(0, 10, (n, 3)).astype(np.float32)
    labels = rng.integers(-1, 8, n).astype(np.int32)  # unknown, in range and >= num_classes
    cloud = LabelledCloud(xyz, rng.uniform(0, 1, n).astype(np.float32), labels,
                          rng.uniform(0, 1, n).astype(np.float32), np.zeros(n, np.uint8))
    hdr = header(123_456_789_000, 'velo')
    fast = cloud.to_msg(hdr, num_classes)
    ref = cloud_msg(cloud.fields(num_classes), hdr)
    assert bytes(fast.data) == bytes(ref.data)
    assert [(f.name, f.offset, f.datatype, f.count) for f in fast.fields] == \
        [(f.name, f.offset, f.datatype, f.count) for f in ref.fields]
    assert (fast.height, fast.width, fast.point_step, fast.row_step, fast.is_dense,
            fast.is_bigendian) == (ref.height, ref.width, ref.point_step, ref.row_step,
                                   ref.is_dense, ref.is_bigendian)
    assert fast.header == ref.header
    import array

    reused = array.array('B', b'\xff' * 7)  # a node's buffer: grown, shrunk, never zeroed
    for m in (n + 40, max(n - 7, 0), n):
        part = LabelledCloud(np.resize(xyz, (m, 3)), *(np.resize(a, m) for a in (
            cloud.intensity, cloud.labels, cloud.confidence, cloud.n_views)))
        got = part.to_msg(hdr, num_classes, buffer=reused)
        assert got.data is reused and len(reused) == 28 * part.xyz.shape[0]
        assert bytes(got.data) == bytes(part.to_msg(hdr, num_classes).data)
    if n:
        rgb = cloud_to_structured(fast)['rgb'].view(np.uint32)
        assert (rgb[labels < 0] == 0x808080).all()


def test_to_msg_without_classes_colours_every_point_unknown():
    from dsseg_ros.cloud_labeller_node import LabelledCloud

    xyz = np.ones((3, 3), np.float32)
    cloud = LabelledCloud(xyz, np.zeros(3, np.float32), np.array([-1, 0, 4], np.int32),
                          np.zeros(3, np.float32), np.zeros(3, np.uint8))
    out = cloud_to_structured(cloud.to_msg(header(0, 'velo'), 0))
    assert (out['rgb'].view(np.uint32) == 0x808080).all()
    assert out['label'].tolist() == [UNKNOWN_LABEL, 0, 4]

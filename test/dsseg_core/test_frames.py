"""iter_frames: pairing, decoding and calibration on the sample bag, real KITTI frames and
small synthetic rigs (two cameras, sqlite3, offsets, bad input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsseg_core.calibration import CameraCalibration, CameraModel, RigCalibration
from dsseg_core.convert.synthetic import SyntheticCamera, make_cloud, make_image, write_rig_bag
from dsseg_core.errors import CalibrationError, ConfigError, MessageError, TopicError
from dsseg_core.frames import FramesConfig, FrameStats, frames_config_from, iter_frames
from dsseg_core.projection import project_points

KITTI_CAM = 'camera_color_left'


def _frames(path: Path, **cfg) -> tuple[list, FrameStats]:
    stats = FrameStats()
    return list(iter_frames(path, FramesConfig(**cfg), stats)), stats


# ------------------------------------------------------------------------------ real KITTI
def test_sample_bag_every_frame_pairs_and_projects(sample_bag: Path) -> None:
    frames, stats = _frames(sample_bag)
    assert len(frames) == 20 and stats.frames == 20
    assert stats.pairs == {KITTI_CAM: 20}
    assert stats.unmatched_images == {KITTI_CAM: 0} and stats.scans_without_image == 0
    assert stats.calibration_source == 'CameraInfo + /tf_static'
    for frame in frames:
        cam = frame.cameras[KITTI_CAM]
        assert cam.image.shape == (375, 1242, 3) and cam.image.dtype == np.uint8
        assert cam.stamp_ns == frame.stamp_ns
        assert frame.cloud.frame_id == 'velo_link'
        assert cam.frame_id == 'camera_color_left_optical_frame'
        n = len(project_points(frame.cloud.xyz, cam.calib))
        assert 14_000 <= n <= 17_000, n
    assert [f.index for f in frames] == list(range(20))


def test_sample_bag_stride_and_max_frames(sample_bag: Path) -> None:
    frames, stats = _frames(sample_bag, stride=3, max_frames=4)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    stamps = [f.stamp_ns for f in frames]
    assert np.all(np.diff(stamps) == 300_000_000)
    assert stats.planned_frames == 4 and stats.pairs[KITTI_CAM] == 20


def _kitti_reference_counts(kitti_dir: Path, min_depth: float = 0.5) -> list[int]:
    """Points inside image_02 per scan, straight from the KITTI text files (README formula
    ``P_rect_02 @ R_rect_00 @ [R|T] @ X``), independent of dsseg's loaders."""
    kv: dict[str, np.ndarray] = {}
    for name in ('calib_cam_to_cam.txt', 'calib_velo_to_cam.txt'):
        for line in (kitti_dir / name).read_text().splitlines():
            key, _, value = line.partition(':')
            try:
                kv[key] = np.array([float(v) for v in value.split()])
            except ValueError:
                continue
    proj = kv['P_rect_02'].reshape(3, 4)
    rect = np.eye(4)
    rect[:3, :3] = kv['R_rect_00'].reshape(3, 3)
    velo = np.eye(4)
    velo[:3, :3] = kv['R'].reshape(3, 3)
    velo[:3, 3] = kv['T']
    counts = []
    for path in sorted((kitti_dir / 'velodyne_points' / 'data').glob('*.bin')):
        scan = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
        rect_pts = rect @ velo @ np.c_[scan[:, :3], np.ones(len(scan))].T
        p = proj @ rect_pts
        u, v = p[0] / p[2], p[1] / p[2]
        ok = (rect_pts[2] > min_depth) & (u >= 0) & (u < 1242) & (v >= 0) & (v < 375)
        counts.append(int(ok.sum()))
    return counts


@pytest.mark.shared_data
def test_kitti_50_frames_convert_and_pair(kitti_raw_dir: Path, tmp_path: Path) -> None:
    from dsseg_core.calibration import load_kitti_raw
    from dsseg_core.convert.kitti_raw import convert_kitti_raw

    convert_kitti_raw(kitti_raw_dir, tmp_path / 'all', image_format='jpeg')
    frames, stats = _frames(tmp_path / 'all')
    assert len(frames) == 50 and stats.pairs[KITTI_CAM] == 50
    truth = load_kitti_raw(kitti_raw_dir, cam=2)
    reference = _kitti_reference_counts(kitti_raw_dir)
    for frame in frames:
        calib = frame.cameras[KITTI_CAM].calib
        np.testing.assert_allclose(calib.T_cam_lidar, truth.T_cam_lidar, atol=1e-9)
        np.testing.assert_allclose(calib.camera.K, truth.camera.K)
        n = len(project_points(frame.cloud.xyz, calib))
        # README: "about 14-17k" (the reference count reaches 17.1k on the last frames).
        assert 14_000 <= n <= 17_200, (frame.index, n)
        assert abs(n - reference[frame.index]) <= 0.002 * n, (frame.index, n)


@pytest.mark.shared_data
def test_kitti_raw_images_and_clouds_are_exact(kitti_raw_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from dsseg_core.convert.kitti_raw import convert_kitti_raw

    convert_kitti_raw(kitti_raw_dir, tmp_path / 'raw', image_format='raw', start=45,
                      storage='sqlite3')
    frames, _ = _frames(tmp_path / 'raw')
    assert len(frames) == 5
    for k, frame in enumerate(frames):
        idx = 45 + k
        png = np.asarray(Image.open(kitti_raw_dir / 'image_02' / 'data' / f'{idx:010d}.png'))
        np.testing.assert_array_equal(frame.cameras[KITTI_CAM].image, png)
        scan = np.fromfile(kitti_raw_dir / 'velodyne_points' / 'data' / f'{idx:010d}.bin',
                           dtype=np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(frame.cloud.xyz, scan[:, :3])
        np.testing.assert_array_equal(frame.cloud.intensity, scan[:, 3])


# ------------------------------------------------------------------------------ synthetic
def _two_cams(**front) -> list[SyntheticCamera]:
    return [SyntheticCamera('cam_front', **front),
            SyntheticCamera('cam_left', yaw_deg=90.0, delay_s=0.012, encoding='bgr8')]


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_two_camera_bag(tmp_path: Path, storage: str) -> None:
    info = write_rig_bag(tmp_path / 'rig', _two_cams(), n_scans=4, storage=storage)
    frames, stats = _frames(info.path)
    assert len(frames) == 4
    assert stats.image_topics == {'cam_front': '/rig/cam_front/image_raw',
                                  'cam_left': '/rig/cam_left/image_raw'}
    assert stats.camera_info_topics['cam_left'] == '/rig/cam_left/camera_info'
    assert stats.pairs == {'cam_front': 4, 'cam_left': 4}
    assert stats.max_dt_ms['cam_left'] == pytest.approx(12.0)
    for k, frame in enumerate(frames):
        assert frame.stamp_ns == info.lidar_stamps[k]
        np.testing.assert_array_equal(frame.cloud.xyz, make_cloud(k)['xyz'])
        for name, cam in frame.cameras.items():
            truth = info.cameras[name]
            np.testing.assert_array_equal(cam.image, make_image(truth.width, truth.height, k))
            np.testing.assert_allclose(cam.calib.T_cam_lidar, truth.cam_from_lidar(), atol=1e-9)
            np.testing.assert_allclose(cam.calib.camera.K, truth.K)
            assert cam.stamp_ns == info.camera_stamps[name][k]
        # The wall 10 m ahead projects into the front camera, not into the left one.
        front = project_points(frame.cloud.xyz, frame.cameras['cam_front'].calib)
        wall = frame.cloud.xyz[front.point_index, 0] == 10.0
        assert wall.sum() > 500
        left = project_points(frame.cloud.xyz, frame.cameras['cam_left'].calib)
        assert not np.any(frame.cloud.xyz[left.point_index, 0] == 10.0)


def test_fast_camera_pairs_once_per_scan_and_counts_the_rest(tmp_path: Path) -> None:
    cams = [SyntheticCamera('cam_front', extra_images=2),              # 30 Hz
            SyntheticCamera('cam_side', yaw_deg=-90.0, rate_div=2)]    # 5 Hz
    info = write_rig_bag(tmp_path / 'rig', cams, n_scans=6)
    frames, stats = _frames(info.path)
    assert stats.pairs == {'cam_front': 6, 'cam_side': 3}
    assert stats.unmatched_images == {'cam_front': 12, 'cam_side': 0}
    assert stats.unmatched_scans == {'cam_front': 0, 'cam_side': 3}
    assert len(frames) == 6
    assert [sorted(f.cameras) for f in frames[:2]] == [['cam_front', 'cam_side'], ['cam_front']]
    front_idx = [int(np.searchsorted(info.camera_stamps['cam_front'],
                                     f.cameras['cam_front'].stamp_ns)) for f in frames]
    assert front_idx == [0, 3, 6, 9, 12, 15]


def test_slop_and_time_offset(tmp_path: Path) -> None:
    cams = [SyntheticCamera('cam_front', delay_s=0.2)]   # LiDAR at 2 Hz, camera 200 ms late
    info = write_rig_bag(tmp_path / 'rig', cams, n_scans=4, period_s=0.5)
    with pytest.raises(TopicError, match=r'no image is within 0\.05 s.*time_offsets_s'):
        _frames(info.path)
    frames, stats = _frames(info.path, time_offsets_s={'cam_front': 0.2})
    assert len(frames) == 4 and stats.max_dt_ms['cam_front'] == pytest.approx(0.0)
    assert frames[0].cameras['cam_front'].calib.time_offset_s == pytest.approx(0.2)
    frames, stats = _frames(info.path, time_offsets_s={'/rig/cam_front/image_raw': -0.3})
    assert [f.stamp_ns for f in frames] == info.lidar_stamps[1:].tolist()  # next scan
    assert stats.unmatched_images['cam_front'] == 1
    frames, stats = _frames(info.path, slop_s=0.25)
    assert len(frames) == 4 and stats.max_dt_ms['cam_front'] == pytest.approx(200.0)
    with pytest.raises(TopicError, match='unknown cameras'):
        _frames(info.path, time_offsets_s={'nope': 0.1})


def test_explicit_topics_and_calibration_file(tmp_path: Path) -> None:
    from dsseg_core.calibration import save_calibration_yaml

    cam = SyntheticCamera('cam_front')
    info = write_rig_bag(tmp_path / 'rig', [cam, SyntheticCamera('cam_left', yaw_deg=90)],
                         n_scans=2, tf_static=False)
    # No /tf_static and no calibration file: say what is missing and how to fix it.
    with pytest.raises(CalibrationError, match=r'no /tf_static.*calibration_file'):
        _frames(info.path, image_topics=[cam.topic])
    shifted = cam.cam_from_lidar()
    shifted[0, 3] += 0.5
    model = CameraModel(cam.width, cam.height, cam.K, name='front')
    rig = RigCalibration({'front': CameraCalibration(model, shifted, 0.0)}, 'lidar_link')
    calib_path = tmp_path / 'calib.yaml'
    save_calibration_yaml(rig, calib_path)
    cfg = dict(image_topics=[cam.topic], camera_names=['front'],
               calibration_file=str(calib_path))
    frames, stats = _frames(info.path, **cfg)
    assert len(frames) == 2 and list(frames[0].cameras) == ['front']
    assert stats.calibration_source == f'calibration file {calib_path}'
    np.testing.assert_allclose(frames[0].cameras['front'].calib.T_cam_lidar, shifted)
    with pytest.raises(CalibrationError, match=r"no camera 'cam_front'.*front"):
        _frames(info.path, image_topics=[cam.topic], calibration_file=str(calib_path))


def test_config_from_ros_parameter_file(tmp_path: Path) -> None:
    path = tmp_path / 'params.yaml'
    path.write_text('/**:\n  ros__parameters:\n    frames:\n      slop_s: 0.02\n'
                    '      image_topics: [/a/image_raw]\n      max_frames: 3\n')
    cfg = frames_config_from(path, stride=2)
    assert cfg.slop_s == 0.02 and cfg.image_topics == ['/a/image_raw']
    assert cfg.max_frames == 3 and cfg.stride == 2
    with pytest.raises(ConfigError, match='slop_s'):
        frames_config_from(None, slop_s=-1.0)


# ------------------------------------------------------------------------------ bad input
def test_missing_configured_topic_lists_available(tmp_path: Path) -> None:
    info = write_rig_bag(tmp_path / 'rig', n_scans=2)
    with pytest.raises(TopicError) as err:
        _frames(info.path, cloud_topic='/velodyne_points')
    text = str(err.value)
    assert '/velodyne_points' in text and '/rig/lidar/points' in text and str(info.path) in text


def test_bag_without_clouds(tmp_path: Path) -> None:
    from dsseg_core.convert.bag_writer import write_bag

    with write_bag(tmp_path / 'img_only') as bag:
        bag.add_image('/cam/image_raw', 1, 'cam', make_image(8, 6, 0), 'rgb8')
    with pytest.raises(TopicError, match=r'img_only.*no sensor_msgs/msg/PointCloud2'):
        _frames(tmp_path / 'img_only')


def test_empty_and_nan_clouds_are_skipped_and_counted(tmp_path: Path) -> None:
    def cloud(i: int) -> dict:
        arrays = make_cloud(i)
        if i == 1:
            arrays['xyz'][:] = np.nan                       # all-NaN
        elif i == 2:
            arrays = {'xyz': np.zeros((0, 3), np.float32),  # empty
                      'intensity': np.zeros(0, np.float32)}
        elif i == 3:
            arrays['xyz'][:100] = np.nan                    # partly invalid
        return arrays

    info = write_rig_bag(tmp_path / 'rig', n_scans=5, cloud_fn=cloud)
    frames, stats = _frames(info.path)
    assert [f.index for f in frames] == [0, 3, 4]
    assert stats.skipped_clouds == 2
    assert stats.dropped_invalid_points == 4000 + 100
    assert len(frames[1].cloud) == 4000 - 100


def test_all_clouds_bad_is_an_error(tmp_path: Path) -> None:
    def cloud(i: int) -> dict:
        arrays = make_cloud(i)
        arrays['xyz'][:] = np.nan
        return arrays

    info = write_rig_bag(tmp_path / 'rig', n_scans=3, cloud_fn=cloud)
    with pytest.raises(MessageError, match=r'/rig/lidar/points: all 3 clouds.*empty or all-NaN'):
        _frames(info.path)


def test_zero_k_camera_info(tmp_path: Path) -> None:
    info = write_rig_bag(tmp_path / 'rig', [SyntheticCamera('cam_front', zero_k=True)],
                         n_scans=2)
    with pytest.raises(CalibrationError) as err:
        _frames(info.path)
    text = str(err.value)
    assert '/rig/cam_front/camera_info' in text and 'not calibrated' in text


def test_unknown_image_encoding(tmp_path: Path) -> None:
    info = write_rig_bag(tmp_path / 'rig', [SyntheticCamera('cam_front', encoding='yuv_weird')],
                         n_scans=2)
    with pytest.raises(MessageError) as err:
        _frames(info.path)
    assert '/rig/cam_front/image_raw' in str(err.value) and 'yuv_weird' in str(err.value)


def test_image_size_differs_from_calibration(tmp_path: Path) -> None:
    from dsseg_core.calibration import save_calibration_yaml

    cam = SyntheticCamera('cam_front')
    info = write_rig_bag(tmp_path / 'rig', [cam], n_scans=1)
    model = CameraModel(cam.width * 2, cam.height * 2, cam.K, name='cam_front')
    save_calibration_yaml(RigCalibration({'cam_front': CameraCalibration(
        model, cam.cam_from_lidar())}), tmp_path / 'c.yaml')
    with pytest.raises(CalibrationError, match=r'image_raw: image is 64x48.*128x96'):
        _frames(info.path, calibration_file=str(tmp_path / 'c.yaml'))


def test_ros1_bag_frames(tmp_path: Path) -> None:
    """A ROS 1 bag (image + camera_info + cloud + /tf_static) gives the same frames."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    from transforms3d.quaternions import mat2quat

    from dsseg_core.msgs.pointcloud import points_to_cloud_fields

    ts = get_typestore(Stores.ROS1_NOETIC)
    ts.register(get_types_from_msg('geometry_msgs/TransformStamped[] transforms',
                                   'tf2_msgs/msg/TFMessage'))
    t = ts.types
    cam = SyntheticCamera('cam_front')

    def header(seq: int, stamp: int, frame: str):  # noqa: ANN202
        return t['std_msgs/msg/Header'](seq=seq, stamp=t['builtin_interfaces/msg/Time'](
            sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame)

    pose = np.linalg.inv(cam.cam_from_lidar())
    w, x, y, z = mat2quat(pose[:3, :3])
    tf = t['geometry_msgs/msg/TransformStamped'](
        header=header(0, 0, 'lidar_link'), child_frame_id=cam.frame_id,
        transform=t['geometry_msgs/msg/Transform'](
            translation=t['geometry_msgs/msg/Vector3'](x=pose[0, 3], y=pose[1, 3], z=pose[2, 3]),
            rotation=t['geometry_msgs/msg/Quaternion'](x=x, y=y, z=z, w=w)))
    path = tmp_path / 'rig.bag'
    t0 = 1_600_000_000 * 10**9
    with Writer(path) as writer:
        conns = {name: writer.add_connection(topic, msgtype, typestore=ts) for name, topic,
                 msgtype in [('tf', '/tf_static', 'tf2_msgs/msg/TFMessage'),
                             ('img', cam.topic, 'sensor_msgs/msg/Image'),
                             ('info', cam.info_topic, 'sensor_msgs/msg/CameraInfo'),
                             ('pc', '/velodyne_points', 'sensor_msgs/msg/PointCloud2')]}

        def put(name: str, msg, stamp: int) -> None:  # noqa: ANN001
            writer.write(conns[name], stamp, ts.serialize_ros1(msg, msg.__msgtype__))

        put('tf', t['tf2_msgs/msg/TFMessage'](transforms=[tf]), t0)
        for i in range(3):
            stamp = t0 + i * 100_000_000
            fields = points_to_cloud_fields(make_cloud(i))
            put('pc', t['sensor_msgs/msg/PointCloud2'](
                header=header(i, stamp, 'lidar_link'), height=1, width=fields['width'],
                fields=[t['sensor_msgs/msg/PointField'](name=f[0], offset=f[1], datatype=f[2],
                                                        count=f[3]) for f in fields['fields']],
                is_bigendian=False, point_step=fields['point_step'],
                row_step=fields['row_step'], data=np.frombuffer(fields['data'], np.uint8),
                is_dense=True), stamp + 5_000_000)   # recorded 5 ms after its stamp
            img = make_image(cam.width, cam.height, i)
            put('img', t['sensor_msgs/msg/Image'](
                header=header(i, stamp + 3_000_000, cam.frame_id), height=cam.height,
                width=cam.width, encoding='rgb8', is_bigendian=0, step=cam.width * 3,
                data=img.reshape(-1)), stamp + 4_000_000)
            roi = t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                        width=0, do_rectify=False)
            put('info', t['sensor_msgs/msg/CameraInfo'](
                header=header(i, stamp, cam.frame_id), height=cam.height, width=cam.width,
                distortion_model='plumb_bob', D=np.zeros(5), K=cam.K.reshape(9),
                R=np.eye(3).reshape(9), P=np.hstack([cam.K, np.zeros((3, 1))]).reshape(12),
                binning_x=0, binning_y=0, roi=roi), stamp)
    frames, stats = _frames(path)
    assert len(frames) == 3 and stats.pairs == {'cam_front': 3}
    assert stats.max_dt_ms['cam_front'] == pytest.approx(3.0)   # header stamps, not record time
    for i, frame in enumerate(frames):
        assert frame.stamp_ns == t0 + i * 100_000_000
        assert frame.cloud.frame_id == 'lidar_link'
        np.testing.assert_array_equal(frame.cloud.xyz, make_cloud(i)['xyz'])
        np.testing.assert_array_equal(frame.cameras['cam_front'].image,
                                      make_image(cam.width, cam.height, i))
        np.testing.assert_allclose(frame.cameras['cam_front'].calib.T_cam_lidar,
                                   cam.cam_from_lidar(), atol=1e-9)

"""CameraInfo → CameraModel: models, frame ids, binning/ROI, uncalibrated cameras."""

from __future__ import annotations

import numpy as np
import pytest
from msg_factories import make_msg

from dsseg_core.calibration import CameraModel
from dsseg_core.errors import CalibrationError
from dsseg_core.msgs.camera_info import camera_model_from_camera_info

K = np.array([[721.5, 0.0, 609.6], [0.0, 721.5, 172.9], [0.0, 0.0, 1.0]])
D5 = [-0.37, 0.20, 0.001, -0.002, -0.07]


def info(flavor: str, **kw):
    fields = dict(frame_id='camera_color_left', width=1242, height=375,
                  distortion_model='plumb_bob', d=D5, k=K.ravel())
    fields.update(kw)
    return make_msg(flavor, 'CameraInfo', **fields)


def test_plumb_bob(flavor: str) -> None:
    model = camera_model_from_camera_info(info(flavor))
    assert isinstance(model, CameraModel)
    assert (model.width, model.height) == (1242, 375)
    np.testing.assert_array_equal(model.K, K)
    np.testing.assert_allclose(model.D, D5)
    assert model.distortion_model == 'plumb_bob'
    assert model.frame_id == 'camera_color_left'
    other = camera_model_from_camera_info(info(flavor), frame_id='cam2', name='front')
    assert other.frame_id == 'cam2' and other.name == 'front'


@pytest.mark.parametrize('model,d', [('rational_polynomial', [0.1, -0.2, 0.0, 0.0, 0.01,
                                                              0.3, -0.1, 0.02]),
                                     ('equidistant', [0.1, 0.01, -0.003, 0.0004])])
def test_other_models(flavor: str, model: str, d: list[float]) -> None:
    out = camera_model_from_camera_info(info(flavor, distortion_model=model, d=d))
    assert out.distortion_model == model
    np.testing.assert_allclose(out.D, d)


def test_empty_model(flavor: str) -> None:
    none = camera_model_from_camera_info(info(flavor, distortion_model='', d=[0.0] * 5))
    assert none.distortion_model == 'none' and none.D.size == 0
    guessed = camera_model_from_camera_info(info(flavor, distortion_model='', d=D5))
    assert guessed.distortion_model == 'plumb_bob'
    with pytest.raises(CalibrationError, match='distortion_model is empty'):
        camera_model_from_camera_info(info(flavor, distortion_model='', d=[0.1, 0.2, 0.3]))


def test_binning_and_roi(flavor: str) -> None:
    binned = camera_model_from_camera_info(info(flavor, binning_x=2, binning_y=2))
    assert (binned.width, binned.height) == (621, 187)
    np.testing.assert_allclose(binned.K, [[360.75, 0, 304.8], [0, 360.75, 86.45], [0, 0, 1]])
    roi = camera_model_from_camera_info(info(flavor, roi=(100, 50, 640, 200)))
    assert (roi.width, roi.height) == (640, 200)
    np.testing.assert_allclose(roi.K[:2, 2], [509.6, 122.9])


def test_uncalibrated_camera_errors(flavor: str) -> None:
    with pytest.raises(CalibrationError, match=r'k is all zeros.*calibrat'):
        camera_model_from_camera_info(info(flavor, k=np.zeros(9)))
    with pytest.raises(CalibrationError, match=r'width=0, height=375'):
        camera_model_from_camera_info(info(flavor, width=0))
    with pytest.raises(CalibrationError, match='unknown model'):
        camera_model_from_camera_info(info(flavor, distortion_model='kb_weird'))


def test_ros1_camera_info_field_names() -> None:
    """ROS 1 CameraInfo (rosbags' ROS 1 types) spells the matrices in capitals."""
    from types import SimpleNamespace

    from dsseg_core.msgs.camera_info import camera_model_from_camera_info

    msg = SimpleNamespace(
        header=SimpleNamespace(frame_id='cam'), width=640, height=480,
        distortion_model='plumb_bob', D=[0.1, -0.01, 0.0, 0.0, 0.0],
        K=[500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0],
        binning_x=0, binning_y=0,
        roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False),
    )
    model = camera_model_from_camera_info(msg)
    assert model.K[0, 0] == 500.0 and model.K[1, 2] == 240.0
    assert model.distortion_model == 'plumb_bob'
    assert model.D[0] == 0.1

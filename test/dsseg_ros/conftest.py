"""Fixtures of the node tests: an rclpy context per test and a spinner over it.

test/conftest.py has already set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and this run's
ROS_DOMAIN_ID before anything imports rclpy.
"""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.context import Context  # noqa: E402
from ros_helpers import Spinner  # noqa: E402


@pytest.fixture
def ros_context():
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture
def spinner(ros_context):
    sp = Spinner(ros_context)
    yield sp
    sp.close()


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    """A randomly initialised tiny segmenter run dir (shared: building it imports torch)."""
    pytest.importorskip('torch')
    from model_fixture import save_tiny_run

    return save_tiny_run(tmp_path_factory.mktemp('tiny') / 'run')

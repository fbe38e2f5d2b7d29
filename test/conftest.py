"""Test configuration shared by the whole suite.

Network rule: every process that may start ROS 2 must keep discovery on this machine and use
its own domain id. This file sets both *at import time*, before any test module can import
rclpy, and subprocesses inherit them. ``test_network_rule.py`` checks it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_STATIC_PEERS', None)
# One domain id per test run (0..101 is the portable range); DSSEG_TEST_DOMAIN_ID overrides.
os.environ['ROS_DOMAIN_ID'] = os.environ.get(
    'DSSEG_TEST_DOMAIN_ID', str(10 + os.getpid() % 90)
)
os.environ.setdefault('OMP_NUM_THREADS', '2')

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('DSSEG_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data'))
SAMPLE_BAG = REPO_ROOT / 'data' / 'sample_kitti'

_profile = REPO_ROOT / 'config' / 'fastdds_shm.xml'
if _profile.exists():
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(_profile))

# CPU machines have no torchvision wheel; timm/open_clip import it. Use the test stand-in.
if importlib.util.find_spec('torchvision') is None:
    sys.path.insert(0, str(REPO_ROOT / 'test' / 'stubs'))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f'real data not available: {path} is missing (../shared/data is only '
                    'present in the development workspace)')
    return path


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='session')
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope='session')
def kitti_raw_dir() -> Path:
    return _need(SHARED_DATA / 'kitti_raw_2011_09_26')


@pytest.fixture(scope='session')
def kitti_object_dir() -> Path:
    return _need(SHARED_DATA / 'kitti_object_000008')


@pytest.fixture(scope='session')
def semantickitti_dir() -> Path:
    return _need(SHARED_DATA / 'semantickitti_seq00')


@pytest.fixture(scope='session')
def nuscenes_dir() -> Path:
    return _need(SHARED_DATA / 'nuscenes_sample')


@pytest.fixture(scope='session')
def sample_bag() -> Path:
    """The small KITTI sample bag shipped in the repo (data/sample_kitti)."""
    assert SAMPLE_BAG.exists(), f'{SAMPLE_BAG} must ship with the repo'
    return SAMPLE_BAG


@pytest.fixture(params=['jit', 'numpy'])
def kernel_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with the numba kernels and once with the numpy reference path
    (``DSSEG_JIT=0``); the jit case is skipped where numba is not installed."""
    from dsseg_core.jit import HAVE_NUMBA

    if request.param == 'jit':
        if not HAVE_NUMBA:
            pytest.skip('numba is not installed: only the numpy path runs here')
        monkeypatch.setenv('DSSEG_JIT', '1')
    else:
        monkeypatch.setenv('DSSEG_JIT', '0')
    return request.param


@pytest.fixture
def both_paths(monkeypatch: pytest.MonkeyPatch):
    """``both_paths(fn) -> (fn() with the kernels, fn() on the numpy path)``, for tests that
    compare the two implementations result by result."""

    def run(fn):
        monkeypatch.setenv('DSSEG_JIT', '1')
        jit = fn()
        monkeypatch.setenv('DSSEG_JIT', '0')
        ref = fn()
        return jit, ref

    return run

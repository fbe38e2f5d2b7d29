"""Nodes in separate processes exchange messages over DDS with the shipped Fast DDS profile,
and stop cleanly on Ctrl-C (SIGINT): exit code 0, no traceback."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
from model_fixture import test_config
from rclpy.node import Node
from ros_helpers import Collector, Spinner, unique
from sensor_msgs.msg import Image, PointCloud2

CLOUD = '/kitti/velo/pointcloud'


def _env(repo_root) -> dict[str, str]:
    env = dict(os.environ)
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(repo_root / 'config' / 'fastdds_shm.xml')
    env['PYTHONUNBUFFERED'] = '1'
    spec = importlib.util.find_spec('torchvision')
    stubs = repo_root / 'test' / 'stubs'
    if spec is not None and str(stubs) in str(spec.origin):  # the CPU stand-in: pass it on
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(stubs),
                                                          env.get('PYTHONPATH', '')]))
    env.setdefault('OMP_NUM_THREADS', '1')
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST' and env['ROS_DOMAIN_ID']
    return env


def _stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 20.0):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f'process did not stop on signal {sig}: {err[-2000:]}')
    return proc.returncode, out, err


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_bag_player_process_to_this_process_and_clean_stop(ros_context, sample_bag, repo_root,
                                                           sig):
    proc = subprocess.Popen(
        [sys.executable, '-m', 'dsseg_ros.bag_player_node', '--ros-args',
         '-r', f'__node:={unique("player")}', '-p', f'bag_player.bag:={sample_bag}',
         '-p', 'bag_player.loop:=true', '-p', f'bag_player.topics:=[{CLOUD}]'],
        env=_env(repo_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    spinner = Spinner(ros_context)
    try:
        probe = spinner.add(Node(unique('probe'), context=ros_context))
        clouds = Collector(probe, PointCloud2, CLOUD, 10)
        ok = spinner.spin_until(lambda: len(clouds) >= 3, 30.0)
    finally:
        spinner.close()
        code, _out, err = _stop(proc, sig)
    assert ok, err[-3000:]
    assert clouds.msgs[0].width > 100_000 and clouds.msgs[0].header.frame_id == 'velo_link'
    assert code == 0, err[-3000:]
    assert 'Traceback' not in err, err[-3000:]


@pytest.mark.slow
def test_dsseg_run_process_replays_labels_records_and_publishes_over_dds(
        ros_context, sample_bag, repo_root, tmp_path, tiny_run):
    config = test_config(repo_root, tmp_path / 'dsseg.yaml', tiny_run)
    out_bag = tmp_path / 'out_bag'
    cmd = [sys.executable, '-m', 'dsseg_core', 'run', '--config', str(config),
           '--replay', str(sample_bag), '--rate', '1.0', '--record', str(out_bag)]
    spinner = Spinner(ros_context)
    proc = subprocess.Popen(cmd, env=_env(repo_root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        probe = spinner.add(Node(unique('probe'), context=ros_context))
        masks = Collector(probe, Image, '/segmenter/mask', 50)
        clouds = Collector(probe, PointCloud2, '/cloud_labeller/labelled_cloud', 50)
        t0 = time.monotonic()
        spinner.spin_until(lambda: proc.poll() is not None, 120.0)
        spinner.spin_for(0.2)
        elapsed = time.monotonic() - t0
    finally:
        spinner.close()
        code, _out, err = _stop(proc)
    assert code == 0, err[-3000:]
    assert 'Traceback' not in err and 'never retrieved' not in err, err[-3000:]
    assert len(masks) >= 1 and len(clouds) >= 1, (elapsed, err[-3000:])
    assert 'recorded outputs to' in err
    from dsseg_core.bag.reader import open_bag

    with open_bag(out_bag) as bag:
        topics = bag.topics
    assert topics['/segmenter/mask'].count >= 1
    assert topics['/segmenter/overlay'].count >= 1
    assert topics['/cloud_labeller/labelled_cloud'].count >= 1

"""``dsseg run``: the on-car pipeline (segmenter + cloud labeller) in one process.

Starts the same nodes as ``launch/dsseg.launch.py`` with the same parameter YAML, on one
MultiThreadedExecutor; ``--replay BAG`` adds the bag player (with ``use_sim_time``) as
``launch/replay.launch.py`` does, ``--record OUT`` writes the outputs to a rosbag2 mcap folder.
rclpy is imported only when the command runs (``dsseg_core`` never imports it at load time).

Network: ROS 2 discovery follows the environment. On a development machine set
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and your own ``ROS_DOMAIN_ID``; on a car keep the
car's settings. ``FASTDDS_DEFAULT_PROFILES_FILE`` is set to the shipped large-data profile
(``config/fastdds_shm.xml``) when unset.
"""

from __future__ import annotations

import argparse
import os
import sys

from dsseg_core.errors import DependencyError

HELP = 'run the segmenter and cloud labeller nodes in one process (ROS 2)'


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'run', help=HELP, description=__doc__.split('\n\n')[0] + ' ' + HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='example: dsseg run --config config/dsseg.yaml --replay data/sample_kitti '
               '--model runs/seg --record out/demo_bag')
    parser.add_argument('--config', default=None, metavar='YAML',
                        help='ROS 2 parameter file (default: the shipped config/dsseg.yaml)')
    parser.add_argument('--replay', metavar='BAG', help='play this bag (with /clock)')
    parser.add_argument('--model', metavar='PATH',
                        help='checkpoint run dir or .onnx (overrides segmenter.model.path)')
    parser.add_argument('--student', metavar='PATH',
                        help='3D student run dir or .onnx for points no camera sees '
                             '(overrides cloud_labeller.student.path)')
    parser.add_argument('--rate', type=float, metavar='R', help='replay speed factor')
    parser.add_argument('--loop', action='store_true', help='replay in a loop')
    parser.add_argument('--record', metavar='OUT_BAG',
                        help='record mask, overlay and labelled cloud to this rosbag2 folder')
    parser.add_argument('--duration', type=float, metavar='S',
                        help='stop after S seconds (default: Ctrl-C or end of the replay)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsseg_core.nodes_config import shipped_config_path

    profile = shipped_config_path('fastdds_shm.xml')
    if profile and 'FASTDDS_DEFAULT_PROFILES_FILE' not in os.environ:
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = profile
    config = args.config or shipped_config_path('dsseg.yaml')
    try:
        from dsseg_ros.run import run_pipeline
    except ImportError as err:
        raise DependencyError(
            f'dsseg run needs ROS 2 (rclpy): {err}; source /opt/ros/<distro>/setup.bash or '
            "pip install -e '.[ros]' on a machine without ROS") from err
    result = run_pipeline(config, replay=args.replay, model=args.model, rate=args.rate,
                          record=args.record, loop=args.loop, duration_s=args.duration,
                          student=args.student)
    for node, values in result.stats.items():
        keys = [k for k in ('received', 'processed', 'dropped', 'published',
                            'latency_p50_ms', 'latency_p99_ms', 'sync.matched', 'loops',
                            'late_messages') if k in values]
        keys += [k for k in values if k.startswith(('recorded.', 'published.'))]
        summary = ', '.join(f'{k}={values[k]}' for k in keys)
        bad = {k: v for k, v in values.items() if k.startswith('bad.')}
        print(f'{node}: {summary}' + (f'; dropped bad messages: {bad}' if bad else ''),
              file=sys.stderr)
    if result.recorded:
        print(f'recorded outputs to {result.recorded}', file=sys.stderr)
    return 0

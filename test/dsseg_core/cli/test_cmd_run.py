"""`dsseg run`: registered without importing rclpy; sets the Fast DDS profile when unset."""

from __future__ import annotations

import subprocess
import sys

from dsseg_core.cli import build_parser


def test_run_is_registered_with_its_options() -> None:
    parser = build_parser()
    args = parser.parse_args(['run', '--replay', 'bag', '--model', 'm', '--rate', '2',
                              '--record', 'out', '--duration', '3'])
    assert (args.replay, args.model, args.rate, args.record, args.duration) == (
        'bag', 'm', 2.0, 'out', 3.0)
    assert args.config is None and callable(args.func)


def test_registration_does_not_import_rclpy() -> None:
    code = ('import sys; from dsseg_core.cli import build_parser; build_parser(); '
            'print("rclpy" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == 'False'


def test_without_rclpy_run_is_a_clear_dependency_error() -> None:
    code = ("import sys; sys.modules['rclpy'] = None; "
            "from dsseg_core.cli import main; sys.exit(main(['run', '--duration', '0']))")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env={**__import__('os').environ,
                               'FASTDDS_DEFAULT_PROFILES_FILE': ''})
    assert proc.returncode == 1
    assert 'dsseg run: error: dsseg run needs ROS 2 (rclpy)' in proc.stderr


def test_run_sets_the_shipped_profile_and_config_and_forwards_options(monkeypatch, capsys):
    import pytest

    pytest.importorskip('rclpy')
    import dsseg_ros.run as run_mod
    from dsseg_core.cli import main

    seen = {}

    def fake_run_pipeline(config, **kwargs):
        import os

        seen.update(kwargs, config=config, profile=os.environ['FASTDDS_DEFAULT_PROFILES_FILE'])
        return run_mod.PipelineResult(stats={'segmenter': {'processed': '3', 'dropped': '1'}},
                                      recorded=kwargs['record'])

    monkeypatch.delenv('FASTDDS_DEFAULT_PROFILES_FILE', raising=False)
    monkeypatch.setattr(run_mod, 'run_pipeline', fake_run_pipeline)
    assert main(['run', '--replay', 'b', '--model', 'm', '--rate', '0.5', '--record', 'o']) == 0
    assert seen['profile'].endswith('config/fastdds_shm.xml')
    assert seen['config'].endswith('config/dsseg.yaml')
    assert (seen['replay'], seen['model'], seen['rate'], seen['record']) == ('b', 'm', 0.5, 'o')
    err = capsys.readouterr().err
    assert 'segmenter: processed=3, dropped=1' in err and 'recorded outputs to o' in err

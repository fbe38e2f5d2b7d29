"""dsseg_core must import (every module) on a machine without ROS 2."""

import pkgutil
import subprocess
import sys

import dsseg_core

CODE = r"""
import importlib, pkgutil, sys
sys.modules['rclpy'] = None  # any "import rclpy" now raises ImportError
import dsseg_core
failed = []
for info in pkgutil.walk_packages(dsseg_core.__path__, 'dsseg_core.'):
    if info.name.endswith('__main__'):
        continue
    try:
        importlib.import_module(info.name)
    except ImportError as err:
        if 'rclpy' in str(err):
            failed.append(f'{info.name}: {err}')
print('\n'.join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_core_module_imports_without_rclpy() -> None:
    names = [m.name for m in pkgutil.walk_packages(dsseg_core.__path__, 'dsseg_core.')]
    assert names, 'no modules found'
    proc = subprocess.run([sys.executable, '-c', CODE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_core_does_not_pull_heavy_deps() -> None:
    code = ('import sys, dsseg_core, dsseg_core.cli; '
            'print(sorted(m for m in ("torch", "rclpy", "open3d") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == '[]'

"""Atomic outputs: complete or absent, never half-written, with normal permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dsseg_core.atomic import atomic_dir, atomic_open, write_bytes_atomic


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / 'out.bin'
    write_bytes_atomic(target, b'old')
    with pytest.raises(RuntimeError), atomic_open(target, 'wb') as fh:
        fh.write(b'half')
        raise RuntimeError('interrupted')
    assert target.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.bin']


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / 'f.bin', b'x')
        with atomic_dir(tmp_path / 'bag') as d:
            (d / 'a').write_bytes(b'y')
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / 'f.bin').stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / 'bag').stat().st_mode) == 0o755

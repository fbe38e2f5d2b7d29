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


def test_temporary_never_matches_a_glob_of_the_outputs(tmp_path: Path) -> None:
    from dsseg_core.atomic import atomic_path, is_temp_name

    target = tmp_path / 'frame.npz'
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b'partial')
        assert tmp.parent == tmp_path and tmp.exists()
        assert is_temp_name(tmp.name)
        # a killed writer leaves exactly this file: no output glob may pick it up
        assert list(tmp_path.glob('*.npz')) == [] and list(tmp_path.rglob('*.npz')) == []
        assert tmp.suffix != '.npz'
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writers_that_append_the_extension_still_work(tmp_path: Path) -> None:
    import numpy as np

    from dsseg_core.atomic import atomic_path

    target = tmp_path / 'arrays.npz'
    with atomic_path(target) as tmp:
        np.savez(tmp, a=np.arange(3))          # numpy appends '.npz' to the path
    with np.load(target) as data:
        assert data['a'].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['arrays.npz']


def test_atomic_dir_refuses_to_replace_a_file(tmp_path: Path) -> None:
    from dsseg_core.errors import DssegError

    target = tmp_path / 'out.bag'
    target.write_text('keep')
    ran = []
    with pytest.raises(DssegError, match='out.bag.*not a folder'), atomic_dir(target) as d:
        ran.append(d)
    assert not ran and target.read_text() == 'keep'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.bag']


def test_atomic_dir_replaces_a_folder_only_if_allowed(tmp_path: Path) -> None:
    from dsseg_core.errors import DssegError

    def is_bag(p: Path) -> bool:
        return (p / 'metadata.yaml').exists()

    user = tmp_path / 'mydata'
    user.mkdir()
    (user / 'notes.txt').write_text('keep me')
    with pytest.raises(DssegError, match='mydata.*a rosbag2 folder'), \
            atomic_dir(user, replace_if=is_bag, what='a rosbag2 folder'):
        pass
    assert (user / 'notes.txt').read_text() == 'keep me'

    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'metadata.yaml').write_text('old')
    with atomic_dir(bag, replace_if=is_bag) as d:
        (d / 'metadata.yaml').write_text('new')
    assert (bag / 'metadata.yaml').read_text() == 'new'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag', 'mydata']

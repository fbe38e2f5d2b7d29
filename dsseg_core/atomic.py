"""Atomic file output: write to a temporary file next to the target, then rename.

A reader never sees half a file. An interrupted (killed) writer leaves only a hidden
temporary named ``.<name>.tmp-<random>`` (files) or ``.<name>.<random>.tmp`` (folders): the
name never ends in the target's extension, so ``glob('*.npz')`` / ``rglob('*.png')`` over an
output folder never picks up a stale temporary.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from dsseg_core.errors import DssegError

TMP_MARK = '.tmp-'


def is_temp_name(name: str) -> bool:
    """True for the names of temporaries left by :func:`atomic_path` / :func:`atomic_dir`."""
    return name.startswith('.') and (TMP_MARK in name or name.endswith('.tmp'))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reserve_temp(target: Path) -> Path:
    """Create (exclusively) an empty hidden temporary next to ``target``."""
    for _ in range(100):
        tmp = target.with_name(f'.{target.name}{TMP_MARK}{secrets.token_hex(4)}')
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f'{target.parent}: cannot create a temporary file for {target.name}')


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    Use it for writers that want a path (safetensors, torch, onnx, rosbags). The temporary
    is ``.<name>.tmp-<random>``: it deliberately does NOT end in the target's extension, so
    give writers that infer the format from the extension the format explicitly
    (``img.save(tmp, format='PNG')``) or an open file (``np.savez(open(tmp, 'wb'), ...)``).
    A writer that appends the extension itself (``np.save``/``np.savez`` on a path) still
    works: the ``<tmp><ext>`` file it writes is the one renamed onto ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _reserve_temp(target)  # mode 0666 & ~umask, like a plain open()
    appended = tmp_path.with_name(tmp_path.name + target.suffix) if target.suffix else None
    try:
        yield tmp_path
        if appended is not None and appended.exists():
            os.replace(appended, target)
        else:
            os.replace(tmp_path, target)
    finally:
        for leftover in (tmp_path, appended):
            if leftover is not None and leftover.exists():
                leftover.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = 'w', **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``target`` only if the block succeeds."""
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_open(target, 'wb') as fh:
        fh.write(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_open(target, 'w', encoding='utf-8') as fh:
        fh.write(text)


def _check_replaceable(target: Path, replace_if: Callable[[Path], bool] | None,
                       what: str) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise DssegError(f'{target}: already exists and is not a folder; refusing to replace '
                         f'it with {what} (remove it or choose another output path)')
    if target.is_dir() and replace_if is not None and not replace_if(target):
        raise DssegError(f'{target}: folder already exists and is not {what}; refusing to '
                         'replace it (remove it or choose another output path)')


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str],
               replace_if: Callable[[Path], bool] | None = None,
               what: str = 'an output folder') -> Iterator[Path]:
    """Yield a temporary directory that is renamed onto ``target`` on success.

    For outputs that are folders (a rosbag2 directory). An existing ``target`` folder is
    replaced only if ``replace_if`` is None or ``replace_if(target)`` is true (e.g. "it is a
    rosbag2 folder"); otherwise, and always when ``target`` is an existing file or symlink,
    :class:`DssegError` is raised (before the block runs, so no work is wasted, and again
    before the rename). ``what`` names the output in those messages (``'a rosbag2 folder'``).
    """
    target = Path(target)
    _check_replaceable(target, replace_if, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{target.name}.', suffix='.tmp', dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _check_replaceable(target, replace_if, what)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

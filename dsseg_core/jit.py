"""Compiled kernels: numba when it is installed, the numpy reference path otherwise.

The hot loops of dsseg (range images, ground and proposal labelling, z-buffers, label
transfer, point cloud packing) have two implementations: a numba kernel (one pass over the
points, no temporaries) and the vectorised numpy code it replaced, kept as the reference and as
the fallback on platforms without a numba wheel. Both give the same result; the tests run both.

* ``njit`` decorates a kernel: ``numba.njit(cache=True, nogil=True)`` (compiled once per
  machine, cached next to the module or in the user cache; ``nogil`` lets the ROS nodes' worker
  threads run kernels beside the executor), or the plain Python function when numba is missing
  (callers must not then call it: see ``jit_enabled``).
* Compiled kernels are cached in ``$NUMBA_CACHE_DIR`` (default ``$XDG_CACHE_HOME/dsseg``, i.e.
  ``~/.cache/dsseg``) under ``numba-<digest of the dsseg_core sources>``: numba only checks a
  kernel's own file for changes, not the kernels it calls in other modules, so a stale cache
  after an upgrade or an edit could run old code (or crash); a new digest means a fresh cache.
  Nothing is written into the installed package.
* ``jit_enabled()`` says whether kernels should be used: numba importable and the environment
  variable ``DSSEG_JIT`` not ``0`` (set ``DSSEG_JIT=0`` to force the numpy path, e.g. to
  compare results or when a numba upgrade misbehaves).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ['HAVE_NUMBA', 'cache_dir', 'jit_enabled', 'njit', 'source_digest']

log = logging.getLogger(__name__)

F = TypeVar('F', bound=Callable[..., Any])

try:
    import numba as _numba
except ImportError:  # pragma: no cover - exercised on platforms without numba wheels
    _numba = None
    log.debug('numba not installed: dsseg uses its numpy code paths')

HAVE_NUMBA: bool = _numba is not None


def source_digest() -> str:
    """16 hex digits of a hash over every ``.py`` file of ``dsseg_core`` (names and bytes)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob('*.py')):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> str:
    """Where this version of dsseg keeps its compiled kernels (see the module docstring)."""
    base = os.environ.get('NUMBA_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
        'dsseg')
    return os.path.join(base, f'numba-{source_digest()}')


if _numba is not None:  # before any kernel is decorated: numba reads it then
    _numba.config.CACHE_DIR = cache_dir()


def jit_enabled() -> bool:
    """True when compiled kernels should be used (numba installed and ``DSSEG_JIT`` != 0)."""
    return HAVE_NUMBA and os.environ.get('DSSEG_JIT', '1').strip() not in ('0', 'false', 'no')


def njit(fn: F) -> F:
    """Compile ``fn`` with numba (nopython, cached, GIL released) when numba is installed."""
    if _numba is None:  # pragma: no cover
        return fn
    try:
        return _numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as err:  # no writable cache folder anywhere (read-only home and site)
        log.warning('numba cannot cache %s (%s): compiling it in memory at every start; set '
                    'NUMBA_CACHE_DIR to a writable folder', fn.__qualname__, err)
        return _numba.njit(cache=False, nogil=True)(fn)

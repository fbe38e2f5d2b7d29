"""The kernel switch: numba when installed, the numpy path on ``DSSEG_JIT=0``."""

from __future__ import annotations

import numpy as np
import pytest

from dsseg_core.jit import HAVE_NUMBA, jit_enabled, njit


@pytest.mark.parametrize(('value', 'expected'), [('0', False), ('false', False), ('1', True),
                                                 ('', True)])
def test_env_switch(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv('DSSEG_JIT', value)
    assert jit_enabled() is (expected and HAVE_NUMBA)


def test_njit_compiles_and_runs() -> None:
    @njit
    def running_max(a: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        m = -np.inf
        for i in range(a.shape[0]):
            m = max(m, a[i])
            out[i] = m
        return out

    a = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    np.testing.assert_array_equal(running_max(a), np.maximum.accumulate(a))
    if HAVE_NUMBA:
        assert hasattr(running_max, 'signatures') and running_max.signatures


def test_cache_dir_follows_the_sources(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from dsseg_core.jit import cache_dir, source_digest

    monkeypatch.setenv('NUMBA_CACHE_DIR', str(tmp_path))
    digest = source_digest()
    assert len(digest) == 16 and cache_dir() == str(tmp_path / f'numba-{digest}')
    monkeypatch.delenv('NUMBA_CACHE_DIR')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert cache_dir() == str(tmp_path / 'xdg' / 'dsseg' / f'numba-{digest}')
    if HAVE_NUMBA:
        import numba

        assert numba.config.CACHE_DIR.endswith(f'numba-{digest}')


def test_unwritable_cache_falls_back_to_in_memory_compilation(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    if not HAVE_NUMBA:
        pytest.skip('numba is not installed')
    import numba

    real = numba.njit

    def no_cache(*args, **kwargs):
        if kwargs.get('cache'):
            def refuse(fn):
                raise RuntimeError(f'cannot cache function {fn.__name__!r}: no locator available')
            return refuse
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, 'njit', no_cache)

    @njit
    def twice(x: float) -> float:
        return 2.0 * x

    assert twice(21.0) == 42.0

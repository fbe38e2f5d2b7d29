"""load_config: errors name where the bad value came from (the file or the command line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from dsseg_core.config import StageConfig, load_config
from dsseg_core.errors import ConfigError


class _Inner(StageConfig):
    k: int = Field(3, ge=1)


class _Cfg(StageConfig):
    max_frames: int | None = Field(None, ge=1)
    every_n: int = Field(1, ge=1)
    inner: _Inner = _Inner()


def test_override_errors_name_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_Cfg, overrides={'max_frames': -1})
    msg = str(err.value)
    assert msg.startswith('command line: max_frames: ') and '<defaults>' not in msg

    path = tmp_path / 'cfg.yaml'
    path.write_text('stage:\n  every_n: 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(_Cfg, path, section='stage', overrides={'inner.k': 0, 'max_frames': None})
    parts = str(err.value).split('; ')
    assert f'{path}: every_n: ' in parts[0] or f'{path}: every_n: ' in parts[1]
    assert any(p.startswith('command line: inner.k: ') for p in parts)
    assert len(parts) == 2


def test_file_errors_name_the_file_and_good_values_load(tmp_path: Path) -> None:
    path = tmp_path / 'cfg.yaml'
    path.write_text('stage:\n  inner: {k: 0}\n')
    with pytest.raises(ConfigError, match=rf'^{path}: inner\.k: '):
        load_config(_Cfg, path, section='stage')
    path.write_text('stage:\n  inner: {k: 2}\n  every_n: 4\n')
    cfg = load_config(_Cfg, path, section='stage', overrides={'max_frames': 5})
    assert (cfg.inner.k, cfg.every_n, cfg.max_frames) == (2, 4, 5)

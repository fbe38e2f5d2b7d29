"""Configuration: one pydantic schema per stage, loaded from YAML.

Each stage defines its own schema (a subclass of :class:`StageConfig`) in its own module.
The same YAML file serves the CLI and the ROS nodes:

* a plain file: ``{<section>: {...}}`` or the section's keys at top level;
* a ROS 2 parameter file: ``{'/**' or node_name: {'ros__parameters': {<section>: {...}}}}``.

The resolved config (defaults filled in) is saved next to every output with
:func:`save_config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from dsseg_core.atomic import write_text_atomic
from dsseg_core.errors import ConfigError

__all__ = [
    'StageConfig',
    'format_validation_error',
    'load_config',
    'read_yaml',
    'save_config',
    'section_from_mapping',
]

C = TypeVar('C', bound='StageConfig')


class StageConfig(BaseModel):
    """Base of every stage schema: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra='forbid', validate_assignment=True, frozen=False)


def format_validation_error(err: ValidationError, source: str) -> str:
    """One readable line per problem: ``source: a.b.c: message``."""
    lines = []
    for item in err.errors():
        loc = '.'.join(str(p) for p in item['loc']) or '(root)'
        lines.append(f'{source}: {loc}: {item["msg"]}')
    return '; '.join(lines)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read a YAML file, raising :class:`ConfigError` naming the file on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError as err:
        raise ConfigError(f'{path}: config file not found') from err
    except OSError as err:
        raise ConfigError(f'{path}: cannot read config file: {err.strerror}') from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f'{path}: not valid YAML: {err}'.replace('\n', ' ')) from err


def section_from_mapping(data: Any, section: str | None, source: str = '<config>') -> dict:
    """Extract a stage's section from a plain or ``ros__parameters`` mapping."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f'{source}: expected a mapping at the top level, got {type(data).__name__}'
        )
    # ROS 2 parameter file: {node_or_wildcard: {ros__parameters: {...}}}; merge in file order.
    ros_blocks = [v['ros__parameters'] for v in data.values()
                  if isinstance(v, dict) and 'ros__parameters' in v]
    if ros_blocks:
        merged: dict = {}
        for block in ros_blocks:
            merged.update(block or {})
        data = merged
    if section is None:
        return data
    if section in data:
        value = data[section]
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f'{source}: section {section!r} must be a mapping')
        return value
    return {}


def load_config(
    schema: type[C],
    path: str | os.PathLike[str] | None = None,
    section: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> C:
    """Build a validated ``schema`` from an optional YAML file section plus overrides.

    ``overrides`` are applied last (CLI flags); nested keys may use dots (``a.b``).
    """
    data: dict = {}
    file_source = str(path) if path is not None else '<defaults>'
    if path is not None:
        data = dict(section_from_mapping(read_yaml(path), section, file_source))
    override_keys: list[tuple[str, ...]] = []
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = key.split('.')
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
        override_keys.append(tuple(parts))
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        lines = []
        for item in err.errors():
            loc = tuple(str(p) for p in item['loc'])
            from_cli = any(loc[:len(k)] == k for k in override_keys)
            source = 'command line' if from_cli else file_source
            lines.append(f'{source}: {".".join(loc) or "(root)"}: {item["msg"]}')
        raise ConfigError('; '.join(lines)) from err


def save_config(config: BaseModel | dict, path: str | os.PathLike[str],
                section: str | None = None) -> None:
    """Write the resolved config as YAML (atomically), optionally under ``section``."""
    data = config.model_dump(mode='json') if isinstance(config, BaseModel) else config
    if section is not None:
        data = {section: data}
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))

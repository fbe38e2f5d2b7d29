"""ROS parameters declared from a pydantic stage schema and validated on every change.

A node binds one :class:`~dsseg_core.config.StageConfig` section: every leaf of the resolved
config becomes a parameter named ``<section>.<a>.<b>`` (nested keys flattened with dots, as
in ``config/dsseg.yaml`` under ``ros__parameters``). Values given to the node (parameter file,
``-p`` overrides, launch) are validated by the schema at start; a later ``ros2 param set`` is
validated in an on-set-parameters callback and rejected with the schema's reason when
invalid, so the node never runs with a config the CLI would refuse. Fields the schema marks
read-only (:func:`dsseg_core.nodes_config.read_only`) are read-only parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from dsseg_core.config import StageConfig, format_validation_error
from dsseg_core.errors import ConfigError

__all__ = ['ParameterBinding', 'flatten', 'unflatten']

C = TypeVar('C', bound=StageConfig)
log = logging.getLogger(__name__)


def flatten(data: dict, prefix: str = '') -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}`` (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    """Inverse of :func:`flatten`."""
    out: dict = {}
    for name, value in flat.items():
        node = out
        parts = name.split('.')
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def _field_for(schema: type[BaseModel], path: list[str]) -> Any:
    """The pydantic FieldInfo of a flattened leaf (dict keys skipped), or None."""
    model: Any = schema
    info = None
    i = 0
    while i < len(path):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(path[i])
        if info is None:
            return None
        ann = info.annotation
        i += 1
        if get_origin(ann) is dict:
            ann = get_args(ann)[1]
            i += 1  # the dict key
        model = ann
    return info


def _list_type(info: Any) -> Parameter.Type:
    ann = getattr(info, 'annotation', None)
    args = get_args(ann) if get_origin(ann) is list else ()
    elem = args[0] if args else str
    return {bool: Parameter.Type.BOOL_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
            float: Parameter.Type.DOUBLE_ARRAY}.get(elem, Parameter.Type.STRING_ARRAY)


def _initial_value(value: Any, info: Any) -> Any:
    if isinstance(value, list) and not value:  # [] would be typed as a byte array
        return _list_type(info)  # declared typed and unset; reads back as the default []
    if isinstance(value, dict):  # an empty mapping: nothing to declare
        return None
    return value


class ParameterBinding(Generic[C]):
    """Declare ``schema``'s parameters on ``node`` under ``section`` and keep them valid.

    ``on_change(config, changed_keys)`` runs after an accepted ``set_parameters`` (keys are
    relative to the section, e.g. ``'model.path'``). Raises :class:`ConfigError` when the
    node's initial parameters do not validate.
    """

    def __init__(self, node: Node, schema: type[C], section: str,
                 on_change: Callable[[C, set[str]], None] | None = None,
                 base: C | dict | None = None) -> None:
        self.node = node
        self.schema = schema
        self.section = section
        self.on_change = on_change
        prefix = section + '.'
        source = f'node {node.get_fully_qualified_name()} parameters'
        overrides = {name[len(prefix):]: p.value
                     for name, p in getattr(node, '_parameter_overrides', {}).items()
                     if name.startswith(prefix) and p.value is not None}
        # (an empty list in a parameter file arrives as NOT_SET: the default is kept)
        data = base.model_dump() if isinstance(base, BaseModel) else dict(base or {})
        merged = flatten(data)
        merged.update(overrides)
        try:
            config = schema.model_validate(unflatten(merged))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source)) from err
        self._names: dict[str, str] = {}
        self._initial = flatten(config.model_dump(mode='json'))
        for key, value in self._initial.items():
            info = _field_for(schema, key.split('.'))
            initial = _initial_value(value, info)
            if initial is None:
                continue
            extra = getattr(info, 'json_schema_extra', None) or {}
            descriptor = ParameterDescriptor(
                name=prefix + key, description=getattr(info, 'description', None) or '',
                read_only=bool(extra.get('ros_read_only', False)),
                dynamic_typing=not isinstance(initial, Parameter.Type))
            node.declare_parameter(prefix + key, initial, descriptor)
            self._names[prefix + key] = key
        self._flat = self._read_declared()
        try:
            self._config = schema.model_validate(unflatten(self._flat))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source)) from err
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._apply)

    @property
    def config(self) -> C:
        return self._config

    @property
    def parameter_names(self) -> list[str]:
        return list(self._names)

    def _read_declared(self) -> dict[str, Any]:
        flat = {}
        for name, key in self._names.items():
            try:
                value = self.node.get_parameter(name).value
            except ParameterUninitializedException:
                value = None
            if value is None:
                value = self._initial[key]
            flat[key] = list(value) if isinstance(value, (tuple, list)) or hasattr(
                value, 'tolist') and not isinstance(value, (str, bytes)) else value
        return flat

    def _candidate(self, params: Iterable[Parameter]) -> tuple[dict[str, Any], set[str]]:
        flat = dict(self._flat)
        changed = set()
        for p in params:
            key = self._names.get(p.name)
            if key is None:
                continue
            value = p.value
            if hasattr(value, 'tolist') and not isinstance(value, (str, bytes)):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = list(value)
            flat[key] = value
            changed.add(key)
        return flat, changed

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name in self._names and p.type_ == Parameter.Type.NOT_SET:
                return SetParametersResult(successful=False,
                                           reason=f'{p.name}: cannot be unset')
        flat, changed = self._candidate(params)
        if not changed:
            return SetParametersResult(successful=True)
        try:
            self.schema.model_validate(unflatten(flat))
        except ValidationError as err:
            reason = format_validation_error(err, self.node.get_name())
            log.debug('rejected parameters: %s', reason)
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply(self, params: list[Parameter]) -> None:
        flat, changed = self._candidate(params)
        if not changed:
            return
        self._flat = flat
        self._config = self.schema.model_validate(unflatten(flat))
        if self.on_change is not None:
            self.on_change(self._config, changed)

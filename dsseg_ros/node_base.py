"""What every dsseg node shares: parameters from a schema, throttled warnings, diagnostics.

A subclass calls ``super().__init__(name, Schema, section, ...)``, reads ``self.config``,
creates its subscriptions with :data:`SENSOR_QOS`, hands work to a
:class:`~dsseg_ros.worker.DropOldestWorker` and reports through :meth:`warn` (one log line per
``warn_throttle_s`` and per kind of problem, every occurrence counted) and
:meth:`diagnostic_values` (published on ``/diagnostics`` every ``diagnostics_period_s``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from dsseg_core.config import StageConfig
from dsseg_ros.params import ParameterBinding
from dsseg_ros.worker import DropOldestWorker

__all__ = ['SENSOR_QOS', 'DssegNode', 'ThrottledWarnings']

C = TypeVar('C', bound=StageConfig)

#: Inputs: best effort, keep last 5 (REP 2003); matches reliable and best-effort publishers.
SENSOR_QOS: QoSProfile = qos_profile_sensor_data
#: Outputs: reliable keep-last (drivers and processing nodes publish reliable, REP 2003).
OUTPUT_DEPTH = 5


class ThrottledWarnings:
    """Count problems by kind; log one warning per kind at most every ``period_s``."""

    def __init__(self, log: Callable[[str], Any], period_s: float = 5.0) -> None:
        self._log = log
        self.period_s = period_s
        self.counts: dict[str, int] = {}
        self.emitted: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}
        self._lock = threading.Lock()

    def warn(self, kind: str, message: str) -> bool:
        """Count one ``kind`` problem; log ``message`` unless one was logged recently."""
        now = time.monotonic()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self._since[kind] = self._since.get(kind, 0) + 1
            last = self._last.get(kind)
            if last is not None and now - last < self.period_s:
                return False
            repeats = self._since[kind] - 1
            self._since[kind] = 0
            self._last[kind] = now
            self.emitted[kind] = self.emitted.get(kind, 0) + 1
        suffix = f' ({repeats} more since the last warning)' if repeats else ''
        self._log(f'{message}; message dropped{suffix}')
        return True

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


class DssegNode(Node, Generic[C]):
    """An rclpy node whose parameters are one dsseg stage schema (see module docstring)."""

    def __init__(self, node_name: str, schema: type[C], section: str, *,
                 config: C | dict | None = None, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._closed = False
        self._workers: list[DropOldestWorker] = []
        self.binding: ParameterBinding[C] = ParameterBinding(
            self, schema, section, on_change=self._on_config_change, base=config)
        cfg = self.binding.config
        self.warnings = ThrottledWarnings(self.get_logger().warning,
                                          getattr(cfg, 'warn_throttle_s', 5.0))
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self.create_timer(getattr(cfg, 'diagnostics_period_s', 1.0),
                                             self.publish_diagnostics)

    # -- configuration -------------------------------------------------------------------
    @property
    def config(self) -> C:
        return self.binding.config

    def _on_config_change(self, config: C, changed: set[str]) -> None:
        if 'warn_throttle_s' in changed:
            self.warnings.period_s = config.warn_throttle_s
        if 'diagnostics_period_s' in changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(config.diagnostics_period_s,
                                                 self.publish_diagnostics)
        self.on_config_change(config, changed)

    def on_config_change(self, config: C, changed: set[str]) -> None:
        """Apply an accepted parameter change (override; keys relative to the section)."""

    # -- helpers -------------------------------------------------------------------------
    def warn(self, kind: str, message: str) -> bool:
        return self.warnings.warn(kind, message)

    def add_worker(self, worker: DropOldestWorker) -> DropOldestWorker:
        self._workers.append(worker)
        return worker.start()

    def use_sim_time(self) -> bool:
        return bool(self.get_parameter('use_sim_time').value)

    # -- diagnostics ---------------------------------------------------------------------
    def diagnostic_values(self) -> dict[str, str]:
        """Key/values for /diagnostics (override and extend)."""
        values: dict[str, str] = {}
        for worker in self._workers:
            for key, value in worker.stats().as_key_values().items():
                values[f'{worker.name}.{key}' if len(self._workers) > 1 else key] = value
        for kind, count in sorted(self.warnings.counts.items()):
            values[f'bad.{kind}'] = str(count)
        return values

    def diagnostic_level(self) -> tuple[bytes, str]:
        """``(DiagnosticStatus.OK/WARN/ERROR, message)`` (override)."""
        if self.warnings.total():
            return DiagnosticStatus.WARN, 'bad messages dropped'
        return DiagnosticStatus.OK, 'ok'

    def publish_diagnostics(self) -> None:
        level, message = self.diagnostic_level()
        status = DiagnosticStatus(level=level,
                                  name=f'dsseg: {self.get_fully_qualified_name()}',
                                  message=message, hardware_id='dsseg')
        status.values = [KeyValue(key=k, value=v) for k, v in self.diagnostic_values().items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    # -- shutdown ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker threads (joined) and destroy the node; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            worker.stop()
        self.on_close()
        self.destroy_node()

    def on_close(self) -> None:
        """Release node-specific resources (override)."""


def sim_time_parameter(enabled: bool) -> Parameter:
    return Parameter('use_sim_time', Parameter.Type.BOOL, enabled)

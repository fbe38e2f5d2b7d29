"""Run dsseg nodes in one process (``dsseg run``) and the console scripts' spin loop.

:func:`run_pipeline` starts the segmenter(s), the cloud labeller, optionally a bag player
(replay with ``use_sim_time``) and a recorder, all configured from the same parameter YAML
(``config/dsseg.yaml``) exactly as the launch files do, on one SingleThreadedExecutor: every
callback only hands its message to a node's worker thread, so one executor thread suffices,
and rclpy's MultiThreadedExecutor would only add a thread-pool hop per message.
:func:`spin_nodes` is the shared main loop: clean Ctrl-C (no traceback, worker threads
joined, bag closed), exit code 1 with one error line for configuration problems.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from dsseg_core.config import load_config
from dsseg_core.errors import ConfigError, DssegError
from dsseg_core.nodes_config import CloudLabellerConfig, RunConfig

__all__ = ['PipelineResult', 'build_pipeline', 'run_pipeline', 'spin_nodes']

log = logging.getLogger(__name__)


def _close_all(nodes: Sequence[Node]) -> None:
    for node in reversed(list(nodes)):
        try:
            close = getattr(node, 'close', None)
            close() if close is not None else node.destroy_node()
        except Exception as err:  # noqa: BLE001 - shutting down: report and go on
            log.warning('closing %s: %s', node.get_name(), err)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd, docker, launch's escalation) stops the nodes like Ctrl-C.

    rclpy installs signal handlers only for its default context; these entry points use their
    own context, so they handle SIGTERM themselves (SIGINT is Python's KeyboardInterrupt).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _shutdown_executor(executor: Any) -> None:
    """Stop the executor, wait for running callbacks and collect their results.

    Callback futures that failed during shutdown (a handle destroyed under them) are read
    here, so rclpy does not print "exception was never retrieved" at exit.
    """
    executor.shutdown(timeout_sec=2.0)
    for future in list(getattr(executor, '_futures', [])):
        if future.done() and future.exception() is not None:
            log.debug('callback failed during shutdown: %s', future.exception())


def spin_nodes(factory: Callable[[Context], list[Node]], args: Sequence[str] | None = None,
               name: str = 'dsseg', stop_when: Callable[[list[Node]], bool] | None = None,
               context: Context | None = None) -> int:
    """Init a context (``args``: ROS arguments, None = ``sys.argv``), build the nodes, spin.

    Returns 0 on Ctrl-C / shutdown / ``stop_when(nodes)`` becoming true, 1 when building the
    nodes raised a :class:`DssegError` (printed as one line on stderr).
    """
    own = context is None
    context = context or Context()
    if own:
        rclpy.init(args=list(args) if args is not None else None, context=context)
    nodes: list[Node] = []
    executor = None
    try:
        try:
            nodes = factory(context)
        except DssegError as err:
            print(f'{name}: error: {err}', file=sys.stderr)
            return 1
        if stop_when is None:
            stop_when = _default_stop
        executor = SingleThreadedExecutor(context=context)
        for node in nodes:
            executor.add_node(node)
        with _sigterm_as_interrupt():
            while context.ok() and not stop_when(nodes):
                executor.spin_once(timeout_sec=0.1)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if executor is not None:
            _shutdown_executor(executor)
        _close_all(nodes)
        if own:
            rclpy.try_shutdown(context=context)


def _default_stop(nodes: list[Node]) -> bool:
    """Stop when a bag player finished (not looping) and asks to exit at the end."""
    for node in nodes:
        done = getattr(node, 'done', None)
        cfg = getattr(node, 'config', None)
        if done is not None and done.is_set() and getattr(cfg, 'exit_when_done', False) \
                and not getattr(cfg, 'loop', False):
            return True
    return False


@dataclass
class PipelineResult:
    """What ``dsseg run`` reports: each node's final diagnostics key/values."""

    stats: dict[str, dict[str, str]] = field(default_factory=dict)
    recorded: str | None = None


def _ros_args(config: str | None, params: dict[str, Any]) -> list[str]:
    args = ['--ros-args']
    if config:
        args += ['--params-file', str(config)]
    for key, value in params.items():
        if value is None:
            continue
        text = ('true' if value else 'false') if isinstance(value, bool) else str(value)
        args += ['-p', f'{key}:={text}']
    return args


def build_pipeline(context: Context, config: str | None = None, *, replay: str | None = None,
                   model: str | None = None, rate: float | None = None,
                   record: str | None = None, loop: bool = False,
                   predictor: Any = None, student: str | None = None) -> list[Node]:
    """Create the nodes ``dsseg run`` runs (see module docstring); ``predictor`` for tests."""
    from dsseg_ros.bag_player_node import BagPlayerNode, RecorderNode
    from dsseg_ros.cloud_labeller_node import CloudLabellerNode
    from dsseg_ros.segmenter_node import SegmenterNode

    run_cfg = load_config(RunConfig, config, section='run')
    sim = [Parameter('use_sim_time', Parameter.Type.BOOL, True)] if replay else []
    nodes: list[Node] = []
    try:
        for name in run_cfg.segmenters:
            args = _ros_args(config, {'segmenter.model.path': model})
            nodes.append(SegmenterNode(name, context=context, cli_args=args,
                                       parameter_overrides=list(sim), predictor=predictor))
        num_classes = getattr(nodes[0].predictor, 'num_classes', None) if nodes else None
        if run_cfg.cloud_labeller:
            params: dict[str, Any] = {'cloud_labeller.student.path': student}
            lab = load_config(CloudLabellerConfig, config, section='cloud_labeller')
            tf_msgs = importlib.util.find_spec('tf2_msgs') is not None
            if replay and not tf_msgs and not lab.tf_static_bag and not (
                    lab.extrinsics != 'tf' and lab.calibration_file):
                params['cloud_labeller.tf_static_bag'] = replay
            nodes.append(CloudLabellerNode(
                'cloud_labeller', context=context, cli_args=_ros_args(config, params),
                parameter_overrides=list(sim), num_classes=num_classes))
        if record:
            nodes.append(RecorderNode('recorder', context=context, parameter_overrides=list(sim),
                                      cli_args=_ros_args(config, {'recorder.output': record})))
        if replay:
            nodes.append(BagPlayerNode('bag_player', context=context, cli_args=_ros_args(
                config, {'bag_player.bag': replay, 'bag_player.rate': rate,
                         'bag_player.loop': loop or None})))
    except BaseException:
        _close_all(nodes)
        raise
    return nodes


def _workers_idle(nodes: list[Node], timeout: float) -> None:
    for node in nodes:
        for worker in getattr(node, '_workers', []):
            worker.wait_idle(timeout)


def _spin_pipeline(context: Context, executor: SingleThreadedExecutor, nodes: list[Node],
                   duration_s: float | None, settle_s: float) -> None:
    t0 = time.monotonic()
    end_at: float | None = None
    while context.ok():
        executor.spin_once(timeout_sec=0.05)
        now = time.monotonic()
        if duration_s is not None and now - t0 >= duration_s:
            return
        if end_at is None and _default_stop(nodes):
            end_at = now + settle_s
        if end_at is not None and now >= end_at:
            _workers_idle(nodes, 2.0)
            for _ in range(10):  # deliver the last outputs to the recorder
                executor.spin_once(timeout_sec=0.02)
            return


def run_pipeline(config: str | None = None, *, replay: str | None = None,
                 model: str | None = None, rate: float | None = None,
                 record: str | None = None, loop: bool = False,
                 duration_s: float | None = None, settle_s: float = 1.0,
                 predictor: Any = None, args: Sequence[str] | None = None,
                 student: str | None = None) -> PipelineResult:
    """Run the pipeline until Ctrl-C, ``duration_s``, or the end of the replayed bag.

    At the end of a replay the nodes get ``settle_s`` seconds to finish the last frames.
    """
    if config is not None and not str(config):
        raise ConfigError('empty --config path')
    context = Context()
    rclpy.init(args=list(args or []), context=context)
    result = PipelineResult(recorded=record)
    nodes: list[Node] = []
    executor = None
    try:
        nodes = build_pipeline(context, config, replay=replay, model=model, rate=rate,
                               record=record, loop=loop, predictor=predictor,
                               student=student)
        executor = SingleThreadedExecutor(context=context)
        for node in nodes:
            executor.add_node(node)
        with _sigterm_as_interrupt():
            _spin_pipeline(context, executor, nodes, duration_s, settle_s)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            if hasattr(node, 'diagnostic_values'):
                try:
                    result.stats[node.get_name()] = node.diagnostic_values()
                except Exception:  # noqa: BLE001
                    pass
        if executor is not None:
            _shutdown_executor(executor)
        _close_all(nodes)
        rclpy.try_shutdown(context=context)
    return result

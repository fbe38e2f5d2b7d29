"""``bag_player`` node: republish a bag with its original timing, and a simple recorder.

:class:`BagPlayerNode` reads a rosbag2 (mcap/sqlite3) or ROS 1 bag with
:mod:`dsseg_core.bag.reader` and republishes the *serialized* messages as they are (no
decode/re-encode; ROS 1 messages are converted to CDR by the reader), each at
``first + (record_time - first_record_time) / rate`` of wall time, on the original topic with
its original type. Parameters (section ``bag_player``): ``bag``, ``rate``, ``loop``,
``start_offset_s``, ``topics`` (empty = all), ``publish_clock`` / ``clock_rate_hz``
(``/clock``, rosgraph_msgs/Clock, so nodes with ``use_sim_time: true`` run on bag time),
``queue_depth``. ``/tf_static`` is published with transient-local durability (late joiners
get it) and always in full, whatever the start offset. Topics whose message package is not
installed for rclpy are skipped with one warning (``tf2_msgs`` is not in the pip ROS wheels:
give the cloud labeller ``tf_static_bag`` or a calibration YAML then).

:class:`RecorderNode` (section ``recorder``) subscribes topics as serialized messages
(``raw=True``) and writes them unchanged to a rosbag2 mcap folder with rosbags' Writer (the
folder appears complete on close; while recording it is a hidden ``.NAME.tmp`` sibling).
``ros2 bag record -s mcap TOPICS`` does the same on a machine with a ROS install.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from dsseg_core.errors import BagError, ConfigError
from dsseg_core.nodes_config import BagPlayerConfig, RecorderConfig
from dsseg_ros.conversions import time_msg
from dsseg_ros.node_base import SENSOR_QOS, DssegNode

__all__ = ['BagPlayerNode', 'RecorderNode', 'main', 'message_class']

TF_STATIC_QOS = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                           reliability=ReliabilityPolicy.RELIABLE)


def message_class(msgtype: str) -> type | None:
    """``'sensor_msgs/msg/Image'`` -> the rclpy class, or None when not installed."""
    parts = msgtype.split('/')
    if len(parts) == 2:  # ROS 1 style 'pkg/Type'
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3:
        return None
    try:
        module = importlib.import_module(f'{parts[0]}.{parts[1]}')
    except ImportError:
        return None
    return getattr(module, parts[2], None)


class BagPlayerNode(DssegNode[BagPlayerConfig]):
    """See the module docstring. Call :meth:`start` (done by :func:`dsseg_ros.run`)."""

    def __init__(self, node_name: str = 'bag_player', *,
                 config: BagPlayerConfig | dict | None = None, autostart: bool = True,
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, BagPlayerConfig, 'bag_player', config=config,
                         **node_kwargs)
        cfg = self.config
        if not cfg.bag:
            raise ConfigError(f'{self.get_name()}: parameter bag_player.bag is empty; give the '
                              'bag to play (-p bag_player.bag:=PATH or dsseg run --replay PATH)')
        from dsseg_core.bag.reader import open_bag

        with open_bag(cfg.bag) as bag:
            available = bag.topics
            wanted = list(cfg.topics) or list(available)
            bag.require_topics(wanted)
        self.publishers_by_topic: dict[str, Any] = {}
        self.skipped_topics: dict[str, str] = {}
        for topic in wanted:
            msgtype = available[topic].msgtype
            cls = message_class(msgtype)
            if cls is None:
                self.skipped_topics[topic] = msgtype
                continue
            qos = TF_STATIC_QOS if topic.endswith('tf_static') else cfg.queue_depth
            self.publishers_by_topic[topic] = self.create_publisher(cls, topic, qos)
        if self.skipped_topics:
            self.get_logger().warning(
                'not replayed (message package not installed for rclpy): ' + ', '.join(
                    f'{t} [{m}]' for t, m in self.skipped_topics.items()))
        self.pub_clock = self.create_publisher(Clock, '/clock', 10) if cfg.publish_clock \
            else None
        self.published: dict[str, int] = dict.fromkeys(self.publishers_by_topic, 0)
        self.late = 0
        self.loops = 0
        self.bag_time_ns: int | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.get_logger().info(
            f'playing {cfg.bag}: {len(self.publishers_by_topic)} topics at rate {cfg.rate}'
            f'{" (loop)" if cfg.loop else ""}')
        if autostart:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._play_safe, name='bag-player',
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def on_close(self) -> None:
        self.stop()

    # -- player thread -------------------------------------------------------------------
    def _play_safe(self) -> None:
        try:
            while not self._stop.is_set():
                self._play_once()
                self.loops += 1
                if not self.config.loop:
                    break
        except BagError as err:
            self.get_logger().error(f'playback stopped: {err}')
        except Exception as err:  # noqa: BLE001 - report, do not kill the process silently
            if not self._stop.is_set():
                self.get_logger().error(f'playback failed: {type(err).__name__}: {err}')
        finally:
            self.done.set()

    def _publish_clock(self, bag_ns: int) -> None:
        self.bag_time_ns = bag_ns
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=time_msg(bag_ns)))

    def _play_once(self) -> None:
        from dsseg_core.bag.reader import open_bag

        cfg = self.config
        with open_bag(cfg.bag) as bag:
            begin: int | None = None   # first record time of the bag + start offset
            wall0 = 0.0
            offset_ns = int(cfg.start_offset_s * 1e9)
            for raw in bag.raw_messages(list(self.publishers_by_topic)):
                if self._stop.is_set():
                    return
                pub = self.publishers_by_topic[raw.topic]
                if begin is None:
                    begin = raw.log_time_ns + offset_ns
                if raw.log_time_ns < begin:
                    if raw.topic.endswith('tf_static'):
                        pub.publish(raw.data)
                    continue
                if wall0 == 0.0:
                    wall0 = time.monotonic()
                    self._publish_clock(begin)
                target = wall0 + (raw.log_time_ns - begin) / 1e9 / self.config.rate
                self._wait_until(target, begin, wall0)
                if time.monotonic() - target > 0.05:
                    self.late += 1
                self._publish_clock(raw.log_time_ns)
                pub.publish(raw.data)
                self.published[raw.topic] += 1

    def _wait_until(self, target: float, first: int, wall0: float) -> None:
        period = 1.0 / self.config.clock_rate_hz
        while not self._stop.is_set():
            left = target - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, period))
            now = time.monotonic()
            if self.pub_clock is not None and now < target:
                self._publish_clock(first + int((now - wall0) * self.config.rate * 1e9))

    def diagnostic_values(self) -> dict[str, str]:
        values = super().diagnostic_values()
        values.update({f'published.{t}': str(n) for t, n in self.published.items()})
        values['late_messages'] = str(self.late)
        values['loops'] = str(self.loops)
        values['done'] = str(self.done.is_set())
        if self.bag_time_ns is not None:
            values['bag_time_s'] = f'{self.bag_time_ns / 1e9:.3f}'
        return values


class RecorderNode(DssegNode[RecorderConfig]):
    """See the module docstring. The bag is complete after :meth:`close`."""

    def __init__(self, node_name: str = 'recorder', *, config: RecorderConfig | dict | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, RecorderConfig, 'recorder', config=config, **node_kwargs)
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        cfg = self.config
        if not cfg.output:
            raise ConfigError(f'{self.get_name()}: parameter recorder.output is empty')
        self.output = Path(cfg.output)
        # rosbags names the .mcap after its folder: write OUT into a hidden parent, move it.
        self._tmp_root = self.output.parent / f'.{self.output.name}.tmp'
        self._tmp = self._tmp_root / self.output.name
        if self._tmp_root.exists():
            shutil.rmtree(self._tmp_root)
        self._tmp_root.mkdir(parents=True)
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(self._tmp, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._lock = threading.Lock()
        self._connections: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self._qos = 10 if cfg.reliable else SENSOR_QOS
        self._timer = self.create_timer(0.2, self._discover)
        self._discover()
        self.get_logger().info(f'recording {", ".join(cfg.topics)} to {self.output}')

    def _discover(self) -> None:
        types = dict(self.get_topic_names_and_types())
        for topic in self.config.topics:
            if topic in self._subs or topic not in types or not types[topic]:
                continue
            msgtype = types[topic][0]
            cls = message_class(msgtype)
            if cls is None:
                self.warn(f'unknown_type.{topic}', f'{topic}: type {msgtype} not installed')
                continue
            with self._lock:
                if self._writer is None:
                    return
                self._connections[topic] = self._writer.add_connection(
                    topic, msgtype, typestore=self._typestore)
            self.counts[topic] = 0
            self._subs[topic] = self.create_subscription(
                cls, topic, lambda data, t=topic: self._on_message(t, data), self._qos,
                raw=True)
        if all(t in self._subs for t in self.config.topics):
            self._timer.cancel()

    def _on_message(self, topic: str, data: bytes) -> None:
        stamp = self.get_clock().now().nanoseconds
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(self._connections[topic], stamp, data)
            self.counts[topic] += 1

    def diagnostic_values(self) -> dict[str, str]:
        values = super().diagnostic_values()
        values.update({f'recorded.{t}': str(n) for t, n in self.counts.items()})
        return values

    def on_close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        if self.output.exists():
            shutil.rmtree(self.output)
        os.replace(self._tmp, self.output)
        shutil.rmtree(self._tmp_root, ignore_errors=True)
        self.get_logger().info(f'recorded {sum(self.counts.values())} messages to '
                               f'{self.output}')


def main(args: list[str] | None = None) -> int:
    """Console script ``bag_player``; exits at the end of the bag unless looping."""
    from dsseg_ros.run import spin_nodes

    return spin_nodes(lambda ctx: [BagPlayerNode(context=ctx)], args, name='bag_player')


if __name__ == '__main__':
    sys.exit(main())

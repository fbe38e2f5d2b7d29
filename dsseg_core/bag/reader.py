"""Open ROS bags (rosbag2 sqlite3 / mcap, ROS 1) with ``rosbags`` and read their messages.

``open_bag(path)`` returns a :class:`BagSource` (a context manager). Every problem the
``rosbags`` reader reports (missing path, not a bag, truncated or corrupt storage, unknown
message definitions) comes out as one :class:`~dsseg_core.errors.BagError` naming the file and
what to do; a missing topic is a :class:`~dsseg_core.errors.TopicError` listing the topics the
bag has.

Message stamps (``stamp_ns``) are the header stamps when the message type starts with a
``std_msgs/Header`` (read straight from the serialized bytes, without deserializing), else the
bag's record time.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from dsseg_core.errors import BagError, TopicError

__all__ = [
    'CAMERA_INFO_TYPES',
    'CLOUD_TYPES',
    'IMAGE_TYPES',
    'TF_TYPES',
    'BagSource',
    'RawMessage',
    'StampScan',
    'TopicInfo',
    'TopicSelection',
    'camera_name_from_topic',
    'discover_topics',
    'open_bag',
]

log = logging.getLogger(__name__)

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
CAMERA_INFO_TYPES = ('sensor_msgs/msg/CameraInfo',)
CLOUD_TYPES = ('sensor_msgs/msg/PointCloud2',)
TF_TYPES = ('tf2_msgs/msg/TFMessage',)
HEADER_TYPE = 'std_msgs/msg/Header'

# Topic name components that describe an image stream rather than the camera itself.
_IMAGE_SUFFIXES = {
    'image', 'image_raw', 'image_rect', 'image_color', 'image_rect_color', 'image_mono',
    'image_rect_raw', 'compressed', 'compresseddepth', 'camera_info', 'rgb', 'color',
}

_HINT = ('check that PATH is a rosbag2 folder (with metadata.yaml and a .mcap/.db3 file), '
         'a single .mcap/.db3 file or a ROS 1 .bag file')


@dataclass(frozen=True)
class TopicInfo:
    """A topic's message type and message count."""

    msgtype: str
    count: int


@dataclass(frozen=True)
class RawMessage:
    """A serialized message: ``data`` is CDR (ROS 2) bytes, ready to republish."""

    topic: str
    msgtype: str
    log_time_ns: int
    stamp_ns: int
    data: bytes


@dataclass
class StampScan:
    """Result of :meth:`BagSource.scan_stamps`: per topic, header stamps and record times
    (int64 ns, record order), and the serialized bytes kept for the first messages
    (``cache[(topic, index)] = (stamp_ns, msgtype, data)``)."""

    stamps: dict[str, np.ndarray]
    log_times: dict[str, np.ndarray]
    cache: dict[tuple[str, int], tuple[int, str, bytes]] = field(default_factory=dict)


@dataclass
class TopicSelection:
    """Topics found by type: ``camera_info_of`` maps each image topic to its CameraInfo."""

    images: list[str] = field(default_factory=list)
    camera_infos: list[str] = field(default_factory=list)
    clouds: list[str] = field(default_factory=list)
    tf_static: str | None = None
    camera_info_of: dict[str, str | None] = field(default_factory=dict)


def camera_name_from_topic(topic: str) -> str:
    """``/kitti/camera_color_left/image_raw/compressed`` -> ``camera_color_left``."""
    parts = [p for p in topic.split('/') if p]
    while len(parts) > 1 and parts[-1].lower() in _IMAGE_SUFFIXES:
        parts.pop()
    name = parts[-1] if parts else 'camera'
    return re.sub(r'[^A-Za-z0-9_]+', '_', name)


def _namespace(topic: str) -> str:
    """The camera namespace of an image or camera_info topic (suffix components removed)."""
    parts = [p for p in topic.split('/') if p]
    while parts and parts[-1].lower() in _IMAGE_SUFFIXES:
        parts.pop()
    return '/' + '/'.join(parts)


def match_camera_info(image_topic: str, info_topics: Sequence[str]) -> str | None:
    """The CameraInfo topic in the image topic's namespace: the same namespace first, else the
    one sharing the longest namespace prefix; None when none is related."""
    ns = _namespace(image_topic)
    best, best_score = None, (-1, -1)
    for info in info_topics:
        info_ns = _namespace(info)
        if ns == info_ns or ns.startswith(info_ns + '/') or info_ns.startswith(ns + '/'):
            score = (int(ns == info_ns), min(len(ns), len(info_ns)))
            if score > best_score:
                best, best_score = info, score
    return best


def _is_depth_topic(topic: str) -> bool:
    return any('depth' in part.lower() for part in topic.split('/'))


class BagSource:
    """An open bag. Use through :func:`open_bag` as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: Any = None
        self._conns: dict[str, list[Any]] = {}
        self._topics: dict[str, TopicInfo] = {}
        self._header_first: dict[str, bool] = {}
        self._cdr_store: Any = None
        self.is_ros2 = True

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> BagSource:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        paths = [self.path]
        if self.path.is_file() and self.path.suffix == '.bag':
            self.is_ros2 = False
        elif self.path.is_file() and self.path.suffix in ('.mcap', '.db3') and (
                self.path.parent / 'metadata.yaml').exists():
            paths = [self.path.parent]
        elif self.path.is_file() and self.path.suffix not in ('.mcap', '.db3'):
            raise BagError(f'{self.path}: not a bag (unknown extension {self.path.suffix!r}); '
                           f'{_HINT}')
        elif self.path.is_dir() and not (self.path / 'metadata.yaml').exists():
            raise BagError(f'{self.path}: not a rosbag2 folder (no metadata.yaml); {_HINT}')
        try:
            reader = AnyReader(paths, default_typestore=get_typestore(Stores.ROS2_KILTED))
            reader.open()
        except Exception as err:  # rosbags raises many types for unreadable storage
            raise BagError(f'{self.path}: cannot open bag ({_describe(err)}); the file may be '
                           'truncated or corrupt (copy it again; a truncated .mcap can be '
                           f'salvaged with "mcap recover"), or {_HINT}') from err
        self._reader = reader
        self.is_ros2 = reader.is2
        conns: dict[str, list[Any]] = {}
        for conn in reader.connections:
            conns.setdefault(conn.topic, []).append(conn)
        self._conns = conns
        self._topics = {
            topic: TopicInfo(cs[0].msgtype, int(sum(c.msgcount for c in cs)))
            for topic, cs in sorted(conns.items())
        }
        fielddefs = reader.typestore.fielddefs
        for info in self._topics.values():
            fields = fielddefs.get(info.msgtype, ((), []))[1]
            self._header_first[info.msgtype] = bool(
                fields and fields[0][0] == 'header' and fields[0][1][1] == HEADER_TYPE
            )
        return self

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ queries
    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Every topic with its message type and count, sorted by name."""
        return dict(self._topics)

    def require_topics(self, topics: Iterable[str],
                       msgtypes: Sequence[str] | None = None) -> list[str]:
        """Check topics exist (and have one of ``msgtypes``); :class:`TopicError` otherwise."""
        topics = list(topics)
        for topic in topics:
            if topic not in self._topics:
                raise TopicError(
                    f'{self.path}: topic {topic!r} is not in the bag; available topics: '
                    f'{self.describe_topics()}'
                )
            if msgtypes and self._topics[topic].msgtype not in msgtypes:
                raise TopicError(
                    f'{self.path}: topic {topic!r} has type {self._topics[topic].msgtype}, '
                    f'expected one of {", ".join(msgtypes)}'
                )
        return topics

    def describe_topics(self) -> str:
        if not self._topics:
            return '(none: the bag is empty)'
        return ', '.join(f'{t} [{i.msgtype}, {i.count}]' for t, i in self._topics.items())

    def _connections(self, topics: Iterable[str]) -> list[Any]:
        return [c for t in self.require_topics(topics) for c in self._conns[t]]

    def _iter_raw(self, topics: Iterable[str], start: int | None = None
                  ) -> Iterator[tuple[Any, int, bytes]]:
        if self._reader is None:
            raise BagError(f'{self.path}: bag is not open (use "with open_bag(path) as bag:")')
        conns = self._connections(topics)
        if not conns:
            return
        gen = self._reader.messages(connections=conns, start=start)
        while True:
            try:
                item = next(gen)
            except StopIteration:
                return
            except Exception as err:  # noqa: BLE001 - any storage failure means a broken bag
                raise BagError(
                    f'{self.path}: cannot read messages ({_describe(err)}); the bag is '
                    'truncated or corrupt: copy it again (a truncated .mcap can be salvaged '
                    'with "mcap recover")'
                ) from err
            yield item

    def header_stamp(self, msgtype: str, raw: bytes | memoryview, log_time_ns: int) -> int:
        """Header stamp from serialized bytes; the record time for header-less types."""
        if not self._header_first.get(msgtype, False) or len(raw) < 12:
            return int(log_time_ns)
        if self.is_ros2:
            fmt = '<iI' if raw[1] & 1 else '>iI'
        else:
            fmt = '<II'  # ROS 1: uint32 seq, then time (sec, nsec)
        sec, nsec = struct.unpack_from(fmt, raw, 4)
        return int(sec) * 1_000_000_000 + int(nsec)

    def header_frame_id(self, topic: str, scan: StampScan | None = None) -> str:
        """``header.frame_id`` of the first message of ``topic`` (parsed from the serialized
        bytes when ``scan`` caches it, else by deserializing it); '' for header-less types."""
        if scan is not None and (topic, 0) in scan.cache:
            _stamp, msgtype, raw = scan.cache[(topic, 0)]
            if self._header_first.get(msgtype, False):
                try:
                    if self.is_ros2:
                        fmt = '<I' if raw[1] & 1 else '>I'
                    else:
                        fmt = '<I'
                    (size,) = struct.unpack_from(fmt, raw, 12)
                    text = bytes(raw[16:16 + size])
                    return text.rstrip(b'\x00').decode('utf-8')
                except (struct.error, UnicodeDecodeError):
                    pass
        msg = self.first_message(topic)
        return str(getattr(getattr(msg, 'header', None), 'frame_id', '') or '')

    def scan_stamps(self, topics: Iterable[str], cache_bytes: int = 0) -> StampScan:
        """One pass over ``topics``: header stamps and record times, no deserialization.

        The serialized bytes of the first messages are kept in :attr:`StampScan.cache` until
        ``cache_bytes`` would be exceeded, so that :meth:`indexed_messages` does not have to
        read them again (a bag smaller than the cache is read once).
        """
        topics = list(topics)
        stamps: dict[str, list[int]] = {t: [] for t in topics}
        log_times: dict[str, list[int]] = {t: [] for t in topics}
        cache: dict[tuple[str, int], tuple[int, str, bytes]] = {}
        cached = 0
        caching = cache_bytes > 0
        for conn, log_time, raw in self._iter_raw(topics):
            topic = conn.topic
            stamp = self.header_stamp(conn.msgtype, raw, log_time)
            if caching:
                if cached + len(raw) <= cache_bytes:
                    cache[(topic, len(stamps[topic]))] = (stamp, conn.msgtype, bytes(raw))
                    cached += len(raw)
                else:
                    caching = False
            stamps[topic].append(stamp)
            log_times[topic].append(int(log_time))
        return StampScan(
            {t: np.asarray(v, dtype=np.int64) for t, v in stamps.items()},
            {t: np.asarray(v, dtype=np.int64) for t, v in log_times.items()},
            cache,
        )

    def stamps(self, topics: Iterable[str]) -> dict[str, np.ndarray]:
        """Header stamps (int64 ns, bag order) of every message of each topic; no decoding."""
        return self.scan_stamps(topics).stamps

    def deserialize(self, raw: bytes | memoryview, msgtype: str, topic: str = '?') -> Any:
        try:
            return self._reader.deserialize(raw, msgtype)
        except Exception as err:  # noqa: BLE001
            raise BagError(f'{self.path}: topic {topic!r}: cannot deserialize a {msgtype} '
                           f'message ({_describe(err)}); the bag may be corrupt') from err

    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, int, Any]]:
        """``(topic, stamp_ns, msg)`` for the topics, in record order, deserialized."""
        for conn, log_time, raw in self._iter_raw(topics):
            stamp = self.header_stamp(conn.msgtype, raw, log_time)
            yield conn.topic, stamp, self.deserialize(raw, conn.msgtype, conn.topic)

    def indexed_messages(self, topics: Iterable[str], wanted: dict[str, set[int]],
                         scan: StampScan | None = None) -> Iterator[tuple[str, int, int, Any]]:
        """``(topic, index, stamp_ns, msg)`` deserializing only ``wanted[topic]`` indices.

        ``index`` counts the messages of that topic in record order (the same order as
        :meth:`stamps`). With the ``scan`` of :meth:`scan_stamps`, cached messages come from
        memory first (and leave the cache), and the bag is read again only from the record
        time of the first wanted message that was not cached. Stops once all were yielded.
        """
        topics = list(topics)
        remaining = {(t, i) for t in topics for i in wanted.get(t, ())}
        if scan is not None and scan.cache:
            for key in [k for k in scan.cache if k in remaining]:
                stamp, msgtype, raw = scan.cache.pop(key)
                remaining.discard(key)
                yield key[0], key[1], stamp, self.deserialize(raw, msgtype, key[0])
        if not remaining:
            return
        start = None
        counters = dict.fromkeys(topics, 0)
        if scan is not None:
            start = min(int(scan.log_times[t][i]) for t, i in remaining)
            for t in topics:
                counters[t] = int(np.searchsorted(scan.log_times[t], start, side='left'))
        for conn, log_time, raw in self._iter_raw(topics, start):
            idx = counters[conn.topic]
            counters[conn.topic] = idx + 1
            key = (conn.topic, idx)
            if key in remaining:
                remaining.discard(key)
                stamp = self.header_stamp(conn.msgtype, raw, log_time)
                yield conn.topic, idx, stamp, self.deserialize(raw, conn.msgtype, conn.topic)
                if not remaining:
                    return

    def raw_messages(self, topics: Iterable[str]) -> Iterator[RawMessage]:
        """Serialized messages (always CDR: ROS 1 messages are converted) for republishing."""
        for conn, log_time, raw in self._iter_raw(topics):
            stamp = self.header_stamp(conn.msgtype, raw, log_time)
            data = raw
            if not self.is_ros2:
                try:
                    data = self._cdr_typestore().ros1_to_cdr(raw, conn.msgtype)
                except Exception as err:  # noqa: BLE001
                    raise BagError(f'{self.path}: topic {conn.topic!r}: cannot convert a ROS 1 '
                                   f'{conn.msgtype} message to CDR ({_describe(err)})') from err
            yield RawMessage(conn.topic, conn.msgtype, int(log_time), stamp, bytes(data))

    def _cdr_typestore(self) -> Any:
        """The bag's types with the ROS 2 Header (no ``seq``), for ROS 1 → CDR conversion."""
        if self._cdr_store is None:
            from rosbags.typesys import Stores, get_typestore

            header = get_typestore(Stores.ROS2_KILTED).fielddefs['std_msgs/msg/Header']
            store = get_typestore(Stores.EMPTY)
            store.register({**self._reader.typestore.fielddefs, 'std_msgs/msg/Header': header})
            self._cdr_store = store
        return self._cdr_store

    def first_message(self, topic: str, scan: StampScan | None = None) -> Any:
        """The first message of ``topic`` (deserialized; from ``scan``'s cache when there);
        :class:`TopicError` if it has none."""
        if scan is not None and (topic, 0) in scan.cache:
            _stamp, msgtype, raw = scan.cache[(topic, 0)]
            return self.deserialize(raw, msgtype, topic)
        for _topic, _stamp, msg in self.messages([topic]):
            return msg
        raise TopicError(f'{self.path}: topic {topic!r} has no messages')

    def all_messages(self, topic: str, scan: StampScan | None = None) -> list[Any]:
        """Every message of a (small) topic, deserialized; from ``scan``'s cache when it
        holds them all."""
        count = self.topics[topic].count if topic in self._topics else 0
        if scan is not None and count and all((topic, i) in scan.cache for i in range(count)):
            return [self.deserialize(scan.cache[(topic, i)][2], scan.cache[(topic, i)][1], topic)
                    for i in range(count)]
        return [msg for _t, _s, msg in self.messages([topic])]


def _describe(err: BaseException) -> str:
    text = str(err).strip().replace('\n', ' ') or type(err).__name__
    return f'{type(err).__name__}: {text}' if type(err).__name__ not in text else text


def open_bag(path: str | os.PathLike[str]) -> BagSource:
    """Open a bag (rosbag2 folder or .mcap/.db3 file, ROS 1 .bag). Use with ``with``."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'{path}: no such file or folder; give the path of a rosbag2 folder '
                       '(with metadata.yaml) or a ROS 1 .bag file')
    return BagSource(path).open()


def discover_topics(bag: BagSource) -> TopicSelection:
    """Find camera, CameraInfo, PointCloud2 and /tf_static topics by message type.

    Image topics with a ``depth`` namespace component (RGB-D depth streams) are left out; one
    image topic is kept per camera namespace (the raw Image when both raw and compressed are
    recorded). Name topics explicitly (``frames.image_topics``) to override.
    """
    sel = TopicSelection()
    for topic, info in bag.topics.items():
        if info.msgtype in IMAGE_TYPES:
            if not _is_depth_topic(topic):  # depth images are not camera pictures
                sel.images.append(topic)
        elif info.msgtype in CAMERA_INFO_TYPES:
            sel.camera_infos.append(topic)
        elif info.msgtype in CLOUD_TYPES:
            sel.clouds.append(topic)
        elif info.msgtype in TF_TYPES and topic.rstrip('/').endswith('tf_static'):
            sel.tf_static = topic
    # A camera published both raw and compressed: keep one image topic per namespace (raw).
    by_ns: dict[str, str] = {}
    for topic in sel.images:
        ns = _namespace(topic)
        if ns not in by_ns or bag.topics[topic].msgtype == 'sensor_msgs/msg/Image':
            by_ns[ns] = topic
    sel.images = sorted(by_ns.values())
    for topic in sel.images:
        info = match_camera_info(topic, sel.camera_infos)
        if info is None and len(sel.images) == 1 and len(sel.camera_infos) == 1:
            info = sel.camera_infos[0]
        sel.camera_info_of[topic] = info
    return sel

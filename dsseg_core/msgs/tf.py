"""A small TF tree: static and time-stamped transforms, lookups through chains of frames.

Each edge stores ``T_parent_child`` (4x4 float64), the transform in a ``TransformStamped``
with ``header.frame_id = parent`` and ``child_frame_id = child``: it maps points expressed in
the child frame into the parent frame. ``lookup(target, source)`` returns ``T_target_source``
(``p_target = T @ [p_source, 1]``), walking up from both frames to their common ancestor and
inverting edges on the way down.

Dynamic edges keep a short, time-sorted history (``cache_ns``, at most ``max_history``
entries); a lookup at ``stamp_ns`` interpolates linearly (translation lerp + quaternion slerp)
or takes the nearest sample (``interpolation='nearest'``). A stamp outside the history by
more than ``extrapolation_ns`` is an error rather than a silent guess. ``stamp_ns=None``
takes the latest sample of every edge.

Quaternions are ``(x, y, z, w)`` in messages and in this module's helpers; transforms3d,
used underneath, orders them ``(w, x, y, z)``.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsseg_core.errors import CalibrationError
from dsseg_core.msgs.buffer import stamp_to_ns

__all__ = [
    'TransformTree',
    'invert_transform',
    'transform_from_xyz_quat',
    'xyz_quat_from_transform',
]

log = logging.getLogger(__name__)


def transform_from_xyz_quat(xyz: Any, quat_xyzw: Any) -> np.ndarray:
    """4x4 float64 transform from a translation and a unit quaternion ``(x, y, z, w)``.

    The quaternion is normalised; a zero quaternion is a :class:`CalibrationError`.
    """
    from transforms3d.quaternions import quat2mat

    t = np.asarray(xyz, dtype=np.float64).reshape(3)
    q = np.asarray(quat_xyzw, dtype=np.float64).reshape(4)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise CalibrationError(f'transform rotation quaternion {q.tolist()} (x, y, z, w) is '
                               'zero or not finite; a valid rotation needs a unit quaternion')
    if not np.all(np.isfinite(t)):
        raise CalibrationError(f'transform translation {t.tolist()} is not finite')
    q = q / norm
    out = np.eye(4)
    out[:3, :3] = quat2mat([q[3], q[0], q[1], q[2]])
    out[:3, 3] = t
    return out


def xyz_quat_from_transform(transform: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz (3,), quat_xyzw (4,))`` of a 4x4 rigid transform (w >= 0 by convention)."""
    from transforms3d.quaternions import mat2quat

    mat = np.asarray(transform, dtype=np.float64)
    if mat.shape != (4, 4):
        raise CalibrationError(f'expected a 4x4 transform, got shape {mat.shape}')
    w, x, y, z = mat2quat(mat[:3, :3])
    q = np.array([x, y, z, w], dtype=np.float64)
    if q[3] < 0:
        q = -q
    return mat[:3, 3].copy(), q / np.linalg.norm(q)


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (``R.T``, ``-R.T @ t``)."""
    rot = transform[:3, :3]
    out = np.eye(4)
    out[:3, :3] = rot.T
    out[:3, 3] = -rot.T @ transform[:3, 3]
    return out


def _slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # shortest path
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + u * (q1 - q0)
    else:
        theta = np.arccos(np.clip(dot, -1.0, 1.0))
        q = (np.sin((1 - u) * theta) * q0 + np.sin(u * theta) * q1) / np.sin(theta)
    return q / np.linalg.norm(q)


@dataclass
class _Edge:
    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    xyz: list[np.ndarray] = field(default_factory=list)
    quat: list[np.ndarray] = field(default_factory=list)  # (x, y, z, w)


def _clean(frame: str) -> str:
    return str(frame or '').strip().lstrip('/')


class TransformTree:
    """Transforms between frames, from TransformStamped-like messages.

    ``interpolation``: ``'linear'`` (default) or ``'nearest'``. ``cache_ns``: history kept
    per dynamic edge, relative to its newest sample (default 10 s). ``extrapolation_ns``:
    how far outside an edge's history a lookup may clamp to the first/last sample.
    """

    def __init__(self, interpolation: str = 'linear', cache_ns: int = 10_000_000_000,
                 max_history: int = 1000, extrapolation_ns: int = 100_000_000) -> None:
        if interpolation not in ('linear', 'nearest'):
            raise CalibrationError(f'TransformTree: interpolation must be linear or nearest, '
                                   f'got {interpolation!r}')
        self.interpolation = interpolation
        self.cache_ns = int(cache_ns)
        self.max_history = max(int(max_history), 1)
        self.extrapolation_ns = int(extrapolation_ns)
        self._edges: dict[str, _Edge] = {}

    # ------------------------------------------------------------------ adding
    def add(self, msg: Any, static: bool = False) -> None:
        """Add one ``TransformStamped``-like message, or every entry of a ``TFMessage``
        (an object with ``transforms``) or of an iterable of them."""
        transforms = getattr(msg, 'transforms', None)
        if transforms is not None:
            for item in transforms:
                self.add(item, static=static)
            return
        if isinstance(msg, Iterable) and not hasattr(msg, 'transform'):
            for item in msg:
                self.add(item, static=static)
            return
        try:
            parent = msg.header.frame_id
            child = msg.child_frame_id
            tr, rot = msg.transform.translation, msg.transform.rotation
            xyz = (tr.x, tr.y, tr.z)
            quat = (rot.x, rot.y, rot.z, rot.w)
            stamp = stamp_to_ns(msg.header.stamp)
        except AttributeError as err:
            raise CalibrationError(
                f'not a TransformStamped-like message ({err}); expected header.frame_id, '
                'child_frame_id, transform.translation and transform.rotation'
            ) from err
        self.add_transform(parent, child, xyz, quat, stamp_ns=stamp, static=static)

    def add_matrix(self, parent: str, child: str, transform: Any, stamp_ns: int = 0,
                   static: bool = True) -> None:
        """Add ``T_parent_child`` given as a 4x4 matrix (static by default)."""
        xyz, quat = xyz_quat_from_transform(transform)
        self.add_transform(parent, child, xyz, quat, stamp_ns=stamp_ns, static=static)

    def add_transform(self, parent: str, child: str, xyz: Any, quat_xyzw: Any,
                      stamp_ns: int = 0, static: bool = False) -> None:
        """Add ``T_parent_child`` from a translation and an ``(x, y, z, w)`` quaternion."""
        parent, child = _clean(parent), _clean(child)
        if not parent or not child:
            raise CalibrationError(f'transform with empty frame id (parent {parent!r}, child '
                                   f'{child!r}); set header.frame_id and child_frame_id')
        if parent == child:
            raise CalibrationError(f'transform from frame {child!r} to itself')
        t = np.asarray(xyz, dtype=np.float64).reshape(3)
        q = np.asarray(quat_xyzw, dtype=np.float64).reshape(4)
        norm = float(np.linalg.norm(q))
        if not np.isfinite(norm) or norm < 1e-9 or not np.all(np.isfinite(t)):
            raise CalibrationError(f'transform {parent} -> {child}: invalid translation '
                                   f'{t.tolist()} or quaternion {q.tolist()} (x, y, z, w)')
        q = q / norm
        if self._creates_cycle(parent, child):
            raise CalibrationError(f'transform {parent} -> {child} would make a loop in the '
                                   'TF tree (each frame has one parent)')
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            if edge is not None:
                log.warning('TF: frame %r re-parented from %r (%s) to %r (%s)', child,
                            edge.parent, 'static' if edge.static else 'dynamic', parent,
                            'static' if static else 'dynamic')
            edge = _Edge(parent=parent, static=static)
            self._edges[child] = edge
        if static:
            edge.stamps, edge.xyz, edge.quat = [int(stamp_ns)], [t], [q]
            return
        stamp = int(stamp_ns)
        i = bisect.bisect_left(edge.stamps, stamp)
        if i < len(edge.stamps) and edge.stamps[i] == stamp:
            edge.xyz[i], edge.quat[i] = t, q
        else:
            edge.stamps.insert(i, stamp)
            edge.xyz.insert(i, t)
            edge.quat.insert(i, q)
        # Trim history older than cache_ns before the newest, and beyond max_history.
        cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
        cut = max(cut, len(edge.stamps) - self.max_history)
        if cut > 0:
            del edge.stamps[:cut], edge.xyz[:cut], edge.quat[:cut]

    def _creates_cycle(self, parent: str, child: str) -> bool:
        frame: str | None = parent
        seen = set()
        while frame is not None and frame not in seen:
            if frame == child:
                return True
            seen.add(frame)
            edge = self._edges.get(frame)
            frame = edge.parent if edge is not None else None
        return False

    # ----------------------------------------------------------------- queries
    @property
    def frames(self) -> list[str]:
        """Every frame id known to the tree, sorted."""
        names = set(self._edges)
        names.update(e.parent for e in self._edges.values())
        return sorted(names)

    def has_frame(self, frame: str) -> bool:
        return _clean(frame) in self.frames

    def parent_of(self, frame: str) -> str | None:
        edge = self._edges.get(_clean(frame))
        return edge.parent if edge is not None else None

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while frame in self._edges:
            frame = self._edges[frame].parent
            chain.append(frame)
        return chain

    def _edge_at(self, child: str, stamp_ns: int | None) -> np.ndarray:
        edge = self._edges[child]
        if edge.static or stamp_ns is None or len(edge.stamps) == 1 and (
                abs(int(stamp_ns) - edge.stamps[0]) <= self.extrapolation_ns):
            return transform_from_xyz_quat(edge.xyz[-1], edge.quat[-1])
        stamp = int(stamp_ns)
        first, last = edge.stamps[0], edge.stamps[-1]
        if stamp < first - self.extrapolation_ns or stamp > last + self.extrapolation_ns:
            raise CalibrationError(
                f'TF {edge.parent} -> {child}: no transform at t={stamp} ns; history covers '
                f'[{first}, {last}] ns (extrapolation limit {self.extrapolation_ns} ns); check '
                'that /tf is recorded, that bags are played with /clock, or the time offsets'
            )
        if stamp <= first:
            return transform_from_xyz_quat(edge.xyz[0], edge.quat[0])
        if stamp >= last:
            return transform_from_xyz_quat(edge.xyz[-1], edge.quat[-1])
        i = bisect.bisect_right(edge.stamps, stamp)  # stamps[i-1] <= stamp < stamps[i]
        t0, t1 = edge.stamps[i - 1], edge.stamps[i]
        u = (stamp - t0) / (t1 - t0)
        if self.interpolation == 'nearest':
            j = i - 1 if u <= 0.5 else i
            return transform_from_xyz_quat(edge.xyz[j], edge.quat[j])
        xyz = (1 - u) * edge.xyz[i - 1] + u * edge.xyz[i]
        quat = _slerp(edge.quat[i - 1], edge.quat[i], u)
        return transform_from_xyz_quat(xyz, quat)

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int | None = None
               ) -> np.ndarray:
        """``T_target_source`` (4x4 float64): maps points in ``source_frame`` into
        ``target_frame``, at ``stamp_ns`` (``None``: latest of every edge).

        Raises :class:`CalibrationError` listing the known frames when either frame is
        unknown or the two are not connected.
        """
        target, source = _clean(target_frame), _clean(source_frame)
        if target == source:
            return np.eye(4)
        known = self.frames
        for frame in (target, source):
            if frame not in known:
                raise CalibrationError(
                    f'TF: unknown frame {frame!r}; known frames: {", ".join(known) or "none"} '
                    '(is /tf_static recorded, or is the frame named differently?)'
                )
        up_source = self._chain(source)
        up_target = self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            raise CalibrationError(
                f'TF: no path between {target!r} (root {up_target[-1]!r}) and {source!r} '
                f'(root {up_source[-1]!r}); known frames: {", ".join(known)}. Publish the '
                'missing transform between the two trees'
            )
        # T_common_source = T_common_a @ ... @ T_b_source
        t_common_source = np.eye(4)
        for child in up_source[:up_source.index(common)]:
            t_common_source = self._edge_at(child, stamp_ns) @ t_common_source
        t_common_target = np.eye(4)
        for child in up_target[:up_target.index(common)]:
            t_common_target = self._edge_at(child, stamp_ns) @ t_common_target
        return invert_transform(t_common_target) @ t_common_source

    def can_transform(self, target_frame: str, source_frame: str,
                      stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target_frame, source_frame, stamp_ns)
        except CalibrationError:
            return False
        return True

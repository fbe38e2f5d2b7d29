"""Numba kernels of :mod:`dsseg_core.msgs.pointcloud`: PointCloud2 columns in and out in one pass.

``gather_points`` (``gather_point_rows`` for padded rows) reads x, y, z (float32), intensity
and ring of every point straight from strided views of the message buffer (one pass over the
points, each point's bytes touched once) and counts the points with a NaN/inf coordinate;
``compact_finite`` then drops those in place (rare: organized clouds). The common sensor
layouts (``FIXED_LAYOUTS``: Velodyne, Ouster, Hesai, PCL XYZI, KITTI-style bags) have
fixed-layout gathers whose constant strides LLVM turns into vector loads: about one memcpy of
the message instead of two.
``pack_labelled_points`` writes the seven 4-byte columns of a labelled cloud (x, y, z,
intensity, label, confidence, packed rgb from a colour table) into a message buffer and says
whether every xyz is finite. All three give the arrays and bytes of the numpy code they replace
(:func:`dsseg_core.msgs.pointcloud.cloud_to_points`,
``dsseg_ros.cloud_labeller_node.LabelledCloud.to_msg``).
"""

from __future__ import annotations

import numpy as np

from dsseg_core.jit import njit

__all__ = ['FIXED_LAYOUTS', 'compact_finite', 'gather_point_rows', 'gather_points',
           'pack_labelled_points']


@njit
def gather_points(xcol, ycol, zcol, icol, has_intensity, rcol, has_ring, xyz, intensity, ring):
    """Copy (N,) strided columns into ``xyz`` (N, 3) float32, ``intensity`` (N,) float32 and
    ``ring`` (N,) int32 (numpy's ``astype`` conversions; the last two only when ``has_*``;
    else pass any 1-D arrays). Returns the number of points whose x, y or z is NaN/inf.

    1-D strided columns and flags tested outside the loop (LLVM unswitches it) compile to a
    loop that runs at about 1.5-2x a memcpy of the message.
    """
    n = xcol.shape[0]
    bad = 0
    for i in range(n):
        x = xcol[i]
        y = ycol[i]
        z = zcol[i]
        xyz[i, 0] = x
        xyz[i, 1] = y
        xyz[i, 2] = z
        s = (x - x) + (y - y) + (z - z)  # NaN exactly when x, y or z is NaN or inf
        bad += s != s
        if has_intensity:
            intensity[i] = np.float32(icol[i])
        if has_ring:
            ring[i] = np.int32(rcol[i])
    return bad


@njit
def gather_point_rows(xcol, ycol, zcol, icol, has_intensity, rcol, has_ring, xyz, intensity,
                      ring):
    """:func:`gather_points` of (H, W) columns (rows padded: ``row_step > W * point_step``),
    row by row into the (H*W, ...) outputs."""
    h, w = xcol.shape
    bad = 0
    for r in range(h):
        k = r * w
        bad += gather_points(xcol[r], ycol[r], zcol[r], icol[r if has_intensity else 0],
                             has_intensity, rcol[r if has_ring else 0], has_ring,
                             xyz[k:k + w], intensity[k:k + w] if has_intensity else intensity,
                             ring[k:k + w] if has_ring else ring)
    return bad


@njit
def compact_finite(xyz, intensity, has_intensity, ring, has_ring, kept):
    """Move the rows with finite x, y, z (``kept`` of them) to the front, in order (in
    place). Returns ``kept`` and their source indexes (int64)."""
    n = xyz.shape[0]
    source = np.empty(kept, np.int64)
    m = 0
    for i in range(n):
        x = xyz[i, 0]
        y = xyz[i, 1]
        z = xyz[i, 2]
        s = (x - x) + (y - y) + (z - z)
        if s != s:
            continue
        if m != i:
            xyz[m, 0] = x
            xyz[m, 1] = y
            xyz[m, 2] = z
            if has_intensity:
                intensity[m] = intensity[i]
            if has_ring:
                ring[m] = ring[i]
        source[m] = i
        m += 1
    return m, source


@njit
def pack_labelled_points(xyz_bits, intensity_bits, label_bits, confidence_bits, rgb_table,
                         out):
    """``out`` (N, 7) uint32 <- x, y, z, intensity, label, confidence, rgb (all as 4-byte
    words: float bits via ``.view(np.uint32)``); rgb = ``rgb_table[min(label, len - 1)]`` (the
    last entry is the unknown colour). Returns True when every x, y, z is finite."""
    n = xyz_bits.shape[0]
    last = np.uint32(rgb_table.shape[0] - 1)
    exponent = np.uint32(0x7F800000)
    dense = True
    for i in range(n):
        x = xyz_bits[i, 0]
        y = xyz_bits[i, 1]
        z = xyz_bits[i, 2]
        if (x & exponent) == exponent or (y & exponent) == exponent \
                or (z & exponent) == exponent:
            dense = False
        label = label_bits[i]
        out[i, 0] = x
        out[i, 1] = y
        out[i, 2] = z
        out[i, 3] = intensity_bits[i]
        out[i, 4] = label
        out[i, 5] = confidence_bits[i]
        out[i, 6] = rgb_table[min(label, last)]
    return dense


@njit
def _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, step, oi, has_intensity,
                  ring_step, oring, has_ring):
    """Body of the fixed-layout gathers: ``words`` = the message as uint32 words (point ``i`` =
    ``words[step * i .. step * i + step - 1]``, x, y, z = its first three), ``ring_view`` the
    message as the ring's dtype. Called with literal layout constants, which LLVM folds into
    strided vector loads (several times faster than the generic strided loop)."""
    n = xyz_bits.shape[0] // 3
    exponent = np.uint32(0x7F800000)
    bad = 0
    for i in range(n):
        x = words[step * i]
        y = words[step * i + 1]
        z = words[step * i + 2]
        xyz_bits[3 * i] = x
        xyz_bits[3 * i + 1] = y
        xyz_bits[3 * i + 2] = z
        # float32 NaN/inf: all exponent bits set
        bad += ((x & exponent) == exponent) | ((y & exponent) == exponent) \
            | ((z & exponent) == exponent)
        if has_intensity:
            intensity_bits[i] = words[step * i + oi]
        if has_ring:
            ring[i] = np.int32(ring_view[ring_step * i + oring])
    return bad


# Fixed layouts (x, y, z float32 at 0/4/8; float32 intensity; uint16 ring), by point_step.
# Each is compiled on first use; any other layout takes gather_points.


@njit
def gather_xyz12(words, ring_view, xyz_bits, intensity_bits, ring):
    """x, y, z; point_step 12."""
    return _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, 3, 0, False, 0, 0,
                         False)


@njit
def gather_xyz16(words, ring_view, xyz_bits, intensity_bits, ring):
    """x, y, z, padding; point_step 16."""
    return _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, 4, 0, False, 0, 0,
                         False)


@njit
def gather_xyzi16(words, ring_view, xyz_bits, intensity_bits, ring):
    """x, y, z, intensity@12; point_step 16 (KITTI-style bags, dsseg's own clouds)."""
    return _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, 4, 3, True, 0, 0,
                         False)


@njit
def gather_xyzi28(words, ring_view, xyz_bits, intensity_bits, ring):
    """x, y, z, intensity@12 of point_step 28 (the cloud labeller's ``~/labelled_cloud``)."""
    return _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, 7, 3, True, 0, 0,
                         False)


@njit
def gather_xyzi32(words, ring_view, xyz_bits, intensity_bits, ring):
    """x, y, z, intensity@16; point_step 32 (PCL PointXYZI)."""
    return _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, 8, 4, True, 0, 0,
                         False)


@njit
def gather_xyzir32(words, ring_view, xyz_bits, intensity_bits, ring):
    """x, y, z, intensity@16, uint16 ring@20; point_step 32 (velodyne_pointcloud)."""
    return _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, 8, 4, True, 16, 10,
                         True)


@njit
def gather_xyzir32_hesai(words, ring_view, xyz_bits, intensity_bits, ring):
    """x, y, z, intensity@12, uint16 ring@16; point_step 32 (Hesai PointXYZIT)."""
    return _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, 8, 3, True, 16, 8,
                         True)


@njit
def gather_xyzir48(words, ring_view, xyz_bits, intensity_bits, ring):
    """x, y, z, intensity@16, uint16 ring@26; point_step 48 (ouster-ros)."""
    return _gather_words(words, ring_view, xyz_bits, intensity_bits, ring, 12, 4, True, 24, 13,
                         True)


#: (point_step, intensity offset or None, ring offset or None) -> fixed-layout gather, for
#: float32 x, y, z at 0/4/8, float32 intensity and uint16 ring (native byte order).
FIXED_LAYOUTS = {
    (12, None, None): gather_xyz12,
    (16, None, None): gather_xyz16,
    (16, 12, None): gather_xyzi16,
    (28, 12, None): gather_xyzi28,
    (32, 16, None): gather_xyzi32,
    (32, 16, 20): gather_xyzir32,
    (32, 12, 16): gather_xyzir32_hesai,
    (48, 16, 26): gather_xyzir48,
}

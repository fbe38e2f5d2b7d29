"""2D→3D: label transfer from images to LiDAR points, smoothing, 3D student (issue #6).

Submodules are imported explicitly (``from dsseg_core.points3d.transfer import ...``); this
package imports nothing heavy.
"""

"""dsseg_core: the ROS-free library behind dsseg.

Nothing here imports rclpy. Heavy dependencies (torch, timm, open3d) are imported lazily by
the modules that need them, so ``import dsseg_core`` stays fast and works on a plain Python.
"""

from dsseg_core.errors import DssegError

__all__ = ['DssegError', '__version__']
__version__ = '0.1.0'

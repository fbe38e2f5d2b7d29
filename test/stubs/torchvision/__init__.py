"""Minimal torchvision stand-in for CPU CI, where no CPU torchvision wheel exists.

timm and open_clip import a handful of torchvision names at import time. This package
provides just those names so ``import timm`` works; anything that actually needs
torchvision's image transforms or datasets raises ``NotImplementedError``. It lives in
the test tree on purpose and is never installed with dsseg: on a car, install the real
torchvision that matches your torch build.
"""

__version__ = '0.0.0+dsseg.stub'
STUB = True

from . import datasets, ops, transforms  # noqa: E402,F401

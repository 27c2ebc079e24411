"""Old import path of `diffusion_windows.engine.adaptive`, kept for code that imports it: the same module."""
import sys

from .engine import adaptive as _module

sys.modules[__name__] = _module

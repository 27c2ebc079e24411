"""Old import path of `diffusion_windows.diffusion.exact`, kept for code that imports it: the same module."""
import sys

from .diffusion import exact as _module

sys.modules[__name__] = _module

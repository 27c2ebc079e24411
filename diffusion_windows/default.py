"""Old import path of `diffusion_windows.diffusion.default`, kept for code that imports it: the same module."""
import sys

from .diffusion import default as _module

sys.modules[__name__] = _module

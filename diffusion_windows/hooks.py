"""Old import path of `diffusion_windows.diffusion.hooks`, kept for code that imports it: the same module."""
import sys

from .diffusion import hooks as _module

sys.modules[__name__] = _module

"""Old import path of `diffusion_windows.diffusion.schedule`, kept for code that imports it: the same module."""
import sys

from .diffusion import schedule as _module

sys.modules[__name__] = _module

"""Old import path of `diffusion_windows.analysis.windows`, kept for code that imports it: the same module."""
import sys

from .analysis import windows as _module

sys.modules[__name__] = _module

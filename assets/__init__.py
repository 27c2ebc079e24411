"""Bundled weights and images of the default model (see diffusion_windows/default.py)."""

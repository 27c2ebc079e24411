"""Everything that imports diffusers: the diffusion backend and what it is built of.

- `kinds`: the noise-process table (scheduler class and config -> family, sampler properties)
- `noise`: every scheduler family as ``x_t = s(t) (x0 + sigma(t) eps)`` (VP, VE, flow matching):
  `noise_to`, `to_model_space`
- `flow_ancestral`: the stochastic sampler for flow-matching models (``--scheduler flow-ancestral``)
- `schedule`: time conversions (timestep, ou_time, sigma), sampling grids, restart plans, scheduler
  swaps; re-exported from `timesteps`, `restart` and `schedulers`, imported one way
- `denoisers`: adapters that call a pipeline's denoising model as its scheduler expects (UNet,
  SD3, Flux, PixArt, Sana, DiT)
- `hooks`: `noise_to`, `denoise_from`, `sample_trajectory`, `denoise_staircase`
- `images`: VAE `encode`/`decode`, real images as base samples
- `backend`: `DiffusionBackend`, the engine's backend for diffusers pipelines
- `theory`: the run's data as a mixture, the schedule as an ou_time axis
- `models`: loading pipelines and the built-in models by name
- `exact`: the exact denoiser of a Gaussian or empirical mixture, as a diffusers model
- `default`: the bundled digits model and tiny CLIP
"""

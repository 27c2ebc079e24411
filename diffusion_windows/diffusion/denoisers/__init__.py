"""Denoiser adapters: a pipeline's denoising model called as its scheduler expects (k-diffusion's
``external.py``, for diffusers pipelines).

`denoiser(pipe)` returns an adapter chosen by the class of the pipeline's denoising model
(its ``unet`` or ``transformer``, unwrapped from ``torch.compile``) from `ADAPTERS`; any other
``unet`` (a wrapper, a custom model) takes the UNet call; any other transformer fails with one
line naming it and listing the supported families (`FAMILIES`). Every adapter offers:

- ``adapter(x, t, cond)``: the model output for the loop state ``x`` (after the scheduler's
  ``scale_model_input``) at scalar timestep ``t``, in the scheduler's convention (noise or
  velocity prediction), classifier-free guidance batched inside;
- ``prepare(n, **call_kwargs)``: the pipeline's own ``__call__`` keywords (``prompt``,
  ``prompt_embeds``, ``negative_prompt_embeds``, ``guidance_scale``, ...) -> one conditioning
  object for ``n`` samples (``None`` for unconditional models) with ``take(index)`` (the rows of
  a sub-batch) and ``rows`` (model rows per sample: 2 with guidance);
- ``device``, ``dtype``, ``sample_shape(height=None, width=None)`` (the loop state
  ``[C, H, W]``), ``image_shape(height=None, width=None)`` (decoded images ``[C, H, W]``),
  ``check_sample(x, name)``;
- ``grid_kwargs(num_inference_steps, hw)``: the pipeline's extra ``set_timesteps`` keywords for
  its N-step grid at latent size ``hw`` (``(H, W)``; video ``(F, H, W)``) (Flux, LTX: ``sigmas``
  and ``mu``; most: none).

Samples stay ``[N, C, H, W]`` (video ``[N, C, F, H, W]``) outside the adapter (a model that packs
latents packs them inside).
The adapters, one module each: `unet` (UNet2DModel, Stable Diffusion 1.x/2.x/XL), `sd3`
(SD3/3.5), `flux` (Flux.1 dev and schnell), `flux2` (Flux.2 dev), `kontext` (Flux Kontext), `chroma`, `qwenimage`
(Qwen-Image), `zimage` (Z-Image), `lumina2` (Lumina 2),
`hidream` (HiDream-I1), `cogview4` (CogView 4), `pixart` (PixArt-α and -Σ), `sana`, `dit`. The flow-matching
image families share `flow` (Flux's grid, 2x2 packing, two-call guidance): a new one is a short
file of its call differences. Video (samples ``[N, C, F, H, W]``, ``sample_shape(height, width,
num_frames)``): `wan` (Wan 2.1/2.2 text-to-video), `cogvideox` (CogVideoX 2b/5b), `hunyuan_video`
(HunyuanVideo text-to-video), `ltx` (LTX-Video text-to-video), `frames` (a UNet2DModel whose
channels are frames: the bundled video default); `VIDEO_REFUSED` names pipelines refused outright.
A pipeline whose denoiser is another family's (Kontext's is Flux's) or whose denoising module
alone does not say how to call it is chosen first by its pipeline class (`PIPELINE_ADAPTERS`).

Example::

    den = denoiser(pipe)
    cond = den.prepare(4, prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=7.5)
    eps = den(scheduler.scale_model_input(x, t), t, cond)
"""
from __future__ import annotations

from .chroma import ChromaDenoiser
from .cogview4 import CogView4Denoiser
from .cogvideox import CogVideoXDenoiser
from .dit import DiTDenoiser
from .flux import FluxDenoiser
from .flux2 import Flux2Denoiser
from .frames import FramesUNetDenoiser
from .hidream import HiDreamDenoiser
from .hunyuan_video import HunyuanVideoDenoiser
from .kontext import FluxKontextDenoiser
from .ltx import LTXDenoiser
from .lumina2 import Lumina2Denoiser
from .pixart import PixArtDenoiser
from .qwenimage import QwenImageDenoiser
from .sana import SanaDenoiser
from .sd3 import SD3Denoiser
from .unet import UNetDenoiser
from .wan import WanDenoiser
from .zimage import ZImageDenoiser

__all__ = ["ADAPTERS", "PIPELINE_ADAPTERS", "FAMILIES", "denoiser", "UNetDenoiser", "SD3Denoiser", "FluxDenoiser",
           "Flux2Denoiser", "FluxKontextDenoiser", "ChromaDenoiser", "QwenImageDenoiser", "ZImageDenoiser",
           "Lumina2Denoiser", "HiDreamDenoiser", "CogView4Denoiser", "PixArtDenoiser", "SanaDenoiser", "DiTDenoiser",
           "WanDenoiser", "CogVideoXDenoiser", "FramesUNetDenoiser", "HunyuanVideoDenoiser", "LTXDenoiser",
           "VIDEO_REFUSED"]

# denoising-model class name -> adapter (names, so that optional diffusers classes need not import)
ADAPTERS: dict = {
    "UNet2DModel": UNetDenoiser,
    "UNet2DConditionModel": UNetDenoiser,
    "ExactMixtureDenoiser": UNetDenoiser,
    "SD3Transformer2DModel": SD3Denoiser,
    "FluxTransformer2DModel": FluxDenoiser,
    "PixArtTransformer2DModel": PixArtDenoiser,
    "SanaTransformer2DModel": SanaDenoiser,
    "DiTTransformer2DModel": DiTDenoiser,
    "Flux2Transformer2DModel": Flux2Denoiser,
    "ChromaTransformer2DModel": ChromaDenoiser,
    "QwenImageTransformer2DModel": QwenImageDenoiser,
    "ZImageTransformer2DModel": ZImageDenoiser,
    "Lumina2Transformer2DModel": Lumina2Denoiser,
    "HiDreamImageTransformer2DModel": HiDreamDenoiser,
    "CogView4Transformer2DModel": CogView4Denoiser,
    "WanTransformer3DModel": WanDenoiser,
    "CogVideoXTransformer3DModel": CogVideoXDenoiser,
    "HunyuanVideoTransformer3DModel": HunyuanVideoDenoiser,
    "LTXVideoTransformer3DModel": LTXDenoiser,
}

# pipeline class name -> adapter, for pipelines that feed another family's denoiser other inputs, or whose
# denoising module alone does not say how to call it
PIPELINE_ADAPTERS: dict = {
    "FluxKontextPipeline": FluxKontextDenoiser,
    "VideoDDPMPipeline": FramesUNetDenoiser,
}

# video pipelines whose restarts are not written yet: refused by name at load
VIDEO_REFUSED: tuple = ()

# the families the adapters cover, for the one line that refuses any other pipeline
FAMILIES = ("DDPM/DDIM (UNet2DModel)", "Stable Diffusion 1.x/2.x/XL", "Stable Diffusion 3/3.5", "Flux.1 dev/schnell",
            "Flux.2 dev", "Flux Kontext", "Chroma", "Qwen-Image", "Z-Image", "Lumina 2", "HiDream-I1", "CogView 4",
            "PixArt-alpha/sigma", "Sana", "DiT", "Wan 2.1/2.2 text-to-video", "CogVideoX 2b/5b",
            "HunyuanVideo text-to-video", "LTX-Video text-to-video")


def _module(pipe):
    for part in ("unet", "transformer"):
        module = getattr(pipe, part, None)
        if module is not None:
            return module
    return None


def denoiser(pipe):
    """The adapter of ``pipe``'s denoising model (module docstring)."""
    module = _module(pipe)
    if module is None or getattr(pipe, "scheduler", None) is None:
        part = "unet or transformer" if module is None else "scheduler"
        raise ValueError(f"pipeline {type(pipe).__name__} has no {part}")
    if type(pipe).__name__ in VIDEO_REFUSED:
        raise ValueError(f"pipeline {type(pipe).__name__} is not supported yet (its restarts are not written); "
                         f"supported families: {', '.join(FAMILIES)}")
    for cls in type(pipe).__mro__:
        if cls.__name__ in PIPELINE_ADAPTERS:
            return PIPELINE_ADAPTERS[cls.__name__](pipe, module)
    inner = getattr(module, "_orig_mod", module)  # torch.compile wraps the model
    for cls in type(inner).__mro__:
        if cls.__name__ in ADAPTERS:
            adapter = ADAPTERS[cls.__name__]
            known = getattr(adapter, "PIPELINES", ())
            if known and not any(c.__name__ in known for c in type(pipe).__mro__):
                raise ValueError(f"pipeline {type(pipe).__name__} is not supported (its {type(module).__name__} is, "
                                 f"as {', '.join(known)} call it; this pipeline adds inputs the restarts would drop); "
                                 f"supported families: {', '.join(FAMILIES)}")
            return adapter(pipe, module)
    if getattr(pipe, "unet", None) is module:  # any other unet (a wrapper, a custom model) takes the UNet call
        return UNetDenoiser(pipe, module)
    raise ValueError(f"pipeline {type(pipe).__name__} with denoiser {type(module).__name__} is not supported; "
                     f"supported families: {', '.join(FAMILIES)}")

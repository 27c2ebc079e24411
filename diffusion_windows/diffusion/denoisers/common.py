"""What the transformer adapters share: the conditioning object, keyword checks, shapes.

`Condition` is the conditioning of one model call for ``n`` samples, like the UNet's
`TextCondition`: per-sample tensors for the conditional branch (``cond``) and, with guidance,
the unconditional one (``uncond``), keyed by the denoiser's own keyword; ``take(index)`` picks
the rows of a sub-batch and ``rows`` is the model rows one sample takes per call (2 with
guidance). ``shared`` holds tensors every row shares (Flux's ``txt_ids``). `Condition.batch`
builds the batched keywords of one guided call (``order``: which branch comes first, as the
pipeline batches them) and `Condition.guide` combines its output.

`TransformerDenoiser` is the base of the transformer adapters: device and dtype, the sample
and image shapes at the pipeline's default or a given size, the sample check, the grid keywords
(none by default) and `prepare`'s keyword check.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from .unet import ModuleAdapter, _per_sample, pipeline_default

__all__ = ["Condition", "TransformerDenoiser", "per_sample", "pipeline_default", "check_keywords", "calculate_shift"]

per_sample = _per_sample


def check_keywords(pipe, given: dict, accepted) -> None:
    """Refuse a conditioning keyword the adapter does not take (one line naming it)."""
    for key in given:
        if key not in accepted:
            raise ValueError(f"{key}=...: {type(pipe).__name__} restarts take only {', '.join(sorted(accepted))}")


def calculate_shift(image_seq_len, base_seq_len=256, max_seq_len=4096, base_shift=0.5, max_shift=1.15) -> float:
    """Flux's ``mu`` from the image's sequence length (``diffusers.pipelines.flux.pipeline_flux.calculate_shift``)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


@dataclass
class Condition:
    """Per-sample conditioning of a transformer call (module docstring)."""

    cond: dict                                  # keyword -> tensor [n, ...]
    uncond: dict | None = None                  # the unconditional branch (guidance on)
    scale: float = 1.0                          # guidance scale
    shared: dict = field(default_factory=dict)  # keyword -> tensor shared by every row
    uncond_shared: dict | None = None           # the unconditional branch's shared tensors
    order: str = "uncond_first"                 # batch order of the two branches

    @property
    def rows(self) -> int:
        """Model rows per sample: two with guidance."""
        return 1 if self.uncond is None else 2

    def take(self, index: torch.Tensor) -> "Condition":
        pick = (lambda d: None if d is None else
                {k: None if v is None else v.index_select(0, index.to(v.device)) for k, v in d.items()})
        return Condition(pick(self.cond), pick(self.uncond), self.scale, self.shared, self.uncond_shared, self.order)

    def batch(self, m: int) -> dict:
        """The keywords of one call on ``m`` samples, both branches batched in ``order``."""
        out = {}
        for key, v in self.cond.items():
            if v is None:
                out[key] = None
            elif self.uncond is None:
                out[key] = v[:m]
            else:
                u = self.uncond[key][:m]
                out[key] = torch.cat([u, v[:m]] if self.order == "uncond_first" else [v[:m], u])
        return {**out, **self.shared}

    def guide(self, out: torch.Tensor, channels: int | None = None) -> torch.Tensor:
        """Classifier-free guidance on a batched output (on its first ``channels`` channels)."""
        if self.uncond is None:
            return out if channels is None else out[:, :channels]
        out = out if channels is None else out[:, :channels]
        first, second = out.chunk(2)
        uncond, cond = (first, second) if self.order == "uncond_first" else (second, first)
        return uncond + self.scale * (cond - uncond)


class TransformerDenoiser(ModuleAdapter):
    """Base of the transformer adapters (module docstring)."""

    #: the ``prepare`` keywords besides ``n`` and ``hw``
    KEYWORDS: tuple = ()
    #: the pipeline classes whose calls the adapter reproduces (others add inputs it would drop:
    #: ControlNet, PAG, Kontext, inpainting, ...)
    PIPELINES: tuple = ()

    # ------------------------------------------------------------------ what it is
    @property
    def vae_scale_factor(self) -> int:
        """The pipeline's ``vae_scale_factor`` (DiT has none: from its VAE's blocks, as the others compute it)."""
        factor = getattr(self.pipe, "vae_scale_factor", None)
        if factor:
            return int(factor)
        vae = getattr(self.pipe, "vae", None)
        blocks = getattr(vae.config, "block_out_channels", None) if vae is not None else None
        return 2 ** (len(blocks) - 1) if blocks else 8

    @property
    def latent_channels(self) -> int:
        return int(self.module.config.in_channels)

    @property
    def multiple(self) -> int:
        """The loop state's height and width must be multiples of this (the patch size)."""
        return int(getattr(self.module.config, "patch_size", 1) or 1)

    def default_size(self) -> tuple:
        """The pipeline's default latent ``(h, w)``."""
        size = getattr(self.pipe, "default_sample_size", None) or self.module.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return int(size[0]), int(size[1])

    def latent_size(self, height=None, width=None) -> tuple:
        """Latent ``(h, w)`` of images ``height x width`` (pixels; None: the pipeline's default)."""
        if height is None and width is None:
            return self.default_size()
        h = int(height if height is not None else width)
        w = int(width if width is not None else height)
        return h // self.vae_scale_factor, w // self.vae_scale_factor

    def sample_shape(self, height=None, width=None) -> tuple:
        """``[C, H, W]`` of the loop state (latents) for images ``height x width``."""
        h, w = self.latent_size(height, width)
        return self.latent_channels, h, w

    def image_shape(self, height=None, width=None) -> tuple:
        """``[C, H, W]`` of the images the pipeline produces."""
        h, w = self.latent_size(height, width)
        vae = getattr(self.pipe, "vae", None)
        channels = int(vae.config.out_channels) if vae is not None else 3
        return channels, h * self.vae_scale_factor, w * self.vae_scale_factor

    def check_sample(self, x, name="x_t") -> None:
        if not torch.is_tensor(x) or x.ndim != 4:
            raise ValueError(f"{name} shape {tuple(getattr(x, 'shape', ()))} is not [N, C, H, W]")
        if x.shape[1] != self.latent_channels:
            raise ValueError(f"{name} shape {tuple(x.shape)}: the model takes {self.latent_channels} channels")
        k = self.multiple
        if x.shape[-2] % k or x.shape[-1] % k:
            raise ValueError(f"{name} shape {tuple(x.shape)}: size must be a multiple of {k}")

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """The pipeline's extra ``set_timesteps`` keywords for its N-step grid (none here)."""
        return {}

    def pipeline_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Samples ``[N, C, H, W]`` in the layout the pipeline's ``__call__`` returns with
        ``output_type="latent"`` (packed for Flux-like pipelines; here: as they are)."""
        return x

    def call_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Samples ``[N, C, H, W]`` in the layout the pipeline's ``__call__`` takes as ``latents=``."""
        return self.pipeline_latents(x)

    def _check(self, given: dict) -> None:
        check_keywords(self.pipe, given, self.KEYWORDS)

    def _check_text(self, given: dict, embeds=("prompt_embeds",), negatives=(), guidance=None) -> None:
        """What a text adapter checks before encoding, one line each: a prompt or all of ``embeds``; a
        prompt only with a text encoder; with guidance on (``guidance``: its scale) and no encoder,
        all of ``negatives``."""
        g = given.get
        name = type(self.pipe).__name__
        if g("prompt") is None and any(g(k) is None for k in embeds):
            raise ValueError(f"{name} needs prompt or {' and '.join(embeds)}, got None")
        if g("prompt") is not None and not self._has_encoder():
            raise ValueError(f"prompt={g('prompt')!r} but pipeline {name} has no text encoder")
        if guidance is not None and not self._has_encoder() and any(g(k) is None for k in negatives):
            raise ValueError(f"guidance_scale={guidance} without a text encoder needs {' and '.join(negatives)}, "
                             "got None")

    def _embeds_condition(self, given: dict, n: int, scale: float, max_length: int, device, dtype):
        """``(cond, uncond)`` for ``n`` samples of a pipeline whose ``encode_prompt`` returns ``(prompt_embeds,
        negative_prompt_embeds)`` and whose model takes them as ``encoder_hidden_states`` (Wan, CogVideoX);
        guidance on when ``scale > 1`` (``uncond`` None otherwise). Embeddings of batch 1 are shared."""
        g = given.get
        cfg = scale > 1.0
        self._check_text(given, negatives=("negative_prompt_embeds",), guidance=scale if cfg else None)
        pe, ne = self._encode(prompt=g("prompt"), negative_prompt=g("negative_prompt"),
                              do_classifier_free_guidance=cfg, num_videos_per_prompt=1,
                              prompt_embeds=g("prompt_embeds"), negative_prompt_embeds=g("negative_prompt_embeds"),
                              max_sequence_length=g("max_sequence_length") or max_length, device=device)
        return self._branches(n, (pe,), (ne,) if cfg else None, device=device, dtype=dtype)

    def _guided(self, given: dict, fallback: float, embeds=("prompt_embeds",),
                negatives=("negative_prompt_embeds",)) -> tuple:
        """``(scale, on)``: ``guidance_scale`` (else the pipeline's default, else ``fallback``) and
        classifier-free guidance on above 1, after `_check_text` of ``embeds`` and ``negatives``."""
        scale = self._guidance(given.get("guidance_scale"), fallback)
        self._check_text(given, embeds, negatives, scale if scale > 1 else None)
        return scale, scale > 1

    def _branches(self, n: int, pos: tuple, neg: tuple | None, keys=("encoder_hidden_states",), device=None,
                  dtype=None) -> tuple:
        """``(cond, uncond)`` for ``n`` samples from ``encode_prompt``'s positive outputs ``pos``
        (embeddings, then their mask) and negative ones ``neg`` (None: no guidance, ``uncond`` None),
        under the model's keywords ``keys``; embeddings cast to the model's device and dtype, masks
        kept; a batch error names the pipeline keyword (``negative_prompt_attention_mask``, ...)."""
        if device is None:
            device, dtype = self.device_dtype

        def branch(tensors, prefix):
            names = (prefix + "prompt_embeds", prefix + "prompt_attention_mask")
            return {key: per_sample(v.to(device, dtype) if i == 0 else v, n, names[min(i, 1)])
                    for i, (key, v) in enumerate(zip(keys, tensors))}

        return branch(pos, ""), None if neg is None else branch(neg, "negative_")

    def _guidance(self, guidance_scale, fallback) -> float:
        g = pipeline_default(self.pipe, "guidance_scale", fallback) if guidance_scale is None else guidance_scale
        return float(g)

    def _encode(self, **kwargs):
        """``pipe.encode_prompt`` with the keywords it accepts."""
        accepted = inspect.signature(self.pipe.encode_prompt).parameters
        return self.pipe.encode_prompt(**{k: v for k, v in kwargs.items() if k in accepted})

    def _has_encoder(self) -> bool:
        return any(getattr(self.pipe, name, None) is not None
                   for name in ("text_encoder", "text_encoder_2", "text_encoder_3"))

    def _timestep(self, t, rows: int, dtype=None) -> torch.Tensor:
        """A scalar timestep broadcast to ``rows`` (as the pipelines do: ``t.expand(batch)``)."""
        t = t if torch.is_tensor(t) else torch.tensor(t)
        t = t.reshape(()).to(self.device)
        t = t.expand(rows)
        return t if dtype is None else t.to(dtype)

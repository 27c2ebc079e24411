"""An exact denoiser for a Gaussian (or empirical) mixture that stands as a diffusers unet.

THEORY.md, "Closed forms and estimators": `E[X | Y_t = y]` is the posterior-weighted mean
of the components' conditional means, and the noise prediction is
`eps = (y - sqrt(alpha_bar) E[X | y]) / sqrt(1 - alpha_bar)`. The timestep (training
timestep, scalar or one per sample) maps to `alpha_bar` through the scheduler's
`alphas_cumprod` given at construction (fractional timesteps: linear interpolation).
`gaussian_mixture_model()` builds the built-in `--model gaussian-mixture`.

As a flow-matching model (THEORY.md, "Flow matching"): `ExactFlowDenoiser` takes
``x = (1 - s) x0 + s eps`` at timestep ``1000 s`` and returns the velocity
``v = (x - E[x0 | x]) / s``, with ``E[x0 | x]`` the same posterior at the OU state
``y = x / sqrt((1 - s)^2 + s^2)``, ``alpha_bar = (1 - s)^2 / ((1 - s)^2 + s^2)``.
`gaussian_mixture_flow_model()` builds the built-in `--model gaussian-mixture-flow`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import ConfigMixin, DDPMPipeline, DDPMScheduler, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..theory import GaussianMixture

__all__ = ["ExactMixtureDenoiser", "ExactFlowDenoiser", "GaussianMixtureModel", "gaussian_mixture_model",
           "gaussian_mixture_flow_model", "hierarchical_mixture", "posterior_classifier"]


class ExactMixtureDenoiser(ModelMixin, ConfigMixin):
    """`unet(x_t, timestep).sample` = the exact noise prediction of a mixture in model space.

    Buffers: means [K, d], log weights [K], variances [K] (isotropic, 0 = point mass) or
    covariances [K, d, d], alphas_cumprod [T] (float64). Computes in float64 and returns
    the input dtype. Build it with `from_mixture`.
    """

    @register_to_config
    def __init__(self, sample_size: int = 8, in_channels: int = 1, num_components: int = 1,
                 full_covariance: bool = False, num_train_timesteps: int = 1000):
        super().__init__()
        k, d = num_components, in_channels * sample_size * sample_size
        self.register_buffer("means", torch.zeros(k, d, dtype=torch.float32))
        self.register_buffer("log_weights", torch.zeros(k, dtype=torch.float64))
        cov_shape = (k, d, d) if full_covariance else (k,)
        self.register_buffer("cov", torch.zeros(cov_shape, dtype=torch.float64))
        self.register_buffer("alphas_cumprod", torch.ones(num_train_timesteps, dtype=torch.float64))

    @classmethod
    def from_mixture(cls, mixture: GaussianMixture, alphas_cumprod, sample_size: int,
                     in_channels: int = 1) -> "ExactMixtureDenoiser":
        """Denoiser of `mixture` (model space, d = in_channels * sample_size**2) for a scheduler
        whose `alphas_cumprod` [T] is given (e.g. `DDPMScheduler(...).alphas_cumprod`)."""
        d = in_channels * sample_size * sample_size
        if mixture.dim != d:
            raise ValueError(f"mixture dimension {mixture.dim} != in_channels*sample_size**2 = {d}")
        ac = torch.as_tensor(np.asarray(alphas_cumprod, dtype=np.float64))
        full = mixture.cov is not None
        model = cls(sample_size=sample_size, in_channels=in_channels,
                    num_components=mixture.num_components, full_covariance=full,
                    num_train_timesteps=len(ac))
        model.means.copy_(torch.as_tensor(mixture.means))
        model.log_weights.copy_(torch.as_tensor(np.log(mixture.weights)))
        model.cov.copy_(torch.as_tensor(mixture.cov if full else mixture.var))
        model.alphas_cumprod.copy_(ac)
        model.eval().requires_grad_(False)
        return model

    def _apply(self, fn, recurse=True):
        """Device moves apply; dtype casts do not: the mixture's buffers stay float64/float32 (an
        fp16 ``alphas_cumprod`` or covariance would give NaN), and a cast only sets the dtype the
        denoiser takes and returns (`dtype`)."""
        probe = fn(torch.zeros((), dtype=torch.float32, device=self.log_weights.device))
        for name, buf in self._buffers.items():
            if buf is not None:
                self._buffers[name] = buf.to(probe.device)
        if probe.is_floating_point():
            self._io_dtype = probe.dtype
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the samples it takes and returns (its buffers keep their own)."""
        return getattr(self, "_io_dtype", torch.float32)

    def alpha_bar(self, timestep, batch: int) -> torch.Tensor:
        """alpha_bar [batch] at training timestep(s) (scalar or [batch]); linear in between."""
        t = torch.as_tensor(timestep, dtype=torch.float64, device=self.alphas_cumprod.device)
        t = t.reshape(-1).expand(batch) if t.numel() == 1 else t.reshape(-1)
        if t.shape[0] != batch:
            raise ValueError(f"timestep has {t.shape[0]} values for a batch of {batch}")
        top = len(self.alphas_cumprod) - 1
        if torch.any(t < 0) or torch.any(t > top):
            raise ValueError(f"timestep outside [0, {top}]: {t.min().item()}..{t.max().item()}")
        lo = t.floor().long().clamp(max=top)
        hi = (lo + 1).clamp(max=top)
        frac = t - lo
        return (1 - frac) * self.alphas_cumprod[lo] + frac * self.alphas_cumprod[hi]

    def posterior(self, y: torch.Tensor, alpha_bar: torch.Tensor):
        """Component posterior P(k | Y_t = y) [N, K] and E[X | y] [N, d], y [N, d] float64."""
        a = alpha_bar.sqrt()[:, None]                  # exp(-t)
        m = self.means.double()
        if self.cov.ndim == 1:
            c = alpha_bar[:, None] * self.cov + (1 - alpha_bar[:, None])   # [N, K] variances
            dist = ((y * y).sum(1, keepdim=True) - 2 * a * (y @ m.T)
                    + alpha_bar[:, None] * (m * m).sum(1))
            logp = -0.5 * dist / c - 0.5 * y.shape[1] * torch.log(c) + self.log_weights
            post = torch.softmax(logp, dim=1)
            gain = a * self.cov / c                    # E[X|y,k] = m_k + gain_k (y - a m_k)
            mean = (post * (1 - a * gain)) @ m + (post * gain).sum(1, keepdim=True) * y
            return post, mean
        post = torch.empty(y.shape[0], m.shape[0], dtype=y.dtype, device=y.device)
        cond = torch.empty(y.shape[0], m.shape[0], y.shape[1], dtype=y.dtype, device=y.device)
        eye = torch.eye(y.shape[1], dtype=y.dtype, device=y.device)
        for ab in torch.unique(alpha_bar):
            rows = alpha_bar == ab
            for k in range(m.shape[0]):
                c = ab * self.cov[k] + (1 - ab) * eye
                chol = torch.linalg.cholesky(c)
                r = y[rows] - ab.sqrt() * m[k]
                sol = torch.cholesky_solve(r.T, chol)                       # C^-1 (y - a m)
                post[rows, k] = (-0.5 * (r.T * sol).sum(0) - torch.log(torch.diagonal(chol)).sum()
                                 + self.log_weights[k])
                cond[rows, k] = m[k] + ab.sqrt() * (self.cov[k] @ sol).T
        post = torch.softmax(post, dim=1)
        return post, (post[:, :, None] * cond).sum(1)

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True, **kwargs):
        n = sample.shape[0]
        y = sample.reshape(n, -1).double()
        ab = self.alpha_bar(timestep, n).to(y.device)
        _, mean = self.posterior(y, ab)
        eps = (y - ab.sqrt()[:, None] * mean) / (1 - ab).sqrt()[:, None]
        eps = eps.to(sample.dtype).reshape(sample.shape)
        return UNet2DOutput(sample=eps) if return_dict else (eps,)


class ExactFlowDenoiser(ExactMixtureDenoiser):
    """`unet(x, timestep).sample` = the exact flow-matching velocity of a mixture (module docstring).

    ``timestep`` is ``T s`` (``T`` = ``num_train_timesteps``), a scalar or one per sample; its
    ``alphas_cumprod`` buffer is unused. Build it with `from_flow_mixture`.
    """

    @classmethod
    def from_flow_mixture(cls, mixture: GaussianMixture, sample_size: int, in_channels: int = 1,
                          num_train_timesteps: int = 1000) -> "ExactFlowDenoiser":
        """Velocity model of ``mixture`` (model space, d = in_channels * sample_size**2)."""
        return cls.from_mixture(mixture, np.ones(num_train_timesteps), sample_size, in_channels)

    def flow_sigma(self, timestep, batch: int) -> torch.Tensor:
        """``s = timestep / T`` [batch] in (0, 1]."""
        t = torch.as_tensor(timestep, dtype=torch.float64, device=self.log_weights.device)
        t = t.reshape(-1).expand(batch) if t.numel() == 1 else t.reshape(-1)
        if t.shape[0] != batch:
            raise ValueError(f"timestep has {t.shape[0]} values for a batch of {batch}")
        s = t / self.config.num_train_timesteps
        if torch.any(s <= 0) or torch.any(s > 1):
            raise ValueError(f"flow timestep outside (0, {self.config.num_train_timesteps}]: "
                             f"{t.min().item()}..{t.max().item()}")
        return s

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True, **kwargs):
        n = sample.shape[0]
        x = sample.reshape(n, -1).double()
        s = self.flow_sigma(timestep, n).to(x.device)
        r = torch.sqrt((1 - s) ** 2 + s ** 2)
        _, mean = self.posterior(x / r[:, None], ((1 - s) / r) ** 2)
        v = ((x - mean) / s[:, None]).to(sample.dtype).reshape(sample.shape)
        return UNet2DOutput(sample=v) if return_dict else (v,)


def posterior_classifier(denoiser: ExactMixtureDenoiser, labels):
    """Classifier images [N, C, H, W] in [0, 1] -> the mixture's exact posterior at
    timestep 0 (alpha_bar = 1) [N, K] float32 on cpu; x = 2 * img - 1 in model space."""
    labels = tuple(str(label) for label in labels)
    if len(labels) != denoiser.config.num_components:
        raise ValueError(f"{len(labels)} labels for {denoiser.config.num_components} components")

    @torch.no_grad()
    def classify(images: torch.Tensor) -> torch.Tensor:
        x = (2 * images.to(denoiser.means.device).double() - 1).reshape(images.shape[0], -1)
        ab = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        post, _ = denoiser.posterior(x, ab)
        return post.float().cpu()

    classify.labels = labels
    return classify


# ---------------------------------------------------------------- built-in model

LABELS = ("a0", "a1", "b0", "b1")          # class names: group letter, class digit
GROUPS = {"a": (0, 1), "b": (2, 3)}        # coarse feature: group -> label indices


def hierarchical_mixture(group_scale: float = 0.75, class_scale: float = 0.1,
                         std: float = 0.03, sample_size: int = 8) -> GaussianMixture:
    """2 groups x 2 classes of isotropic Gaussians in d = sample_size**2 dimensions:
    mean = group_scale * (+-h1) + class_scale * (+-h2), h1, h2 orthogonal +-1 (Hadamard)
    patterns, so |group gap| = 2 group_scale sqrt(d) >> |class gap| = 2 class_scale sqrt(d)
    >> std: coarse decided earlier (larger ou_time) than fine, and the posterior
    classifier is exact at t = 0. Entries stay within +-(group_scale + class_scale)."""
    from scipy.linalg import hadamard

    d = sample_size * sample_size
    if d & (d - 1):
        raise ValueError(f"sample_size**2 must be a power of 2, got {d}")
    h = hadamard(d).astype(np.float64)
    h1, h2 = h[1], h[2]
    means = [group_scale * g * h1 + class_scale * c * h2 for g in (1, -1) for c in (1, -1)]
    return GaussianMixture(np.array(means), np.full(4, 0.25), std ** 2)


@dataclass(frozen=True)
class GaussianMixtureModel:
    """The built-in `--model gaussian-mixture`: pipeline, classifier, features, mixture."""

    pipe: DDPMPipeline
    classifier: object      # images [N, 1, H, W] in [0, 1] -> posterior [N, 4] (labels LABELS)
    features: list          # diffusion_windows.features.Feature: "class" and "group"
    mixture: GaussianMixture  # in model space (x = 2 img - 1)


def gaussian_mixture_model(device: str = "cpu", sample_size: int = 8) -> GaussianMixtureModel:
    """DDPMPipeline (linear schedule, 1000 training timesteps, clip_sample=False) whose unet
    is the exact denoiser of `hierarchical_mixture()`; its classifier is the mixture's exact
    posterior at t = 0. Model-space samples lie inside [-1, 1] up to a mass of 1.4e-7 per
    pixel, 9e-6 per sample (means at most 0.85 from 0, 5 std from the edge; see
    `outside_mass`), so decoding's clamp to [0, 1] is harmless."""
    mixture = hierarchical_mixture(sample_size=sample_size)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                              clip_sample=False)
    unet = ExactMixtureDenoiser.from_mixture(mixture, scheduler.alphas_cumprod.double().numpy(),
                                             sample_size=sample_size, in_channels=1)
    return _mixture_model(DDPMPipeline(unet=unet.to(device), scheduler=scheduler), mixture)


def gaussian_mixture_flow_model(device: str = "cpu", sample_size: int = 8, shift: float = 3.0) -> GaussianMixtureModel:
    """The same mixture as `gaussian_mixture_model` as a flow-matching model: its exact velocity
    (`ExactFlowDenoiser`, timestep ``1000 s``) under `FlowAncestralScheduler` (``shift=3`` as SD3,
    a stochastic sampler: the forward-reverse experiment); ``--scheduler flow-euler`` gives the
    flow ODE instead. The pipeline (a ``DDPMPipeline`` used as a container of unet and scheduler:
    its loop is the flow loop too) is restarted by the hooks like any other."""
    from .flow_ancestral import FlowAncestralScheduler

    mixture = hierarchical_mixture(sample_size=sample_size)
    scheduler = FlowAncestralScheduler(num_train_timesteps=1000, shift=shift)
    unet = ExactFlowDenoiser.from_flow_mixture(mixture, sample_size=sample_size, in_channels=1)
    return _mixture_model(DDPMPipeline(unet=unet.to(device), scheduler=scheduler), mixture)


def _mixture_model(pipe, mixture: GaussianMixture) -> GaussianMixtureModel:
    """The pipeline with the mixture's posterior classifier and its class and group features."""
    from ..features import Feature

    pipe.set_progress_bar_config(disable=True)
    classifier = posterior_classifier(pipe.unet, LABELS)
    features = [Feature("class", {name: (i,) for i, name in enumerate(LABELS)}),
                Feature("group", dict(GROUPS))]
    return GaussianMixtureModel(pipe, classifier, features, mixture)


def outside_mass(mixture: GaussianMixture) -> tuple[float, float]:
    """(expected fraction of pixels, probability that a sample has any pixel) outside [-1, 1]
    for an isotropic mixture in model space."""
    from scipy.stats import norm

    sd = np.sqrt(mixture.var)[:, None]
    p = norm.sf((1 - mixture.means) / sd) + norm.cdf((-1 - mixture.means) / sd)  # [K, d]
    per_pixel = float(mixture.weights @ p.mean(1))
    any_pixel = float(mixture.weights @ (1 - np.prod(1 - p, axis=1)))
    return per_pixel, any_pixel

"""Exact mixture denoiser as a diffusers unet (THEORY.md, "Closed forms and estimators")."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from scipy.stats import multivariate_normal

from diffusion_windows import theory as th
from diffusion_windows.diffusion.exact import (ExactMixtureDenoiser, gaussian_mixture_model,
                                              outside_mass)


def direct_posterior_mean(mix, y, ab):
    """E[X | Y = y] by Bayes' rule on each component, written out with scipy densities."""
    a = np.sqrt(ab)
    out = []
    for yi in y:
        logp, cond = [], []
        for k in range(mix.num_components):
            s = mix.component_cov(k)
            c = ab * s + (1 - ab) * np.eye(mix.dim)
            logp.append(np.log(mix.weights[k]) + multivariate_normal(a * mix.means[k], c).logpdf(yi))
            cond.append(mix.means[k] + a * s @ np.linalg.solve(c, yi - a * mix.means[k]))
        p = np.exp(np.array(logp) - max(logp))
        out.append((p / p.sum()) @ np.array(cond))
    return np.array(out)


@pytest.mark.parametrize("cov", ["iso", "full"])
def test_noise_prediction_is_the_posterior_mean(cov):
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 4))
    if cov == "iso":
        mix = th.GaussianMixture(means, [0.2, 0.3, 0.5], [0.1, 0.5, 0.0])
    else:
        a = rng.normal(size=(3, 4, 4))
        mix = th.GaussianMixture(means, [0.2, 0.3, 0.5], a @ a.transpose(0, 2, 1) / 4 + 0.05 * np.eye(4))
    sched = DDPMScheduler(num_train_timesteps=1000)
    ac = sched.alphas_cumprod.double().numpy()
    unet = ExactMixtureDenoiser.from_mixture(mix, ac, sample_size=2, in_channels=1)
    x = torch.tensor(rng.normal(size=(5, 1, 2, 2)), dtype=torch.float32)
    timesteps = torch.tensor([0, 10, 250, 600, 999])
    eps = unet(x, timesteps).sample
    assert eps.shape == x.shape and eps.dtype == torch.float32
    y = x.reshape(5, -1).double().numpy()
    for i, t in enumerate(timesteps.tolist()):
        mean = direct_posterior_mean(mix, y[i:i + 1], ac[t])
        expect = (y[i] - np.sqrt(ac[t]) * mean[0]) / np.sqrt(1 - ac[t])
        np.testing.assert_allclose(eps[i].reshape(-1).double().numpy(), expect, rtol=1e-4, atol=1e-5)
        # a scalar timestep gives the same prediction as a per-sample one
        np.testing.assert_allclose(unet(x[i:i + 1], t).sample.numpy(), eps[i:i + 1].numpy(), atol=1e-6)


def test_builtin_model_pipeline_and_classifier():
    model = gaussian_mixture_model()
    pipe = model.pipe
    assert pipe.unet.config.sample_size == 8 and pipe.unet.config.in_channels == 1
    assert pipe.unet.dtype == torch.float32 and pipe.unet.device.type == "cpu"
    assert pipe.scheduler.config.clip_sample is False and pipe.scheduler.config.num_train_timesteps == 1000
    assert [f.name for f in model.features] == ["class", "group"]
    assert outside_mass(model.mixture)[1] < 1e-4
    # the posterior classifier is exact at t = 0 on the mixture's own samples
    x, comp = model.mixture.sample(2000, np.random.default_rng(0))
    images = torch.tensor((x.reshape(-1, 1, 8, 8) + 1) / 2).clamp(0, 1).float()
    probs = model.classifier(images)
    assert probs.shape == (2000, 4) and probs.dtype == torch.float32
    assert model.classifier.labels == ("a0", "a1", "b0", "b1")
    assert (probs.argmax(1).numpy() == comp).all()
    out = pipe(batch_size=4, num_inference_steps=20, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (4, 1, 8, 8) and probs.min() >= 0


def forward_reverse(pipe, x0, timestep, num_inference_steps, seed):
    """Noise x0 to `timestep` (on the grid) and run DDPM ancestral sampling down to 0."""
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(num_inference_steps)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    x = sched.add_noise(x0, noise, torch.tensor([timestep]))
    for t in sched.timesteps[sched.timesteps <= timestep]:
        x = sched.step(pipe.unet(x, t).sample, t, x, generator=g).prev_sample
    return x


@pytest.mark.slow
def test_forward_reverse_matches_ideal_retention():
    model = gaussian_mixture_model()
    ac = model.pipe.scheduler.alphas_cumprod.double().numpy()
    n = 800
    x, _ = model.mixture.sample(n, np.random.default_rng(1), [0])
    x0 = torch.tensor(x.reshape(n, 1, 8, 8), dtype=torch.float32)
    for timestep in (100, 300, 600):
        out = forward_reverse(model.pipe, x0, timestep, 100, seed=timestep)
        label = model.classifier(((out + 1) / 2).clamp(0, 1)).argmax(1).numpy()
        t = -0.5 * np.log(ac[timestep])
        for targ, hit in (([0], label == 0), ([0, 1], label <= 1)):
            ideal = th.retention_curve(model.mixture, [0], targ, t)
            se = np.sqrt(max(ideal * (1 - ideal), 1 / n) / n)
            assert abs(hit.mean() - ideal) <= 4 * se + 0.01, (timestep, targ, hit.mean(), ideal)

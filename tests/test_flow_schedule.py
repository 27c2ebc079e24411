"""Flow matching in the noise table and the schedule: time 1000 s, the exact OU mapping, the
pipeline's grids, restarts on and off them, noise_to, the flow-ancestral step, scheduler swaps,
and flow times in the options (THEORY.md, "Flow matching (time mapping)")."""
import json

import numpy as np
import pytest
import torch
from diffusers import (DDPMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                       UniPCMultistepScheduler)
from tiny_transformers import flux_pipe

from diffusion_windows import options
from diffusion_windows.diffusion import hooks, noise
from diffusion_windows.diffusion import schedule as S
from diffusion_windows.diffusion.denoisers import denoiser
from diffusion_windows.diffusion.flow_ancestral import FlowAncestralScheduler, vp_alpha_bar
from diffusion_windows.diffusion.theory import ScheduleAxis


def dpm_flow(**kw):
    return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, **kw)


def ou_of(s):
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 0.5 * np.log1p((s / (1 - s)) ** 2)


# ----------------------------------------------------------------------------- conversions
def test_time_conversions_at_the_check_values():
    fm = FlowMatchEulerDiscreteScheduler(shift=3.0)
    np.testing.assert_allclose(S.ou_time(fm, [500, 900]), [0.3466, 2.2034], atol=1e-4)
    np.testing.assert_allclose(S.ou_time(fm, [500, 900]), [0.5 * np.log(2), 0.5 * np.log(82)], rtol=1e-12)
    np.testing.assert_allclose(S.alpha_bar(fm, [500, 900]), [0.5, 0.01 / 0.82], rtol=1e-12)
    np.testing.assert_allclose(S.sigma(fm, [500, 900]), [1.0, 9.0], rtol=1e-12)   # VE sigma s / (1 - s)
    np.testing.assert_allclose(S.flow_sigma(fm, [0, 250, 1000]), [0, 0.25, 1])
    assert S.ou_time(fm, 0) == 0 and S.ou_time(fm, 1000) == np.inf and S.num_train_timesteps(fm) == 1000
    t = np.array([0, 0.5, 17.25, 333.3, 500, 900, 999.9, 1000])
    np.testing.assert_allclose(S.timestep_from_ou_time(fm, S.ou_time(fm, t)), t, atol=1e-7)
    np.testing.assert_allclose(vp_alpha_bar(0.5), 0.5)
    with pytest.raises(ValueError, match="outside"):
        S.ou_time(fm, 1000.5)


def test_family_is_decided_from_class_and_config():
    assert noise.scheduler_kind(DPMSolverMultistepScheduler()).family == "vp"
    for s in (dpm_flow(), UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction"),
              FlowMatchEulerDiscreteScheduler(), FlowAncestralScheduler()):
        assert noise.is_flow(s) and S.is_flow(s), type(s).__name__
    # the DPM's beta alphas_cumprod is not its noise: alpha_bar(500) is flow matching's 0.5, not the table's
    sana = dpm_flow()
    assert abs(float(sana.alphas_cumprod[500]) - 0.5) > 0.3
    np.testing.assert_allclose(S.alpha_bar(sana, 500), 0.5)
    assert not noise.is_stochastic(FlowMatchEulerDiscreteScheduler())
    assert noise.is_stochastic(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True))
    assert noise.is_stochastic(FlowAncestralScheduler())
    assert not noise.is_stochastic(sana) and noise.is_stochastic(dpm_flow(algorithm_type="sde-dpmsolver++"))
    assert noise.scheduler_kind(FlowAncestralScheduler()).single_step
    assert not noise.scheduler_kind(sana).single_step


def test_schedule_axis_maps_flow_timesteps_exactly():
    fm = FlowMatchEulerDiscreteScheduler(shift=3.0)
    grid = S.inference_timesteps(fm, 20)
    axis = ScheduleAxis(fm, 20)
    fm.set_timesteps(20)
    sig = fm.sigmas[:-1].double().numpy()
    np.testing.assert_allclose(axis.to_theory(grid), ou_of(grid / 1000), rtol=1e-12)
    np.testing.assert_allclose(axis.to_theory(grid), ou_of(sig), rtol=1e-6)   # the grid's own float32 sigmas
    for t in (12.5, 400.0, 987.0):
        back, side = axis.from_theory(float(ou_of(t / 1000)))
        assert side is None and abs(back - t) < 0.01
    assert axis.beyond(50.0) is None and axis.from_theory(np.inf) == (None, "above")
    # DPM-Solver's integer flow grid: a grid timestep is its own sigma (999 is s = 0.99967, not 0.999)
    sana = dpm_flow()
    g_t, g_s = S.grid_sigmas(sana, 5)
    np.testing.assert_allclose(ScheduleAxis(sana, 5).to_theory(g_t), ou_of(g_s), rtol=1e-12)
    assert abs(g_s[0] - 0.999) > 5e-4


# ----------------------------------------------------------------------------- grids and restart plans
def test_flux_grid_is_the_pipelines_and_restarts_start_anywhere():
    pipe = flux_pipe(guidance_embeds=True)
    den, n = denoiser(pipe), 6
    kw = den.grid_kwargs(n, (8, 8))
    assert set(kw) == {"sigmas", "mu"}
    pe = torch.zeros(1, 5, 32)
    pipe(prompt_embeds=pe, pooled_prompt_embeds=torch.zeros(1, 32), height=8, width=8, num_inference_steps=n,
         output_type="latent")
    stock = pipe.scheduler.timesteps.double().numpy()
    grid = S.inference_timesteps(pipe.scheduler, n, kw)
    np.testing.assert_array_equal(grid, stock)
    with pytest.raises(ValueError, match="mu"):  # dynamic shifting: the grid needs the pipeline's mu
        S.inference_timesteps(pipe.scheduler, n)
    for t in (grid[2], 444.4, 3.0, 0):  # on the grid, off it, below its end, at x0
        sched, seq, start = S.restart_plan(pipe.scheduler, t, n, grid_kwargs=kw)
        seq = seq.double().numpy()
        if t == 0:
            assert len(seq) == 0 and start == 0
            continue
        want = np.concatenate([[t], grid[grid < t - 1e-3]])
        np.testing.assert_allclose(seq, want, atol=1e-4)
        begin = sched.begin_index
        np.testing.assert_allclose(float(sched.sigmas[begin]), t / 1000, rtol=1e-6)
        assert float(sched.sigmas[-1]) == 0 and len(sched.sigmas) - begin == len(seq) + 1
        assert S.restart_timestep(pipe.scheduler, t, n, kw) == pytest.approx(t, abs=1e-4)


def test_static_shift_and_shift_terminal_grids_restart_on_them():
    for sched in (FlowMatchEulerDiscreteScheduler(shift=3.0),
                  FlowMatchEulerDiscreteScheduler(shift=3.0, shift_terminal=0.05)):
        fresh = FlowMatchEulerDiscreteScheduler.from_config(sched.config)
        fresh.set_timesteps(8)
        grid = S.inference_timesteps(sched, 8)
        np.testing.assert_array_equal(grid, fresh.timesteps.double().numpy())
        _, seq, _ = S.restart_plan(sched, 600, 8)
        assert seq[0] == 600 and np.allclose(seq[1:].double().numpy(), grid[grid < 600])
    assert S.inference_timesteps(FlowMatchEulerDiscreteScheduler(shift=3.0, shift_terminal=0.05), 8)[-1] == \
        pytest.approx(50, abs=1e-3)


def test_dpm_flow_restarts_snap_to_the_grid_below():
    sana = dpm_flow()
    grid = S.inference_timesteps(sana, 5)
    np.testing.assert_array_equal(grid, [999, 922, 817, 666, 428])
    assert S.restart_timestep(sana, 517, 5) == 428 and S.restart_timestep(sana, 922, 5) == 922
    assert S.restart_timestep(sana, 100, 5) == 100 and len(S.restart_plan(sana, 100, 5)[1]) == 0
    np.testing.assert_allclose(S.flow_sigma(sana, [999, 500], 5), [0.99966645, 0.5], rtol=1e-6)


# ----------------------------------------------------------------------------- noise_to
def test_noise_to_flow_mean_and_variance():
    fm = FlowMatchEulerDiscreteScheduler(shift=3.0)
    x0 = torch.full((4000, 1, 4, 4), 0.7)
    for t in (600, 123.4):
        s = t / 1000
        x = hooks.noise_to(fm, x0, t, generator=torch.Generator().manual_seed(0)).double()
        se = (s * s / x.numel()) ** 0.5
        assert abs(x.mean().item() - (1 - s) * 0.7) < 5 * se
        assert abs(x.var().item() / s ** 2 - 1) < 0.03
    noise_ = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    out = hooks.noise_to(fm, x0[:3], torch.tensor([0.0, 500.0, 1000.0]), noise=noise_)
    torch.testing.assert_close(out, torch.stack([x0[0], 0.5 * x0[1] + 0.5 * noise_[1], noise_[2]]))


# ----------------------------------------------------------------------------- the flow-ancestral step
@pytest.mark.parametrize("k", [0, 3, 6])
def test_flow_ancestral_is_ddpms_posterior_step_at_the_matched_vp_levels(k):
    """x / r at s is the VP state at alpha_bar(s): the step equals DDIM with eta = 1 (the DDPM
    posterior, Ho et al. eq. 7) between alpha_bar(s) and alpha_bar(s'), given the same x0 and noise."""
    from diffusers import DDIMScheduler

    flow = FlowAncestralScheduler(shift=3.0)
    flow.set_timesteps(8)
    s, s_next = float(flow.sigmas[k]), float(flow.sigmas[k + 1])
    r, r_next = np.hypot(1 - s, s), np.hypot(1 - s_next, s_next)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(k))
    x0 = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(10 + k))
    flow.set_begin_index(k)
    ours = flow.step((x - x0) / s, flow.timesteps[k], x, generator=torch.Generator().manual_seed(7)).prev_sample
    vp = DDIMScheduler(num_train_timesteps=2, prediction_type="sample", clip_sample=False, set_alpha_to_one=False)
    vp.alphas_cumprod = torch.tensor([vp_alpha_bar(s_next), vp_alpha_bar(s)], dtype=torch.float32)
    vp.set_timesteps(2)  # timesteps [1, 0]: one step from alpha_bar(s) to alpha_bar(s')
    y = vp.step(x0, 1, x / r, eta=1.0, generator=torch.Generator().manual_seed(7)).prev_sample
    torch.testing.assert_close(ours, y * r_next, atol=2e-5, rtol=2e-5)


def test_flow_ancestral_step_is_the_exact_posterior_of_a_point_mass():
    """Data = a point m: E[x0 | x] = m exactly, so one step from the law at s gives the law at s' exactly."""
    m, n = 0.8, 40000
    sched = FlowAncestralScheduler()
    sched.set_timesteps(5)
    k = 1
    s, s_next, t = float(sched.sigmas[k]), float(sched.sigmas[k + 1]), sched.timesteps[k]
    x = (1 - s) * m + s * torch.randn(n, 1, generator=torch.Generator().manual_seed(2))
    sched.set_begin_index(k)
    out = sched.step((x - m) / s, t, x, generator=torch.Generator().manual_seed(3)).prev_sample.double()
    assert abs(out.mean().item() - (1 - s_next) * m) < 5 * s_next / n ** 0.5
    assert abs(out.var().item() / s_next ** 2 - 1) < 0.03
    # the last step returns x0 = x - s v, with no noise
    last = FlowAncestralScheduler()
    last.set_timesteps(5)
    last.set_begin_index(4)
    x = torch.randn(3, 2)
    s = float(last.sigmas[4])
    torch.testing.assert_close(last.step((x - m) / s, last.timesteps[4], x).prev_sample, torch.full((3, 2), m))


def test_flow_ancestral_noise_is_per_sample():
    sched = FlowAncestralScheduler(shift=3.0)
    sched.set_timesteps(4)
    x, v = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    batch = sched.step(v, sched.timesteps[1], x, generator=gens()).prev_sample
    for i in range(3):
        one = FlowAncestralScheduler(shift=3.0)
        one.set_timesteps(4)
        one.set_begin_index(1)
        out = one.step(v[i:i + 1], one.timesteps[1], x[i:i + 1], generator=[gens()[i]]).prev_sample
        torch.testing.assert_close(out, batch[i:i + 1])
    with pytest.raises(ValueError, match="index"):
        sched.step(v, 3, x)


# ----------------------------------------------------------------------------- scheduler swaps
def test_flow_ancestral_keeps_the_grid_of_the_scheduler_it_replaces():
    for src, kw in ((FlowMatchEulerDiscreteScheduler(shift=3.0), {}),
                    (FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), {"mu": 0.8}),
                    (FlowMatchEulerDiscreteScheduler(shift=3.0, shift_terminal=0.05), {})):
        ours = S.make_scheduler("flow-ancestral", src)
        assert isinstance(ours, FlowAncestralScheduler)
        np.testing.assert_array_equal(S.inference_timesteps(ours, 7, kw), S.inference_timesteps(src, 7, kw))
        back = S.make_scheduler("flow-euler", ours)
        assert type(back) is FlowMatchEulerDiscreteScheduler
        np.testing.assert_array_equal(S.inference_timesteps(back, 7, kw), S.inference_timesteps(src, 7, kw))
    sana = dpm_flow()
    ours = S.make_scheduler("flow-ancestral", sana)
    assert ours.config.sigma_schedule == "dpm-flow"
    np.testing.assert_allclose(S.grid_sigmas(ours, 9)[1], S.grid_sigmas(sana, 9)[1], rtol=1e-6)
    with pytest.raises(ValueError, match="flow-euler"):
        S.make_scheduler("flow-euler", sana)
    with pytest.raises(ValueError, match="trained for flow matching; valid: flow-ancestral, flow-euler"):
        S.make_scheduler("ddpm", FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="VP/VE"):
        S.make_scheduler("flow-ancestral", DDPMScheduler())


# ----------------------------------------------------------------------------- options
def test_flow_timesteps_in_the_options(tmp_path):
    assert options.parse_timesteps("0:1000:250", 1000, flow=True) == [0, 250, 500, 750]
    assert options.parse_timesteps("0:1:0.25", 1000, flow=True) == [0, 0.25, 0.5, 0.75]
    assert options.parse_timesteps("1000,12.5,333.3", 1000, flow=True) == [12.5, 333.3, 1000]
    with pytest.raises(options.OptionError, match="outside"):
        options.parse_timesteps("1000.5", 1000, flow=True)
    with pytest.raises(options.OptionError, match="not an integer"):
        options.parse_timesteps("12.5", 1000)
    o = options.resolve({"model": "gaussian-mixture-flow", "timesteps": "12.5,1000", "out": str(tmp_path / "a")})
    assert o["timesteps"] == [12.5, 1000]
    for bad, match in (({"model": "gaussian-mixture-flow", "scheduler": "ddpm"}, "flow-ancestral, flow-euler"),
                       ({"scheduler": "flow-ancestral"}, "VP/VE"),
                       ({"class_label": "3"}, "not a class-conditional"),
                       ({"model": "gaussian-mixture-flow", "height": 16}, "one size")):
        with pytest.raises(options.OptionError, match=match):
            options.resolve({**bad, "out": str(tmp_path / "b")})
    # a folder's scheduler config decides the unit; a DiT folder needs --class-label
    for name, cls, extra in (("flow", "FlowMatchEulerDiscreteScheduler", {}),
                             ("sana", "DPMSolverMultistepScheduler", {"use_flow_sigmas": True}),
                             ("dit", "DDIMScheduler", {})):
        folder = tmp_path / name
        (folder / "scheduler").mkdir(parents=True)
        (folder / "scheduler" / "scheduler_config.json").write_text(
            json.dumps({"_class_name": cls, "num_train_timesteps": 1000, **extra}))
        index = {"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"]} \
            if name == "dit" else {"_class_name": "X", "transformer": ["diffusers", "Y"]}
        (folder / "model_index.json").write_text(json.dumps(index))
    for name in ("flow", "sana"):
        o = options.resolve({"model": str(tmp_path / name), "timesteps": "333.3", "labels": "a,b", "clip_model": "RN50",
                             "out": str(tmp_path / "c")})
        assert o["timesteps"] == [333.3]
    with pytest.raises(options.OptionError, match="--class-label"):
        options.resolve({"model": str(tmp_path / "dit"), "out": str(tmp_path / "d")})

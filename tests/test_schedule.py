"""schedule.py: conversions (round trips, closed forms), grids, scheduler kinds, restart rules."""
import copy

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from diffusers.configuration_utils import FrozenDict

from diffusion_windows.diffusion import schedule as S

NAMES = [n for n in S.SCHEDULERS if n not in S.FLOW_SCHEDULERS]  # flow: tests/test_flow_schedule.py


@pytest.fixture(params=NAMES)
def scheduler(request):
    return S.make_scheduler(request.param)


def test_alpha_bar_is_alphas_cumprod_at_integers(scheduler):
    t = np.arange(0, 1000, 37)
    np.testing.assert_allclose(S.alpha_bar(scheduler, t), scheduler.alphas_cumprod.double().numpy()[t],
                               rtol=1e-10)
    assert S.num_train_timesteps(scheduler) == 1000


def test_round_trips(scheduler):
    t = np.concatenate([np.arange(0, 1000, 13), [0.25, 17.5, 998.9, 999]])
    a = S.alpha_bar(scheduler, t)
    np.testing.assert_allclose(S.timestep_from_alpha_bar(scheduler, a), t, atol=1e-6)
    np.testing.assert_allclose(S.timestep_from_ou_time(scheduler, S.ou_time(scheduler, t)), t, atol=1e-6)
    np.testing.assert_allclose(S.timestep_from_sigma(scheduler, S.sigma(scheduler, t)), t, atol=1e-6)
    np.testing.assert_allclose(S.alpha_bar_from_ou_time(S.ou_time_from_alpha_bar(a)), a, rtol=1e-12)
    np.testing.assert_allclose(S.alpha_bar_from_sigma(S.sigma_from_alpha_bar(a)), a, rtol=1e-12)
    np.testing.assert_allclose(np.exp(-2 * S.ou_time(scheduler, t)), a, rtol=1e-12)
    np.testing.assert_allclose(S.sigma(scheduler, t), np.sqrt((1 - a) / a), rtol=1e-10)
    assert np.all(np.diff(S.ou_time(scheduler, np.arange(1000))) > 0)  # monotone
    # inverse maps clip to [0, T-1]
    assert S.timestep_from_sigma(scheduler, 1e9) == 999 and S.timestep_from_alpha_bar(scheduler, 1.0) == 0


def test_fractional_timesteps_follow_euler_sigmas():
    s = S.make_scheduler("euler")
    s.set_timesteps(7)
    grid = S.inference_timesteps(s, 7)
    assert np.any(grid != np.round(grid))  # linspace grid: fractional
    np.testing.assert_allclose(S.sigma(s, grid), s.sigmas[:-1].double().numpy(), rtol=1e-6)


def test_inference_timesteps_never_modify_and_drop_repeats():
    for name, n in [("ddim", 10), ("heun", 10), ("pndm", 10), ("dpm++", 7)]:
        s = S.make_scheduler(name)
        before = copy.deepcopy(s.__dict__)
        grid = S.inference_timesteps(s, n)
        assert len(grid) == n and np.all(np.diff(grid) < 0), name
        assert s.num_inference_steps == before["num_inference_steps"] and set(s.__dict__) == set(before)
        assert repr(s.timesteps) == repr(before["timesteps"])
    ddim = S.make_scheduler("ddim")
    np.testing.assert_array_equal(S.inference_timesteps(ddim, 10), np.arange(900, -1, -100))
    with pytest.raises(ValueError, match="0"):
        S.inference_timesteps(ddim, 0)


@pytest.mark.parametrize("name, eta, expected", [
    ("ddpm", None, True), ("ddim", None, False), ("ddim", 0.0, False), ("ddim", 1.0, True),
    ("euler", None, False), ("euler-ancestral", None, True), ("heun", None, False),
    ("dpm++", None, False), ("unipc", None, False), ("pndm", None, False)])
def test_is_stochastic(name, eta, expected):
    assert S.is_stochastic(S.make_scheduler(name), eta=eta) is expected


def test_is_stochastic_dpm_sde_and_variance_exploding():
    sde = S.make_scheduler("dpm++", {"algorithm_type": "sde-dpmsolver++"})
    assert S.is_stochastic(sde)
    assert [S.is_variance_exploding(S.make_scheduler(n)) for n in NAMES] == [
        n in ("euler", "euler-ancestral", "heun") for n in NAMES]


def test_make_scheduler_swaps_as_the_stock_idiom_does(tmp_path):
    """Stock: a scheduler loaded from disk swaps exactly as ``Cls.from_config(pipe.scheduler.config)``."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

    PNDMScheduler(beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1).save_config(tmp_path)
    loaded = PNDMScheduler.from_pretrained(tmp_path)
    for name, cls in (("euler", EulerDiscreteScheduler), ("ddim", DDIMScheduler)):
        ours, stock = S.make_scheduler(name, loaded), cls.from_config(loaded.config)
        assert type(ours) is cls and dict(ours.config) == dict(stock.config)
        np.testing.assert_array_equal(S.inference_timesteps(ours, 20), S.inference_timesteps(stock, 20))
    same = S.make_scheduler("pndm", loaded)
    assert same is not loaded and dict(same.config) == dict(loaded.config)


def test_make_scheduler_keeps_settings_changed_after_construction():
    s = S.make_scheduler("ddim")
    config = dict(s.config)
    config["steps_offset"] = 1  # what StableDiffusionPipeline.__init__ does
    s._internal_dict = FrozenDict(config)
    assert S.make_scheduler("ddim", s).config.steps_offset == 1
    assert S.make_scheduler("euler", s.config).config.steps_offset == 1
    assert S.make_scheduler("euler", s).config.timestep_spacing == "linspace"  # a true default
    with pytest.raises(ValueError, match="ddpm, ddim, euler"):
        S.make_scheduler("lms")


@pytest.mark.parametrize("bad", [-1, 1000, 2.5, float("nan"), "abc", torch.tensor([1, 2])])
def test_check_timestep_refuses(bad):
    with pytest.raises(ValueError, match="timestep"):
        S.check_timestep(S.make_scheduler("ddpm"), bad)


def test_check_timestep_grid_values():
    s = S.make_scheduler("euler")
    grid = S.inference_timesteps(s, 7)
    assert S.check_timestep(s, grid[1], grid) == grid[1]
    assert S.check_timestep(s, 500, grid) == 500.0
    with pytest.raises(ValueError, match="500.5"):
        S.check_timestep(s, 500.5, grid)


@pytest.mark.parametrize("name, expected", [
    ("ddpm", 505.0), ("euler", 505.0), ("heun", 505.0), ("dpm++", 505.0),  # custom timesteps
    ("ddim", 500.0), ("euler-ancestral", 444.0), ("unipc", 500.0), ("pndm", 500.0)])  # round down
def test_restart_timestep_off_grid(name, expected):
    s = S.make_scheduler(name)
    assert S.restart_timestep(s, 505, 10) == pytest.approx(expected, abs=1e-3)
    grid = S.inference_timesteps(s, 10)
    assert S.restart_timestep(s, grid[3], 10) == grid[3]  # on the grid: itself
    _, seq, _ = S.restart_plan(s, 505, 10)
    assert float(seq[0]) == pytest.approx(expected, abs=1e-3)


def test_restart_below_the_grid_runs_nothing():
    s = S.make_scheduler("unipc")  # grid ends at 100 here
    assert S.restart_timestep(s, 40, 10) == 40
    assert len(S.restart_plan(s, 40, 10)[1]) == 0


def test_pndm_restart_is_a_fresh_pndm_on_the_sub_grid():
    s = S.make_scheduler("pndm", {"skip_prk_steps": True})
    _, seq, _ = S.restart_plan(s, 500, 10)
    assert seq.tolist() == [500, 400, 400, 300, 200, 100, 0]  # PLMS warm-up repeats one timestep
    prk = S.make_scheduler("pndm")
    _, seq, _ = S.restart_plan(prk, 100, 10)  # too short for Runge-Kutta: PLMS warm-up
    assert seq.tolist() == [100, 0, 0] and prk.config.skip_prk_steps is False


def test_costs_and_grids_follow_a_scheduler_changed_in_place():
    """Cached grids and restart costs are keyed by the scheduler's settings, not by the object: a
    pipeline's scheduler changed in place never gets the costs or sigmas of its old settings."""
    from diffusion_windows.diffusion.backend import staircase_nfe

    s = DDPMScheduler()
    grid = S.inference_timesteps(s, 10)  # "leading": 900, 800, ..., 0
    assert staircase_nfe(grid, [950], 1, s, 10) == 1 + 10  # off the grid: its own step, then the grid's
    s.register_to_config(timestep_spacing="trailing")  # the grid becomes 999, 899, ..., 99
    fresh = DDPMScheduler(timestep_spacing="trailing")
    assert staircase_nfe(grid, [950], 1, s, 10) == staircase_nfe(grid, [950], 1, fresh, 10) == 1 + 9
    assert S.restart_timestep(s, 950, 10) == 950.0 and S.inference_timesteps(s, 10)[0] == 999

    e = EulerDiscreteScheduler()
    before = S.grid_sigmas(e, 10)[1]
    e.register_to_config(use_karras_sigmas=True)
    np.testing.assert_allclose(S.grid_sigmas(e, 10)[1], S.grid_sigmas(EulerDiscreteScheduler(use_karras_sigmas=True),
                                                                    10)[1])
    assert not np.allclose(S.grid_sigmas(e, 10)[1], before)
    e = EulerDiscreteScheduler()
    ts = S.inference_timesteps(e, 10)
    S.sigma(e, ts, 10)
    e.alphas_cumprod = e.alphas_cumprod ** 2  # a new noise schedule, set in place
    np.testing.assert_allclose(S.sigma(e, ts, 10), S.sigma(e, ts), rtol=1e-6)  # the grid's sigmas are the new table's
    e.alphas_cumprod.mul_(0.9)  # the same tensor, changed in place
    np.testing.assert_allclose(S.sigma(e, ts, 10), S.sigma(e, ts), rtol=1e-6)

"""The adaptive timestep search on synthetic retention curves with known edges."""
import numpy as np
import pytest

from diffusion_windows.measure import coarse_grid, refine_edges, staircase_nfe, unit_seed
from diffusion_windows.windows import window_edges

GRID = np.arange(0, 1000, 20)  # a 50-step DDPM grid (training timesteps)


def logistic(center, width, floor):
    return lambda t: floor + (1 - floor) / (1 + np.exp((np.asarray(t, float) - center) / width))


def search(curves, precision):
    """Run the search with exact retention: returns measured timesteps per key and rounds."""
    measured = {k: set(coarse_grid(GRID)) for k in curves}
    rounds = 0
    while True:
        state = {}
        for k, (f, floor) in curves.items():
            ts = sorted(measured[k])
            s, e = window_edges(ts, f(ts), floor)
            state[k] = (ts, s, e)
        new = refine_edges(GRID, state, precision)
        if not new:
            return measured, state, rounds
        for k, ts in new.items():
            measured[k].update(ts)
        rounds += 1


@pytest.mark.parametrize("center,width", [(300, 30), (555, 20), (720, 60)])
def test_search_finds_full_grid_edges(center, width):
    f, floor = logistic(center, width, 0.1), 0.1
    full = window_edges(GRID, f(GRID), floor)
    measured, state, rounds = search({"v": (f, floor)}, precision=20)
    _, s, e = state["v"]
    assert (s, e) == full
    # bisection from the coarse spacing (~120) down to one grid step: about log2(6) rounds
    assert rounds <= 4
    # it measured far fewer timesteps than the full grid: 9 coarse + <= 3 per edge
    assert len(measured["v"]) <= 9 + 2 * 3
    assert len(measured["v"]) < len(GRID) / 2.5


def test_precision_two_steps_stops_earlier():
    f, floor = logistic(500, 25, 0.2), 0.2
    fine, _, r_fine = search({"v": (f, floor)}, precision=20)
    coarse, state, r_coarse = search({"v": (f, floor)}, precision=40)
    assert len(coarse["v"]) < len(fine["v"]) and r_coarse < r_fine
    full = window_edges(GRID, f(GRID), floor)
    _, s, e = state["v"]
    assert abs(s - full[0]) <= 40 and abs(e - full[1]) <= 40


def test_refine_only_touches_unresolved_keys():
    state = {"done": (list(range(0, 1000, 20)), 200.0, 500.0), "todo": ([0, 480, 960], 0.0, 480.0)}
    new = refine_edges(GRID, state, 40)
    assert set(new) == {"todo"}
    # start 0 and end 480 share the bracket [0, 480]: one midpoint serves both
    assert new["todo"] == [240]


def test_no_edges_no_refinement():
    assert refine_edges(GRID, {"v": ([0, 500, 980], None, None)}, 20) == {}


def test_staircase_nfe_counts_steps_below_each_start():
    class DDPM:  # only the class name matters
        pass

    # restarts from grid timestep 0 take 1 step, from 980 all 50
    assert staircase_nfe(GRID, [0], 1, DDPM()) == 1
    assert staircase_nfe(GRID, [980], 1, DDPM()) == 50
    assert staircase_nfe(GRID, [0, 980], 4, DDPM()) == 4 * 51


def test_unit_seed_depends_only_on_identity():
    a = unit_seed(0, "forward", 3, 500, 1)
    assert a == unit_seed(0, "forward", 3, 500, 1)
    assert a == unit_seed(0, "forward", 3, 500.0, 1)
    assert a != unit_seed(1, "forward", 3, 500, 1)
    assert a != unit_seed(0, "reverse", 3, 500, 1)
    assert 0 <= a < 2 ** 63

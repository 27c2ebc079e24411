"""Token-level localization by bisection: synthetic retention curves with binomial noise."""
import numpy as np
import pytest

from diffusion_windows.text.localize import localize, wilson


def noisy(curve, n, seed=0):
    """retention(kept) -> (kept_count, n) drawn from Binomial(n, curve(kept)), counting calls."""
    rng = np.random.default_rng(seed)
    calls = []

    def retention(kept):
        calls.append(kept)
        return int(rng.binomial(n, curve(kept))), n
    return retention, calls


@pytest.mark.parametrize("where", [1, 37, 137, 199, 200])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_is_found_with_few_calls(where, seed):
    retention, calls = noisy(lambda k: 0.1 if k < where else 0.95, n=64, seed=seed)
    found = localize(retention, 200)
    assert found.position == where and found.resolved
    assert found.interval[0] <= where <= found.interval[1] and found.interval[1] - found.interval[0] <= 8
    assert found.calls == len(calls) == len(set(calls)) <= 16   # a full scan costs 201
    assert abs(found.jump - 0.85) < 0.2


def test_two_steps_the_larger_wins_and_both_stay_candidates_under_noise():
    curve = lambda k: 0.1 + 0.3 * (k >= 50) + 0.5 * (k >= 120)
    retention, _ = noisy(curve, n=400)
    found = localize(retention, 200)
    assert found.position == 120
    assert found.candidates == ((50, 50), (120, 120)) and found.interval == (50, 120)


def test_ramp_and_flat_leave_wide_intervals():
    for curve in (lambda k: k / 100, lambda k: 0.6):
        retention, calls = noisy(curve, n=64)
        found = localize(retention, 100, budget=12)
        assert len(calls) == found.calls <= 12
        assert found.interval[1] - found.interval[0] >= 50   # no single token decides


def test_exact_step_without_noise_needs_log_calls():
    retention, calls = noisy(lambda k: float(k >= 613), n=32)
    found = localize(retention, 1000)
    assert found.position == 613 and found.interval == (613, 613)
    assert len(calls) <= 2 + 10 + 2


def test_wilson_and_arguments():
    lo, hi = wilson(32, 64, 1.96)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-12
    assert wilson(0, 0, 2.0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least one token"):
        localize(lambda k: (1, 1), 0)
    with pytest.raises(ValueError, match="budget of at least 2"):
        localize(lambda k: (1, 1), 5, budget=1)
    with pytest.raises(ValueError, match=r"retention\(0\) returned \(3, 2\)"):
        localize(lambda k: (3, 2), 5)

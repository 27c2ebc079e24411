"""End to end on the exact denoiser of the built-in Gaussian mixture: measurement sits on theory."""
import json

import numpy as np
import pytest

from diffusion_windows import run_sweep


def coverage(records):
    """Fraction of grid points whose ideal retention lies inside the measured band."""
    inside = total = 0
    for r in records:
        if r["parent"] is not None or r["retention"] is None:
            continue
        lo, hi, ideal = (np.asarray(r[k], float) for k in ("ci_low", "ci_high", "ideal_retention"))
        inside += int(((ideal >= lo - 1e-9) & (ideal <= hi + 1e-9)).sum())
        total += len(ideal)
    return inside / total


@pytest.mark.slow
def test_measured_retention_sits_on_the_ideal_curve(tmp_path):
    out = run_sweep(model="gaussian-mixture", samples=32, restarts=8, timesteps="0:1000:100",
                    num_inference_steps=50, seed=1, out=str(tmp_path / "gm"), quiet=True)
    d = json.loads((out / "windows.json").read_text())
    assert d["sampler"]["stochastic"] is True and d["theory"]["available"] is True
    recs = d["features"]
    assert {r["feature"] for r in recs} == {"class", "group"}
    assert coverage(recs) >= 0.85
    top = [r for r in recs if r["parent"] is None and r["retention"] is not None]
    # the theory's bracket holds for the measured windows (T_after <= start, end <= T_before)
    holds = [r["bracket_holds"] for r in top if r["bracket_holds"] is not None]
    assert holds and np.mean(holds) >= 0.75
    # coarse before fine: the group is decided at larger timesteps than the class inside it
    group_end = max(r["end_timestep"] for r in top if r["feature"] == "group" and r["end_timestep"] is not None)
    class_end = min(r["end_timestep"] for r in top if r["feature"] == "class" and r["end_timestep"] is not None)
    assert group_end > class_end

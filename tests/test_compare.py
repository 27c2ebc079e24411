"""Theory beside measurement: predictions beyond the schedule are flagged, never clipped onto it."""
import types

import numpy as np
from diffusers import DDPMScheduler

from diffusion_windows.diffusion import schedule
from diffusion_windows.analysis.compare import _fields
from diffusion_windows.analysis.records import WindowRecord
from diffusion_windows.diffusion.theory import ScheduleAxis


def prediction(t_after_ou, t_before_ou):
    return types.SimpleNamespace(t_after_ou=t_after_ou, t_before_ou=t_before_ou, t_start_before_ou=np.inf,
                                 window_exists=True, speciation_ou=9.0, eps_after=0.05, eps_before=0.05,
                                 delta_after=0.1, delta_before=0.1, w_after=1.0, w_before=0.0, base_rate=0.5)


def test_theory_beyond_the_schedule_is_flagged_not_clipped():
    sched = DDPMScheduler()
    top = float(schedule.ou_time(sched, 999))
    assert 4 < top < 6  # linear DDPM schedule: alpha_bar(999) ~ 4e-5
    rec = WindowRecord("digit", "3", start_timestep=200.0, end_timestep=900.0)
    axis = ScheduleAxis(sched)
    f = _fields(axis, prediction(0.1, top + 2.0), rec)
    assert f["t_before_timestep"] is None and f["t_before_beyond"] == "above"
    assert f["t_after_timestep"] is not None and f["t_after_beyond"] is None
    assert f["speciation_timestep"] is None  # 9.0 lies beyond the schedule too
    # the bracket is still decided, in ou_time: the measured end lies below a T_before past the schedule's end
    assert f["bracket_holds"] is True and f["t_before_minus_end"] is None
    assert f["t_before_minus_end_ou"] > 2.0
    # a T_after beyond the schedule's end cannot lie below any measured start
    g = _fields(axis, prediction(top + 1.0, top + 2.0), rec)
    assert g["t_after_timestep"] is None and g["t_after_beyond"] == "above" and g["bracket_holds"] is False
    # on the schedule, both ways agree with the timestep comparison
    h = _fields(axis, prediction(float(schedule.ou_time(sched, 300)), 2.0), rec)
    assert h["bracket_holds"] is False and h["start_minus_t_after"] < 0

"""`measure_text_window` on both kinds of language model: the bundled masked-diffusion model (re-masking) and the
bundled causal LM (truncation), in memory; the kind is read off the model (attention both ways or not)."""
import pytest

from diffusion_windows import measure_text_window
from diffusion_windows.text.default import LABELS

GENRE = "regex:(pirate|sailor|ninja|samurai)"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["masked", "text"])
def test_measure_text_window_on_both_kinds(which):
    from diffusion_windows.masked.default import model_folder
    from diffusion_windows.masked.models import load_masked_lm
    from diffusion_windows.text import default, lm

    if which == "masked":
        model, tok, _ = load_masked_lm(model_folder())
    else:
        model, tok = lm.load_lm(default.model_folder())
    grid = (0.0, 0.5, 1.0)
    recs = measure_text_window(model, tok, ["tell a story :"], outcome=GENRE, samples=4, restarts=3,
                               timesteps="0,0.5,1", max_new_tokens=26, num_inference_steps=8)
    assert recs and all(r.timesteps == grid for r in recs)
    assert sum(r.base_rate for r in recs) == pytest.approx(1.0)
    assert any(r.n_base for r in recs)
    for r in (r for r in recs if r.n_base):
        assert r.value in LABELS and r.retention[0] == 1.0     # nothing re-masked or removed: the base's outcome
        assert all(0 <= x <= 1 for x in r.retention)
    twice = measure_text_window(model, tok, ["tell a story :"], outcome=GENRE, samples=4, restarts=3,
                                timesteps="0,0.5,1", max_new_tokens=26, num_inference_steps=8, batch_size=5,
                                kind=which)
    assert [(r.value, r.retention) for r in twice] == [(r.value, r.retention) for r in recs]
    with pytest.raises(Exception, match="valid: text, masked"):
        measure_text_window(model, tok, ["x"], kind="causal")

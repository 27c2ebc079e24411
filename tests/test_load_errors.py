"""A model that cannot be loaded is one line that keeps the cause: the original error's kind and first
line in the message, the error itself as ``__cause__`` (a bug in a model's code must not read as
"could not load" and nothing more)."""
import pytest

from diffusion_windows.backends import ModelLoadError


def test_a_pipeline_whose_loading_raises_a_type_error_says_type_error(monkeypatch, tmp_path):
    import diffusers
    import torch

    from diffusion_windows.diffusion import models

    def broken(*args, **kwargs):
        raise TypeError("__init__() got an unexpected keyword argument 'sample_size'")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", broken)
    with pytest.raises(ModelLoadError) as info:
        models._from_pretrained(str(tmp_path), torch.float32, "cpu")
    msg = str(info.value)
    assert msg.startswith("--model: cannot load") and "\n" not in msg
    assert "TypeError: __init__() got an unexpected keyword argument 'sample_size'" in msg
    assert isinstance(info.value.__cause__, TypeError)


def test_a_language_model_whose_config_raises_says_which_error(monkeypatch, tmp_path):
    import transformers

    from diffusion_windows.text import lm

    def broken(*args, **kwargs):
        raise KeyError("model_type")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", broken)
    with pytest.raises(ValueError, match=r"no readable model config \(KeyError: 'model_type'\)") as info:
        lm.load_lm(tmp_path)
    assert isinstance(info.value.__cause__, KeyError)

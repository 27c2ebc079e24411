"""Tiny models with their own modeling code, exported the way a checkpoint on the hub ships its code: the source
files written as a package, imported, and registered with ``register_for_auto_class`` so that ``save_pretrained``
copies them beside the weights and writes an ``auto_map`` (LLaDA2: ``AutoModelForCausalLM``)."""
import importlib
import sys
import textwrap

CONFIGURATION = '''
from transformers import PretrainedConfig


class CONFIG_CLASS(PretrainedConfig):
    model_type = "MODEL_TYPE"

    def __init__(self, vocab_size=48, hidden_size=32, num_heads=4, max_position_embeddings=64, **kwargs):
        self.vocab_size, self.hidden_size, self.num_heads = vocab_size, hidden_size, num_heads
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)
'''


MODEL_HEAD = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_NAME import CONFIG_CLASS


class MODEL_CLASS(PreTrainedModel):
    """DOC"""

    config_class = CONFIG_CLASS
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.ATTENTION
        self.norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        pass   # torch's own initialisation, drawn when the model is built
'''


def modeling_source(name: str, model_class: str, config_class: str, doc: str, attention: str, body: str) -> str:
    """The source of ``modeling_{name}.py``: a one-layer model ``model_class`` (token and position embeddings,
    the attention layer ``attention`` assigned to ``self``, a norm and an LM head) with the methods ``body``
    (its ``forward``, indented as methods)."""
    head = (MODEL_HEAD.replace("MODEL_CLASS", model_class).replace("CONFIG_CLASS", config_class)
            .replace("NAME", name).replace("DOC", doc).replace("ATTENTION", attention))
    return head + body

def export_classes(root, name: str, modeling: str, *, config_class: str, model_type: str,
                   auto_class="AutoModelForCausalLM"):
    """``(config class, model class)``: ``modeling`` (the source of ``modeling_{name}.py``) beside a tiny config
    ``config_class`` of ``model_type`` (``configuration_{name}.py``: vocabulary, width, heads, positions), written to
    the package ``{name}_src`` under ``root/src``, imported and registered for the Auto classes."""
    from transformers import PretrainedConfig, PreTrainedModel

    configuration = CONFIGURATION.replace("CONFIG_CLASS", config_class).replace("MODEL_TYPE", model_type)

    src = root / "src" / f"{name}_src"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / f"configuration_{name}.py").write_text(textwrap.dedent(configuration))
    (src / f"modeling_{name}.py").write_text(textwrap.dedent(modeling))
    sys.path.insert(0, str(root / "src"))
    try:
        modules = [importlib.import_module(f"{name}_src.{kind}_{name}") for kind in ("configuration", "modeling")]
    finally:
        sys.path.remove(str(root / "src"))
    config, model = (next(v for v in vars(m).values() if isinstance(v, type) and issubclass(v, base)
                          and v.__module__ == m.__name__) for m, base in zip(modules, (PretrainedConfig, PreTrainedModel)))
    config.register_for_auto_class()
    model.register_for_auto_class(auto_class)
    return config, model

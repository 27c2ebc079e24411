"""Masked-diffusion language models by name: a run's resolved options -> a `MaskedBackend`.

- ``"default-masked"``: the bundled story/addition model (`masked.default`), its prompts, outcome,
  features and the story language's exact theory under masking;
- a diffusers ``LLaDA2Pipeline`` folder (``model_index.json``): its
  ``model`` and ``tokenizer`` components, loaded here by the classes the index names (transformers
  ones; a model class transformers lacks is loaded by ``AutoModelForMaskedLM``), its scheduler with
  ``--scheduler pipeline``;
- a diffusers ``DiffusionGemmaPipeline`` folder: loaded by `load_gemma` and run by its own
  scheduler (`masked.gemma.GemmaSampler`: uniform corruption, no mask token; the response rounded up to
  whole canvases);
- a transformers masked-LM folder (``config.json`` + tokenizer).

A folder (or a pipeline's ``model``) whose ``config.json`` has an ``auto_map`` ships its own modeling code
(LLaDA2 checkpoints: ``LLaDA2MoeModelLM`` under ``AutoModelForCausalLM``, as diffusers' LLaDA2Pipeline docs load
it). It loads only with ``trust_remote_code=True`` (``--trust-remote-code``), passed to transformers' config, model
and tokenizer loaders, by the Auto class its ``auto_map`` names (`AUTO_CLASSES`, first found); without it, one
line says to pass the flag. A model is called with token ids, a 2-D attention mask (ones on real positions) and
``position_ids``, as the installed diffusers' ``LLaDA2Pipeline`` calls it, unless ``attention_mask`` is ``"block"``
(``"auto"``: a LLaDA2 ``model_type``, `resolve.attention_for`): then through `attention.BlockAttention`, with the
4-D block-causal mask LLaDA2's own ``generate()`` builds (blocks of the pipeline scheduler's ``block_length``,
else `attention.BLOCK_LENGTH`). ``mask_token`` (a token of the vocabulary or an id) names the mask token of a
tokenizer that declares none (a LLaDA2 tokenizer: ``<|mask|>``, `resolve.LLADA2_MASK_TOKEN`).

`load_masked_lm` checks what the sampler needs: a mask token in the tokenizer, and attention in
both directions (a causal LM's logits at a position ignore every later token: refused). Every
failure is `errors.ModelLoadError`, one line (the CLI exits 2).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError
from .resolve import DEFAULT_MASKED, attention_for, check_trust, is_gemma, mask_token_of

__all__ = ["load_backend", "load_masked_lm", "load_gemma", "check_bidirectional", "set_mask_token", "AUTO_CLASSES"]

# the Auto classes a folder's ``auto_map`` may name for a masked-diffusion model, in the order tried
AUTO_CLASSES = ("AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModel")


def _quiet(fn, *a, **k):
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        return fn(*a, **k)
    finally:
        tlog.set_verbosity(level)
        tlog.enable_progress_bar()


def _component(folder: Path, index: dict, name: str):
    """(library, class name) of a pipeline component, or None."""
    entry = index.get(name)
    return tuple(entry) if isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] else None


def _auto_class(config):
    """The Auto class of transformers that a loaded config's ``auto_map`` names (`AUTO_CLASSES`), or None."""
    import transformers

    auto_map = getattr(config, "auto_map", None) or {}
    name = next((n for n in AUTO_CLASSES if n in auto_map), None)
    return None if name is None else getattr(transformers, name)


def load_masked_lm(path, *, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False,
                   mask_token=None, attention_mask: str = "auto"):
    """``(model, tokenizer, scheduler or None)`` from a pipeline folder or a masked-LM folder; the model in eval
    mode, checked to have a mask token and bidirectional attention. ValueError (one line) otherwise.
    ``trust_remote_code``: load a folder that ships its own modeling code (``auto_map``), running that code;
    ``mask_token``, ``attention_mask``: module docstring."""
    import transformers
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    from ..text.lm import DTYPES

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such model folder")
    scheduler, model_dir, tok_dir, model_cls = None, path, path, AutoModelForMaskedLM
    if (path / "model_index.json").is_file():
        index = json.loads((path / "model_index.json").read_text())
        model_dir, tok_dir = path / "model", path / "tokenizer"
        spec = _component(path, index, "model")
        if spec is None or not model_dir.is_dir():
            raise ValueError(f"{path}: the pipeline has no model component")
        model_cls = getattr(transformers, spec[1], AutoModelForMaskedLM) if spec[0] == "transformers" \
            else AutoModelForMaskedLM
        sched = _component(path, index, "scheduler")
        if sched is not None and (path / "scheduler").is_dir():
            import diffusers

            scheduler = getattr(diffusers, sched[1]).from_pretrained(path / "scheduler")
    check_trust(path, trust_remote_code)
    remote = dict(local_files_only=True, trust_remote_code=bool(trust_remote_code))
    try:   # the tokenizer first: a bad --mask-token stops before the weights load
        tokenizer = _quiet(AutoTokenizer.from_pretrained, tok_dir, **remote)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{tok_dir}: no tokenizer ({str(err).splitlines()[0][:160]})") from err
    set_mask_token(tokenizer, mask_token)
    if getattr(tokenizer, "mask_token_id", None) is None:
        raise ValueError(f"{path}: its tokenizer has no mask token (a masked-diffusion model restarts from masked "
                         "tokens; name one of its vocabulary with --mask-token)")
    try:
        config = _quiet(AutoConfig.from_pretrained, model_dir, **remote)
        if trust_remote_code and model_cls is AutoModelForMaskedLM:   # no transformers class named: the folder's own
            model_cls = _auto_class(config) or model_cls
        model = _quiet(model_cls.from_pretrained, model_dir, config=config, dtype=DTYPES[dtype], **remote)
    except (OSError, ValueError, KeyError, ImportError, AttributeError) as err:
        raise ValueError(f"{model_dir}: not a loadable masked language model ({str(err).splitlines()[0][:160]})") \
            from err
    model = model.to(device).eval()
    if attention_for(attention_mask, getattr(config, "model_type", None)) == "block":
        from .attention import BLOCK_LENGTH, BlockAttention

        length = getattr(getattr(scheduler, "config", None), "block_length", None) or BLOCK_LENGTH
        model = BlockAttention(model, length, pad_id=int(tokenizer.mask_token_id)).eval()
    check_bidirectional(model, tokenizer, name=str(path))
    return model, tokenizer, scheduler


def set_mask_token(tokenizer, value) -> None:
    """Name ``value`` (a token of the vocabulary, or an integer id: ``"156895"``) the mask token of a tokenizer that
    declares none. ValueError (one line, naming the value) when it is not in the vocabulary, or differs from the
    mask token the tokenizer declares."""
    if value is None:
        return
    vocab = tokenizer.get_vocab()
    token = mask_token_of(value, len(tokenizer), vocab.__contains__)
    token = tokenizer.convert_ids_to_tokens(token) if isinstance(token, int) else token
    declared = getattr(tokenizer, "mask_token", None) if getattr(tokenizer, "mask_token_id", None) is not None else None
    if declared is not None and declared != token:
        raise ValueError(f"--mask-token: {value!r} ({token!r}) differs from the mask token the tokenizer declares "
                         f"({declared!r})")
    tokenizer.mask_token = token


def load_gemma(path, *, dtype: str = "float32", device: str = "cpu"):
    """``(model, tokenizer, scheduler)`` of a ``DiffusionGemmaPipeline`` folder (``model``, ``scheduler``,
    ``processor`` components). ValueError (one line) when its model is not a ``DiffusionGemmaForBlockDiffusion``."""
    import diffusers
    import transformers
    from transformers import AutoProcessor, AutoTokenizer

    from ..text.lm import DTYPES
    from .gemma import MODEL_CLASS

    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    spec = index.get("model")
    if not (isinstance(spec, (list, tuple)) and len(spec) == 2 and spec[1] == MODEL_CLASS):
        raise ValueError(f"{path}: a DiffusionGemmaPipeline's model must be a {MODEL_CLASS}, not "
                         f"{spec[1] if isinstance(spec, (list, tuple)) and len(spec) == 2 else spec!r}")
    try:
        model = _quiet(getattr(transformers, MODEL_CLASS).from_pretrained, path / "model", local_files_only=True,
                       dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path / 'model'}: not a loadable {MODEL_CLASS} ({str(err).splitlines()[0][:160]})") \
            from err
    tok_dir = next((path / n for n in ("processor", "tokenizer") if (path / n).is_dir()), None)
    if tok_dir is None:
        raise ValueError(f"{path}: the pipeline has no processor or tokenizer folder")
    try:
        proc = _quiet(AutoProcessor.from_pretrained, tok_dir, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError):
        proc = None
    try:
        tokenizer = getattr(proc, "tokenizer", proc) or _quiet(AutoTokenizer.from_pretrained, tok_dir,
                                                               local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{tok_dir}: no tokenizer ({str(err).splitlines()[0][:160]})") from err
    sched = index.get("scheduler")
    scheduler = None
    if isinstance(sched, (list, tuple)) and len(sched) == 2 and sched[1] and (path / "scheduler").is_dir():
        scheduler = getattr(diffusers, sched[1]).from_pretrained(path / "scheduler")
    return model.to(device).eval(), tokenizer, scheduler


def check_bidirectional(model, tokenizer, *, name: str = "model"):
    """ValueError when the model's logits at the first position ignore the last token (a causal LM): the masked
    process reveals tokens anywhere, so the model must read both ways."""
    import torch

    mask = int(tokenizer.mask_token_id)
    other = next(i for i in range(min(8, int(model.config.vocab_size))) if i != mask)
    ids = torch.tensor([[other] * 3 + [mask], [other] * 3 + [other]], device=next(model.parameters()).device)
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
    except (TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise ValueError(f"{name}: {type(model).__name__} does not take token ids and return logits over the "
                         f"vocabulary ({str(err).splitlines()[0][:120]})") from err
    if torch.allclose(logits[0, 0], logits[1, 0], atol=1e-6, rtol=0):
        raise ValueError(f"{name}: {type(model).__name__} reads only earlier tokens (a causal language model: run it "
                         "as a language model, not as a masked-diffusion one)")


def load_backend(o: dict):
    """The `MaskedBackend` a run with resolved options ``o`` runs on (all base responses made)."""
    from ..text.backend import Prompt
    from ..text.resolve import read_prompts
    from .backend import MaskedBackend

    batch = o["batch_size"] if isinstance(o["batch_size"], int) else 64
    common = dict(samples=o["samples"], seed=o["seed"], grid=_grid(o), temperature=o["temperature"],
                  top_p=o["top_p"], batch_size=batch, steps=o.get("num_inference_steps"))
    folder = None
    if o["model"] == DEFAULT_MASKED:
        from . import default

        folder = default.model_folder()
    mask_id, gen_length = None, o["max_new_tokens"]
    if folder is None and is_gemma(o["model"]):
        from .gemma import GemmaSampler, round_length

        model, tokenizer, scheduler = _load(o["model"], o, load_gemma)
        sampler = GemmaSampler.from_parts(model, scheduler, num_inference_steps=o.get("num_inference_steps"),
                                          temperature=o["temperature"])
        mask_id = tokenizer.pad_token_id or 0   # a placeholder: every base starts fully corrupted
        gen_length, common["steps"] = round_length(model, gen_length), None
    else:
        model, tokenizer, scheduler = _load(folder or o["model"], o)
        sampler = "ancestral"
    if o.get("scheduler") == "pipeline" and sampler == "ancestral":
        from .schedulers import PipelineSampler

        steps = {} if o.get("num_inference_steps") is None else {"num_inference_steps": int(o["num_inference_steps"])}
        sampler = PipelineSampler.from_parts(model, tokenizer, scheduler, folder or o["model"],
                                             temperature=o["temperature"], **steps)
    try:
        if o["model"] == DEFAULT_MASKED:
            return MaskedBackend(model, tokenizer, default.prompts(o["samples"], o["seed"]), outcome=default.OUTCOME,
                                 labels=default.LABELS, features=default.FEATURES, theory=default.STORY_THEORY,
                                 gen_length=default.response_length, name=DEFAULT_MASKED, sampler=sampler, **common)
        prompts = ([Prompt(o["prompt"])] if o["prompt"] is not None
                   else [Prompt(p, r) for p, r in read_prompts(o["prompts"])])
        return MaskedBackend(model, tokenizer, prompts, outcome=o["outcome"], system=o["system"], name=o["model"],
                             gen_length=gen_length, sampler=sampler, mask_id=mask_id, **common)
    except ValueError as e:
        msg = str(e).splitlines()[0]
        raise ModelLoadError(msg if msg.startswith("--") else f"--model: {msg}") from e


def _load(folder, o, loader=None):
    extra = {} if loader is not None else {"trust_remote_code": bool(o.get("trust_remote_code")),
                                           "mask_token": o.get("mask_token"),
                                           "attention_mask": o.get("attention_mask") or "auto"}
    try:
        return (loader or load_masked_lm)(folder, dtype=o["dtype"], device=o["device"], **extra)
    except ValueError as e:
        msg = str(e).splitlines()[0]
        raise ModelLoadError(msg if msg.startswith("--") else f"--model: {msg}") from e


def _grid(o):
    """The fractions a restart may start from: the requested ones, or (auto) a grid of twentieths."""
    from ..engine.adaptive import auto_times

    if o["timesteps"] == "auto":
        return tuple(round(i / 20, 6) for i in range(21))
    asked = auto_times(o["timesteps"])
    return tuple(o["timesteps"] if asked is None else asked)

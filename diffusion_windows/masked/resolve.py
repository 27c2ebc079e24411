"""What the masked kind knows of its models before any loads: the bundled model and the folders it claims.

Registered in `diffusion_windows.backends` (the kind ``"masked"``): `claims` says which folders are
masked-diffusion language models (a diffusers ``LLaDA2Pipeline`` or ``DiffusionGemmaPipeline``
folder, a transformers folder whose architecture is a masked LM, or one that ships its own modeling
code, ``config.json`` ``auto_map``, beside a tokenizer with a mask token: LLaDA2 and LLaDA checkpoints),
`resolve` fills and checks their options (fractions masked, prompts, outcome, sampler; custom code
only with ``--trust-remote-code``; the attention mask and mask token a LLaDA2 checkpoint needs), `fingerprints`
records the content of the weights and prompts file.

Time: the fraction of a response's tokens masked before a restart, in ``[0, 1]``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import OptionError
from ..text.resolve import check_prompts, parse_fractions

__all__ = ["BUILTINS", "MODELS", "NOUN", "ABOUT", "OPTIONS", "DEFAULTS", "BUILTIN_DEFAULTS", "claims", "resolve",
           "fingerprints", "PIPELINES", "SAMPLERS", "is_gemma", "custom_code", "check_trust", "model_type",
           "attention_for", "mask_token_of", "ATTENTION_MASKS", "BLOCK_ATTENTION", "LLADA2_MASK_TOKEN"]

DEFAULT_MASKED = "default-masked"     # the bundled story/addition masked-diffusion model (masked.default)
BUILTINS = (DEFAULT_MASKED,)
MODELS, NOUN = "masked-diffusion language models", "a masked-diffusion language model"
ABOUT = ("'default-masked' (bundled masked-diffusion LM), a diffusers LLaDA2Pipeline folder, a masked-LM folder "
         "(token ids with mask tokens -> logits; a LLaDA2 checkpoint's own code with --trust-remote-code)")
OPTIONS = ("prompts", "system", "outcome", "max_new_tokens", "temperature", "top_p", "scheduler",
           "num_inference_steps", "trust_remote_code", "mask_token", "attention_mask")
DEFAULTS = {"timesteps": "0:1:0.05", "samples": 40, "restarts": 16, "edge_precision": 0.1, "max_new_tokens": 64,
            "temperature": 1.0, "top_p": 1.0, "outcome": "answer", "scheduler": "ancestral", "trust_remote_code": False,
            "attention_mask": "auto"}
BUILTIN_DEFAULTS = {DEFAULT_MASKED: {"samples": 40, "restarts": 8, "timesteps": "0:1:0.1", "num_inference_steps": 16}}
PIPELINES = ("LLaDA2Pipeline", "DiffusionGemmaPipeline")
# --scheduler: the ancestral sampler of the masked process, or the pipeline folder's own commit rule
SAMPLERS = {"ancestral": "samples the reverse process (the theory's quantity)",
            "pipeline": "the pipeline's own scheduler (LLaDA2: confidence-ordered commits; DiffusionGemma: "
                        "BlockRefinement, DiscreteDDIM or EntropyBound on random-token corruption), flagged in "
                        "windows.json when it is not a sampler of the reverse process"}


# --attention-mask: how the samplers call the model; "auto": "block" for the model types below, "2d" otherwise
ATTENTION_MASKS = {"auto": "block for LLaDA2 checkpoints (model_type llada2_moe), 2d otherwise",
                   "2d": "a 2-D mask of ones on real positions (as diffusers' LLaDA2Pipeline calls its model)",
                   "block": "a 4-D block-causal mask, as LLaDA2's own generate() builds it (masked.attention)"}
BLOCK_ATTENTION = ("llada2_moe",)   # model types whose own generate() passes a 4-D block-causal mask
LLADA2_MASK_TOKEN = "<|mask|>"      # LLaDA2's mask token (id 156895, its generate()'s mask_id default)


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def claims(model: str) -> bool:
    """A folder of a diffusers masked-diffusion pipeline (`PIPELINES`), or a transformers folder whose
    ``config.json`` names a masked-LM architecture (``...ForMaskedLM``), or custom modeling code (``auto_map``: a
    LLaDA2 checkpoint's ``LLaDA2MoeModelLM``) that is not named as a causal LM or sits beside a tokenizer with a
    mask token (the causal-LM kind loads no custom code)."""
    p = Path(model)
    if not p.is_dir():
        return False
    index = _json(p / "model_index.json") if (p / "model_index.json").is_file() else None
    if index is not None:
        return isinstance(index, dict) and index.get("_class_name") in PIPELINES
    cfg = _json(p / "config.json") if (p / "config.json").is_file() else None
    if not isinstance(cfg, dict):
        return False
    archs = [str(a) for a in cfg.get("architectures") or ()]
    if any(a.endswith("ForMaskedLM") for a in archs):
        return True
    if not cfg.get("auto_map"):
        return False
    return not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or _declares_mask(p)


def custom_code(model) -> list:
    """The files of a model folder (a pipeline folder: its ``model`` and ``tokenizer``) that name modeling code
    shipped in the folder (an ``auto_map``): loading them runs that code (``trust_remote_code``)."""
    parts = dict.fromkeys((_part(model, "model"), _part(model, "tokenizer")))
    names = ("config.json", "tokenizer_config.json")
    return [f for d in parts for f in (d / n for n in names) if f.is_file() and (_json(f) or {}).get("auto_map")]


def check_trust(model, trust_remote_code: bool, flag: str = "trust_remote_code=True"):
    """ValueError (one line) when ``model`` ships modeling code and ``trust_remote_code`` is off."""
    files = [] if trust_remote_code else custom_code(model)
    if files:
        raise ValueError(f"{model}: {files[0].relative_to(Path(model)).as_posix()} names modeling code shipped in "
                         f"the folder (auto_map); pass {flag} to run it (it executes that code)")


def model_type(model):
    """``config.json``'s ``model_type`` of a model folder (a pipeline folder: its ``model``'s), or None."""
    cfg = _json(_part(model, "model") / "config.json")
    return cfg.get("model_type") if isinstance(cfg, dict) else None


def attention_for(kind: str, model_type) -> str:
    """``--attention-mask`` resolved: ``"2d"`` or ``"block"`` (``"auto"``: block for `BLOCK_ATTENTION` types)."""
    if kind not in ATTENTION_MASKS:
        raise ValueError(f"{kind!r} is not an attention mask; valid: {', '.join(ATTENTION_MASKS)}")
    return ("block" if model_type in BLOCK_ATTENTION else "2d") if kind == "auto" else kind


def _part(model, component: str) -> Path:
    """Where a folder's ``component`` (``"model"``, ``"tokenizer"``) lives: its subfolder in a pipeline folder, the
    folder itself otherwise."""
    p = Path(model)
    return p / component if (p / "model_index.json").is_file() else p


def _declares_mask(model) -> bool:
    p = _part(model, "tokenizer")
    tok = [_json(p / n) for n in ("tokenizer_config.json", "special_tokens_map.json") if (p / n).is_file()]
    return any(isinstance(t, dict) and t.get("mask_token") for t in tok)


def is_gemma(model) -> bool:
    """A ``DiffusionGemmaPipeline`` folder (uniform corruption, no mask token: only its own scheduler runs it)."""
    index = Path(model) / "model_index.json"
    return index.is_file() and (_json(index) or {}).get("_class_name") == "DiffusionGemmaPipeline"


def resolve(o: dict, given: set):
    """Fill and check, in place, the options of a masked-diffusion model (``given``: the names set by the user)."""
    o["timesteps"] = parse_fractions(o["timesteps"])
    if o["model"] not in BUILTINS and is_gemma(o["model"]):
        if "scheduler" in given and o["scheduler"] != "pipeline":
            raise OptionError(f"--scheduler: {o['scheduler']!r}: a DiffusionGemmaPipeline corrupts with random tokens "
                              "(no mask token); only its own scheduler ('pipeline') runs it")
        o["scheduler"] = "pipeline"
    o["trust_remote_code"] = bool(o["trust_remote_code"])
    if o["model"] not in BUILTINS:
        try:
            check_trust(o["model"], o["trust_remote_code"], "--trust-remote-code")
        except ValueError as e:
            raise OptionError(f"--model: {e}") from None
    if o["protocol"] != "noise":
        raise OptionError(f"--protocol: {o['protocol']!r}: a masked-diffusion model restarts from re-masked responses")
    if o["scheduler"] not in SAMPLERS:
        raise OptionError(f"--scheduler: {o['scheduler']!r} is not a sampler of masked-diffusion models; valid: "
                          f"{', '.join(SAMPLERS)}")
    if o["scheduler"] == "pipeline" and not (Path(o["model"]) / "model_index.json").is_file() \
            and o["model"] not in BUILTINS:
        raise OptionError(f"--scheduler: 'pipeline' needs a diffusers pipeline folder; {o['model']!r} is not one")
    _attention(o, given)
    if o["model"] in BUILTINS:
        for name in ("prompt", "prompts", "outcome", "system", "max_new_tokens"):
            if name in given:
                raise OptionError(f"--{name}: the built-in model {o['model']!r} has its own tasks and outcomes")
        o["outcome"] = "default"
        return
    check_prompts(o, "masked-diffusion model")


def _attention(o: dict, given: set):
    """``--attention-mask`` resolved to ``"2d"`` or ``"block"``; ``--mask-token`` (LLaDA2 checkpoints whose tokenizer
    declares none: `LLADA2_MASK_TOKEN`)."""
    own = o["model"] in BUILTINS or is_gemma(o["model"])
    for name in ("mask_token", "attention_mask"):
        if own and name in given:
            raise OptionError(f"--{name.replace('_', '-')}: {o[name]!r} does not apply to {o['model']!r} ("
                              + ("the built-in model has its own mask token and attention" if o["model"] in BUILTINS
                                 else "a DiffusionGemmaPipeline corrupts with random tokens, no mask token") + ")")
    kind = None if own else model_type(o["model"])
    try:
        o["attention_mask"] = attention_for(o["attention_mask"], kind)
    except ValueError as e:
        raise OptionError(f"--attention-mask: {e}") from None
    if o["mask_token"] is not None:
        o["mask_token"] = str(o["mask_token"]).strip()
        vocab = _part(o["model"], "tokenizer") / "tokenizer.json"   # checked here when readable without running code
        if vocab.is_file():
            from tokenizers import Tokenizer

            t = Tokenizer.from_file(str(vocab))
            try:
                mask_token_of(o["mask_token"], t.get_vocab_size(with_added_tokens=True),
                              lambda token: t.token_to_id(token) is not None)
            except ValueError as e:
                raise OptionError(str(e)) from None
    elif kind in BLOCK_ATTENTION and not _declares_mask(o["model"]):
        o["mask_token"] = LLADA2_MASK_TOKEN


def mask_token_of(value, size: int, has):
    """``--mask-token`` against a vocabulary of ``size`` ids (``has(token)``: the token is in it): the id (an integer)
    or the token. ValueError (one line, naming the value) when it is neither."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        if not 0 <= int(text) < size:
            raise ValueError(f"--mask-token: {value!r} is not a token id of the tokenizer (0 to {size - 1})")
        return int(text)
    if not has(text):
        raise ValueError(f"--mask-token: {value!r} is not a token of the tokenizer's vocabulary")
    return text

def fingerprints(o: dict) -> dict:
    """Content fingerprints of the model folder and the prompts file (`engine.fingerprint`)."""
    from ..engine import fingerprint as fp

    if o["model"] in BUILTINS:
        from .default import model_folder

        folder = model_folder()
    else:
        folder = Path(o["model"])
    out = {"model": fp.folder_fingerprint(folder), "model_revision": None, "clip": None, "images": None}
    if o.get("prompts") is not None:
        out["prompts"] = fp.images_fingerprint([o["prompts"]])
    return out

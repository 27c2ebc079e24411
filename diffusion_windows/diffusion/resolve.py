"""What the diffusion kind knows of its models before any loads: folders, hub ids, built-ins.

Registered in `diffusion_windows.backends` (the kind ``"diffusion"``, the catch-all: every model no
other kind claims), with its built-ins, defaults and options below. `resolve` fills and checks
the options only a diffusion model has, reading a pipeline's ``model_index.json`` and
``scheduler/scheduler_config.json`` (no diffusers import): its number of training timesteps,
whether it is a flow-matching model (times are ``1000 sigma`` then), whether it is
text- or class-conditional. A hub id is read from the local Hugging Face cache (offline);
one that is not there is refused with one line. `fingerprints` records the content of the
weights, the CLIP checkpoint and the images a run reads (`engine.fingerprint`).

Time: training timesteps of the scheduler, integers in ``[0, num_train_timesteps)``; for
flow-matching models ``1000 sigma`` in ``[0, 1000]``, fractions allowed.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import OptionError
from ..options import list_images, parse_labels, parse_timesteps, show

__all__ = ["BUILTINS", "MODELS", "NOUN", "ABOUT", "OPTIONS", "DEFAULTS", "BUILTIN_DEFAULTS", "claims", "resolve",
           "fingerprints", "model_folder", "model_index", "scheduler_config", "is_flow_model", "is_bundled_pipeline"]

# ----------------------------------------------------------------------------- the registration (backends.py)
BUILTINS = ("default", "gaussian-mixture", "gaussian-mixture-flow", "default-video")
MODELS, NOUN = "diffusion models", "a diffusion model"
ABOUT = ("'default' (bundled digits DDPM), 'gaussian-mixture' (exact denoiser), 'gaussian-mixture-flow' (its "
         "flow-matching twin), 'default-video' (bundled moving digits: motion and digit), a diffusers pipeline "
         "folder or a hub id in the local Hugging Face cache (UNet pipelines, SD3, Flux.1 and .2, Flux Kontext, "
         "Chroma, Qwen-Image, Z-Image, HiDream, Lumina 2, CogView 4, PixArt, Sana, DiT, Wan, CogVideoX, HunyuanVideo, "
         "LTX-Video)")
OPTIONS = ("guidance_scale", "negative_prompt", "true_cfg_scale", "image", "class_label", "height", "width",
           "num_inference_steps", "scheduler", "eta", "labels", "clip_model", "clip_pretrained", "templates",
           "images", "num_frames", "motion", "clip_frame")
BUILTIN_STEPS = 20   # the bundled models sample well in 20 DDPM steps (grid spacing 50 timesteps)
DEFAULT_STEPS = 50
DEFAULTS = {"timesteps": "0:1000:50", "samples": 300, "restarts": 4, "edge_precision": 40,
            "num_inference_steps": DEFAULT_STEPS}
BUILTIN_DEFAULTS = {name: {"num_inference_steps": BUILTIN_STEPS} for name in BUILTINS}
BUILTIN_DEFAULTS["default-video"].update(samples=24, timesteps="0:1000:100")  # ~3 minutes on 2 cores

_FLOW_BUILTINS = ("gaussian-mixture-flow",)
_MIXTURES = ("gaussian-mixture", "gaussian-mixture-flow")   # classified by their own posterior
FLOW_SCHEDULERS = ("flow-ancestral", "flow-euler")         # = schedule.FLOW_SCHEDULERS (a test pins it)


def claims(model: str) -> bool:
    """Every model no other kind claims (the catch-all kind): built-ins, pipeline folders, hub ids."""
    return True


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- the model's folder
def model_folder(model: str) -> Path | None:
    """The folder a pipeline loads from: a local folder, or a hub id's snapshot in the local cache;
    None for the built-ins. Raises `OptionError` for a missing folder or an uncached hub id."""
    if model in BUILTINS:
        return None
    p = Path(model)
    looks_local = p.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1
    if looks_local:
        if not p.is_dir():
            raise OptionError(f"--model: {model!r} does not exist")
        return p
    from ..engine import fingerprint as fp

    snap = fp.hub_snapshot(model)
    if snap is None:
        raise OptionError(f"--model: {model!r} is not a local folder and is not in the Hugging Face cache; "
                          "download it first or pass a folder")
    return Path(snap[1])


def model_index(folder: Path | None) -> dict | None:
    """The ``model_index.json`` of a pipeline folder (None: a built-in)."""
    if folder is None:
        return None
    index = folder / "model_index.json"
    if not index.is_file():
        raise OptionError(f"--model: {str(folder)!r} is not a diffusers pipeline folder (no model_index.json)")
    try:
        return json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise OptionError(f"--model: {index} is not valid JSON ({e.msg})") from None


def scheduler_config(folder: Path | None) -> dict | None:
    """A pipeline folder's ``scheduler/scheduler_config.json`` (None: a built-in)."""
    if folder is None:
        return None
    cfg = folder / "scheduler" / "scheduler_config.json"
    if not cfg.is_file():
        raise OptionError(f"--model: {str(folder)!r} has no scheduler/scheduler_config.json")
    try:
        c = json.loads(cfg.read_text())
        int(c.get("num_train_timesteps", 1000))
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        raise OptionError(f"--model: {cfg} is not a valid scheduler config") from None
    return c


def is_flow_model(model: str, config: dict | None, scheduler: str | None = None) -> bool:
    """Whether the run's times are ``1000 sigma`` (flow matching): a ``--scheduler flow-*``, the built-in
    flow model, or a scheduler config of a ``FlowMatch*`` class or with ``use_flow_sigmas``."""
    if scheduler is not None:
        return scheduler in FLOW_SCHEDULERS
    if config is None:
        return model in _FLOW_BUILTINS
    return str(config.get("_class_name", "")).startswith("FlowMatch") or bool(config.get("use_flow_sigmas", False))


def is_text_model(info: dict | None) -> bool:
    """Whether a pipeline's components make it a text-conditioned pipeline."""
    return bool(info) and any(k in info for k in ("text_encoder", "tokenizer", "text_encoder_2", "text_encoder_3",
                                                  "tokenizer_2", "tokenizer_3"))


VIDEO_TRANSFORMERS = ("WanTransformer3DModel", "CogVideoXTransformer3DModel", "LTXVideoTransformer3DModel",
                      "HunyuanVideoTransformer3DModel")
VIDEO_BUILTINS = ("default-video",)   # built-in models whose samples are clips


def is_video_model(model: str, info: dict | None) -> bool:
    """Whether a model makes clips: a video built-in, or a pipeline whose transformer is a video one."""
    if model in VIDEO_BUILTINS:
        return True
    transformer = (info or {}).get("transformer") or [None, None]
    return isinstance(transformer, list) and transformer[-1] in VIDEO_TRANSFORMERS


def _resolve_video(o: dict, model: str, info: dict | None):
    """The video options: only for video models, and a video model needs a feature."""
    if not is_video_model(model, info):
        for name in ("num_frames", "motion", "clip_frame"):
            if o[name] is not None:
                raise OptionError(f"{_flag(name)}: {show(o[name])} needs a video model; {model!r} makes images")
        return
    if model in VIDEO_BUILTINS and (o["labels"] is not None or o["clip_model"] is not None or o["motion"]):
        name = "labels" if o["labels"] is not None else "clip_model" if o["clip_model"] is not None else "motion"
        raise OptionError(f"{_flag(name)}: {show(o[name])}: {model!r} has its own features (motion and digit)")
    if o["images"] is not None:
        raise OptionError(f"--images: {o['images']!r}: the video model {model!r} restarts clips, not still images")
    if o["clip_frame"] is not None and o["labels"] is None:
        raise OptionError(f"--clip-frame: {o['clip_frame']} needs --labels (the frame CLIP classifies)")
    if model not in BUILTINS and o["labels"] is None and o["motion"] is None:
        raise OptionError(f"--labels/--motion: the video pipeline {model!r} needs a feature: --motion directions, "
                          "or --labels with --clip-model, or both")


def is_class_model(info: dict | None) -> bool:
    """Whether a pipeline is class-conditional (DiT)."""
    if not info:
        return False
    transformer = info.get("transformer") or [None, None]
    return info.get("_class_name") == "DiTPipeline" or (isinstance(transformer, list)
                                                       and transformer[-1] == "DiTTransformer2DModel")


def is_bundled_pipeline(pipe) -> bool:
    """Whether ``pipe`` was loaded from the bundled digits pipeline folder (its theory data are the
    digits' training split); recognised by the folder it was loaded from, never by its classifier."""
    from .default import PIPELINE_DIR, assets_path

    source = getattr(pipe, "name_or_path", None) or getattr(getattr(pipe, "config", None), "_name_or_path", None)
    if not source:
        return False
    try:
        return Path(source).resolve() == (assets_path() / PIPELINE_DIR).resolve()
    except (OSError, TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- resolution
def resolve(o: dict, given: set):
    """Fill and check, in place, the options of a diffusion model (``given``: the names set by the user)."""
    model = o["model"]
    folder = model_folder(model)
    info = model_index(folder)
    config = scheduler_config(folder)
    T = int(config.get("num_train_timesteps", 1000)) if config is not None else 1000
    _check_scheduler(o, config)
    o["timesteps"] = parse_timesteps(o["timesteps"], T, flow=is_flow_model(model, config, o["scheduler"]))
    o["labels"] = parse_labels(o["labels"])
    builtin = model in BUILTINS
    if is_text_model(info) and not o["prompt"]:
        raise OptionError(f"--prompt: the text pipeline {model!r} needs a prompt")
    if builtin and o["prompt"]:
        raise OptionError(f"--prompt: the built-in model {model!r} takes no prompt")
    if is_class_model(info) and o["class_label"] is None:
        raise OptionError(f"--class-label: the class-conditional pipeline {model!r} needs a class label")
    if o["class_label"] is not None and (builtin or not is_class_model(info)):
        raise OptionError(f"--class-label: {model!r} is not a class-conditional pipeline")
    _resolve_conditioning(o, info, builtin)
    if (o["height"] is not None or o["width"] is not None) and builtin:
        raise OptionError(f"--height/--width: the built-in model {model!r} has one size")
    if not builtin and o["labels"] is not None and o["clip_model"] is None:
        # the bundled tiny CLIP knows 8x8 digits only: it would label photos at random, silently
        raise OptionError(f"--labels: the pipeline {model!r} needs a CLIP to classify them; "
                          "pass --clip-model (and --clip-pretrained)")
    _resolve_video(o, model, info)
    if o["images"] is not None:
        _resolve_images(o, given)
    _resolve_clip(o)
    if model in _MIXTURES and (o["labels"] or o["clip_model"]):
        raise OptionError(f"--labels: the {model} model is classified by its own posterior")
    o["num_train_timesteps"] = T


REFERENCE_IMAGE_PIPELINES = ("FluxKontextPipeline", "Flux2Pipeline")   # pipelines whose --image is conditioning


def _resolve_conditioning(o: dict, info, builtin: bool):
    """``--negative-prompt``/``--true-cfg-scale`` need a text pipeline, ``--image`` a reference-image one
    and a readable image file."""
    for name in ("negative_prompt", "true_cfg_scale"):
        if o[name] is not None and (builtin or not is_text_model(info)):
            raise OptionError(f"{_flag(name)}: {o['model']!r} is not a text pipeline")
    if o["image"] is None:
        return
    kind = (info or {}).get("_class_name")
    if kind not in REFERENCE_IMAGE_PIPELINES:
        raise OptionError(f"--image: {o['model']!r} ({kind or 'built-in'}) takes no reference image; "
                          f"pipelines that do: {', '.join(REFERENCE_IMAGE_PIPELINES)}")
    path = Path(o["image"]).expanduser()
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # PIL raises many kinds: one line naming the file
        raise OptionError(f"--image: {o['image']!r} is not a readable image ({type(e).__name__})") from None
    o["image"] = str(path.resolve())


def _resolve_images(o: dict, given: set):
    """``--images DIR``: the first ``--samples`` images by name (all of them without ``--samples``)."""
    files = list_images(o["images"])
    if "samples" in given and o["samples"] > len(files):
        raise OptionError(f"--samples: {o['samples']} is more than the {len(files)} images in {o['images']!r}")
    o["images"] = str(Path(o["images"]).resolve())
    if "samples" not in given:
        o["samples"] = len(files)
    if o["protocol"] == "branch":
        raise OptionError("--protocol: 'branch' restarts from a generation's own states; real --images have none")


def _resolve_clip(o: dict):
    if o["clip_model"] is not None:
        import open_clip

        if o["clip_model"] not in open_clip.list_models() and not Path(o["clip_model"]).exists():
            raise OptionError(f"--clip-model: {o['clip_model']!r} is not an open_clip model")
    if o["templates"] is not None:
        from ..classifiers import parse_templates

        try:
            o["templates"] = list(parse_templates(o["templates"]))
        except ValueError as e:
            raise OptionError(str(e)) from None
        if o["clip_model"] is None:
            raise OptionError(f"--templates: {show(o['templates'])} needs --clip-model (the bundled CLIP has its own)")
    if o["clip_pretrained"] is not None and o["clip_model"] is None:
        raise OptionError(f"--clip-pretrained: {o['clip_pretrained']!r} needs --clip-model")


def _check_scheduler(o: dict, config: dict | None):
    """A known scheduler name; a flow-matching model takes flow schedulers only, any other model the others."""
    name = o["scheduler"]
    if name is None:
        return
    from .schedule import SCHEDULERS

    if name not in SCHEDULERS:
        raise OptionError(f"--scheduler: {name!r} is not one of {', '.join(SCHEDULERS)}")
    model_flow = is_flow_model(o["model"], config)
    if model_flow != (name in FLOW_SCHEDULERS):
        kind = "flow-matching" if model_flow else "VP/VE diffusion"
        valid = FLOW_SCHEDULERS if model_flow else tuple(n for n in SCHEDULERS if n not in FLOW_SCHEDULERS)
        raise OptionError(f"--scheduler: {name!r} cannot drive the {kind} model {o['model']!r}; valid: "
                          f"{', '.join(valid)}")


# ----------------------------------------------------------------------------- fingerprints
def fingerprints(o: dict) -> dict:
    """Content fingerprints of the model, the CLIP checkpoint and the images (`engine.fingerprint`)."""
    from ..engine import fingerprint as fp

    out = {"model": None, "model_revision": None, "clip": None, "images": None}
    model = o["model"]
    if model == "default":
        from .default import CLIP_DIR, PIPELINE_DIR, assets_path

        out["model"] = fp.folder_fingerprint(assets_path() / PIPELINE_DIR)
        if o["clip_model"] is None:
            out["clip"] = fp.folder_fingerprint(assets_path() / CLIP_DIR)
    elif model == "default-video":
        from .default import CLIP_DIR, assets_path
        from .default_video import VIDEO_DIR

        out["model"] = fp.folder_fingerprint(assets_path() / VIDEO_DIR)
        out["clip"] = fp.folder_fingerprint(assets_path() / CLIP_DIR)
    elif model not in BUILTINS:
        if Path(model).is_dir():
            out["model"] = fp.folder_fingerprint(model)
        else:
            snap = fp.hub_snapshot(model)
            if snap is not None:
                out["model_revision"], folder = snap
                out["model"] = fp.folder_fingerprint(folder)
    if o["clip_pretrained"] is not None and Path(o["clip_pretrained"]).is_file():
        out["clip"] = fp.file_fingerprint(o["clip_pretrained"])
    if o["images"] is not None:
        out["images"] = fp.images_fingerprint(list_images(o["images"])[:o["samples"]])
    if o.get("image") is not None:
        out["image"] = fp.file_fingerprint(o["image"])
    return out

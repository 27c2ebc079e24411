"""The CLI on the newer flow-matching families: saved tiny Chroma (with --negative-prompt), Qwen-Image
(--negative-prompt and --true-cfg-scale), Flux Kontext (with --image, resized as the pipeline
resizes it), Flux.2, Z-Image, HiDream, Lumina 2 and CogView 4 pipelines (each with its own text
encoder class and an offline tokenizer) end to end; --negative-prompt,
--true-cfg-scale and --image refused in one line where they do not apply or are bad; a family the
toolkit does not restart refused at load in one line naming it and the supported families."""
import json

import pytest
import torch
from test_flow_sweep import TINY_CLIP
from tiny_families import PIPES, SIZES, chroma_pipe, kontext_text_pipe, qwen_pipe

from diffusion_windows.diffusion.denoisers import FAMILIES, denoiser
from diffusion_windows.sweep import main


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("clipcfg") / "dw-families-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    return "dw-families-tiny-clip"


@pytest.fixture(scope="module")
def chroma_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chroma") / "pipe"
    chroma_pipe(text=True).save_pretrained(folder)
    return folder


def args(folder, out, clip, *extra):
    return ["--model", str(folder), "--out", str(out), "--labels", "cat,dog", "--clip-model", clip, "--samples", "3",
            "--restarts", "2", "--num-inference-steps", "3", "--quiet", "--no-theory", "--height", "8", "--width",
            "8", *extra]


def one_error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], (w, err[0])


def test_cli_on_a_saved_chroma_pipeline_with_a_negative_prompt(tmp_path, chroma_folder, tiny_clip):
    out = tmp_path / "run"
    assert main(args(chroma_folder, out, tiny_clip, "--prompt", "a photo of a cat", "--negative-prompt", "a dog",
                     "--guidance-scale", "3", "--timesteps", "0,400,812.5")) == 0
    d = json.loads((out / "windows.json").read_text())
    assert d["time_unit"] == "1000 sigma" and d["options"]["negative_prompt"] == "a dog"
    assert d["features"][0]["timesteps"] == [0, 400, 812.5]
    # guidance: two model rows per step; a restart at 0 runs none, at 400 and 812.5 those grid steps below
    assert d["nfe"] > 0 and d["nfe"] % 2 == 0
    for name in ("options.json", "results.jsonl", "window.png"):
        assert (out / name).stat().st_size > 0
    # the negative branch is the negative prompt's encoding (not the empty prompt's)
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(chroma_folder, local_files_only=True)
    cond = denoiser(pipe).prepare(1, prompt="a photo of a cat", negative_prompt="a dog", guidance_scale=3.0)
    ref = pipe.encode_prompt("a photo of a cat", negative_prompt="a dog", do_classifier_free_guidance=True)[3]
    torch.testing.assert_close(cond.uncond["encoder_hidden_states"], ref)


def test_conditioning_flags_are_refused_in_one_line(tmp_path, capsys, chroma_folder, tiny_clip):
    from PIL import Image

    picture = tmp_path / "ref.png"
    Image.new("RGB", (8, 8)).save(picture)
    one_error(capsys, args(chroma_folder, tmp_path / "a", tiny_clip, "--prompt", "a cat", "--image", str(picture)),
              "--image", "ChromaPipeline", "FluxKontextPipeline")
    one_error(capsys, args(chroma_folder, tmp_path / "b", tiny_clip, "--prompt", "a cat", "--true-cfg-scale", "-1"),
              "--true-cfg-scale", "-1")
    one_error(capsys, args(chroma_folder, tmp_path / "b2", tiny_clip, "--prompt", "a cat", "--true-cfg-scale", "2"),
              "true_cfg_scale", "ChromaPipeline restarts take only")  # no true CFG there: refused at load
    one_error(capsys, ["--model", "default", "--negative-prompt", "blurry", "--out", str(tmp_path / "c")],
              "--negative-prompt", "default")
    kontext = tmp_path / "kontext"
    (kontext / "scheduler").mkdir(parents=True)
    (kontext / "model_index.json").write_text(json.dumps(
        {"_class_name": "FluxKontextPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
         "transformer": ["diffusers", "FluxTransformer2DModel"]}))
    (kontext / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"num_train_timesteps": 1000, "_class_name": "FlowMatchEulerDiscreteScheduler"}))
    (tmp_path / "notimage.png").write_text("not an image")
    for bad in (tmp_path / "missing.png", tmp_path / "notimage.png"):
        one_error(capsys, args(kontext, tmp_path / "d", tiny_clip, "--prompt", "a cat", "--image", str(bad)),
                  "--image", str(bad), "not a readable image")
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()  # refused before anything ran


def test_a_family_not_covered_is_refused_at_load_in_one_line(tmp_path, capsys, tiny_clip, monkeypatch):
    """A real (tiny) pipeline of a family without an adapter, saved (its model_index is what the CLI
    reads first) and handed to the loader as diffusers loads it (its text encoder left out)."""
    from diffusers import (AuraFlowPipeline, AuraFlowTransformer2DModel, DiffusionPipeline,
                           FlowMatchEulerDiscreteScheduler)
    from tiny_transformers import flow_vae

    torch.manual_seed(0)
    transformer = AuraFlowTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=1,
                                             num_single_dit_layers=1, attention_head_dim=8, num_attention_heads=4,
                                             caption_projection_dim=32, joint_attention_dim=32, out_channels=4,
                                             pos_embed_max_size=64)
    pipe = AuraFlowPipeline(transformer=transformer, vae=flow_vae(), scheduler=FlowMatchEulerDiscreteScheduler(),
                            text_encoder=None, tokenizer=None)
    pipe.save_pretrained(tmp_path / "auraflow")
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", staticmethod(lambda *a, **k: pipe))
    one_error(capsys, args(tmp_path / "auraflow", tmp_path / "run", tiny_clip, "--prompt", "a cat"), "AuraFlow",
              "supported families", *FAMILIES)
    assert not (tmp_path / "run" / "results.jsonl").exists()


@pytest.fixture(scope="module")
def kontext(tmp_path_factory):
    """A saved tiny Flux Kontext pipeline (text encoders included) and a 24x16 reference image file."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("kontext")
    kontext_text_pipe(root / "tok").save_pretrained(root / "pipe")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 16, 3), dtype=np.uint8)).save(root / "ref.png")
    return root / "pipe", root / "ref.png"


def test_flux_kontext_with_a_reference_image_file_from_the_library_and_the_cli(tmp_path, kontext, tiny_clip):
    """The image file as the CLI passes it (`models.conditioning`): the toolkit's loop reproduces the
    stock pipeline given the same image (resized to the Kontext resolution of its aspect ratio, encoded,
    appended as tokens); then the CLI runs end to end with --image and records it."""
    from diffusers import DiffusionPipeline

    from diffusion_windows.diffusion import hooks
    from diffusion_windows.diffusion.models import conditioning

    folder, picture = kontext
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    cond = conditioning("a cat", 2.5, image=str(picture))
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=3, generator=gens(), height=64, width=64,
                                   **cond)
    ref = pipe(prompt="a cat", image=cond["image"], guidance_scale=2.5, height=64, width=64, max_area=64 * 64,
               num_inference_steps=3, generator=gens(), num_images_per_prompt=2, output_type="latent").images
    torch.testing.assert_close(denoiser(pipe).pipeline_latents(traj.final), ref, atol=1e-5, rtol=1e-5)
    out = tmp_path / "run"
    assert main(args(folder, out, tiny_clip, "--prompt", "a cat", "--image", str(picture), "--guidance-scale", "2.5",
                     "--height", "64", "--width", "64", "--samples", "2", "--timesteps", "0,500")) == 0
    d = json.loads((out / "windows.json").read_text())
    assert d["options"]["image"] == str(picture.resolve()) and d["nfe"] > 0
    assert json.loads((out / "options.json").read_text())["image"] == str(picture.resolve())


def test_a_unet_text_pipeline_takes_the_negative_prompt_and_refuses_true_cfg(tmp_path):
    """--negative-prompt applies to every text pipeline: Stable Diffusion encodes it as its pipeline does;
    a keyword its restarts do not take is refused in one line (not a TypeError)."""
    from conftest import make_tiny_sd_pipe
    from tiny_transformers import clip_encoder, clip_tokenizer

    pipe = make_tiny_sd_pipe()
    pipe.tokenizer, pipe.text_encoder = clip_tokenizer(tmp_path / "clip"), clip_encoder(16)
    cond = denoiser(pipe).prepare(1, prompt="a cat", negative_prompt="a dog", guidance_scale=3.0)
    ref = pipe.encode_prompt("a cat", "cpu", 1, True, negative_prompt="a dog")[1]
    torch.testing.assert_close(cond.negative, ref)
    with pytest.raises(ValueError, match="true_cfg_scale=.*restarts take only"):
        denoiser(pipe).prepare(1, prompt="a cat", true_cfg_scale=2.0)


def test_qwen_image_with_its_text_encoder_from_the_library_and_the_cli(tmp_path, tiny_clip):
    """A prompt and a negative prompt encoded by the pipeline's own Qwen2.5-VL path: the toolkit's loop
    reproduces the stock call (true CFG 3); the CLI runs end to end with both flags."""
    from diffusers import DiffusionPipeline

    from diffusion_windows.diffusion import hooks

    qwen_pipe(text=True).save_pretrained(tmp_path / "qwen")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "qwen", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(prompt="a photo of a cat", negative_prompt="a dog", true_cfg_scale=3.0, max_sequence_length=48)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=3, generator=gens(), height=32, width=32,
                                   **kw)
    ref = pipe(num_inference_steps=3, generator=gens(), height=32, width=32, num_images_per_prompt=2,
               output_type="latent", **kw).images
    torch.testing.assert_close(denoiser(pipe).pipeline_latents(traj.final), ref, atol=1e-5, rtol=1e-5)
    out = tmp_path / "run"
    assert main(args(tmp_path / "qwen", out, tiny_clip, "--prompt", "a photo of a cat", "--negative-prompt", "a dog",
                     "--true-cfg-scale", "3", "--height", "32", "--width", "32", "--samples", "2",
                     "--timesteps", "0,500")) == 0
    d = json.loads((out / "windows.json").read_text())
    assert d["options"]["true_cfg_scale"] == 3.0 and d["options"]["negative_prompt"] == "a dog"
    assert d["nfe"] > 0 and d["nfe"] % 2 == 0  # true CFG: two model rows per sample and step


# ----------------------------------------------------------------------------- the text-encoder families
PROMPTED = ("cogview4", "flux2", "hidream", "lumina2", "z-image")
STEPS = 3


@pytest.mark.parametrize("name", PROMPTED)
def test_each_family_from_its_own_text_encoder_through_the_library_and_the_cli(tmp_path, tiny_clip, monkeypatch,
                                                                               name):
    """A saved tiny pipeline with its own text encoder and tokenizer, loaded as a user's folder: the
    toolkit's loop from a prompt (and a negative prompt where the family guides with one) reproduces the
    stock call from the same prompt; then the CLI runs end to end and counts every model row its
    restarts ran (the rows the transformer saw, less the base samples' N steps)."""
    from diffusers import DiffusionPipeline

    from diffusion_windows.diffusion import hooks

    PIPES[name](text=True).save_pretrained(tmp_path / name)
    pipe = DiffusionPipeline.from_pretrained(tmp_path / name, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    size = SIZES[name]
    if name == "hidream":
        pipe.default_sample_size = size  # its stock call rescales to this area (an attribute: not saved)
    kw = dict(prompt="a photo of a cat", guidance_scale=3.0)
    if name != "flux2":  # Flux.2: a guidance embedding, no negative branch
        kw["negative_prompt"] = "a dog"
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=STEPS, generator=gens(), height=size,
                                   width=size, **kw)
    ref = pipe(num_inference_steps=STEPS, generator=gens(), height=size, width=size, num_images_per_prompt=2,
               output_type="latent", **kw).images
    torch.testing.assert_close(denoiser(pipe).pipeline_latents(traj.final), ref, atol=1e-5, rtol=1e-5)

    rows = []
    cls = type(pipe.transformer)
    forward = cls.forward

    def counted(self, *a, **k):
        x = k.get("hidden_states", a[0] if a else k.get("x"))
        rows.append(len(x) if isinstance(x, list) else int(x.shape[0]))
        return forward(self, *a, **k)

    monkeypatch.setattr(cls, "forward", counted)
    out = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    assert main(args(tmp_path / name, out, tiny_clip, *flags, "--height", str(size), "--width", str(size),
                     "--samples", "2", "--num-inference-steps", str(STEPS), "--timesteps", "0,500")) == 0
    d = json.loads((out / "windows.json").read_text())
    assert d["time_unit"] == "1000 sigma" and d["options"]["prompt"] == "a photo of a cat"
    assert d["features"][0]["timesteps"] == [0, 500]
    per_step = 1 if name == "flux2" else 2  # classifier-free guidance: two model rows per sample and step
    assert d["nfe"] > 0 and d["nfe"] % per_step == 0
    assert d["nfe"] == sum(rows) - 2 * STEPS * per_step  # the two base samples' trajectories are not restarts

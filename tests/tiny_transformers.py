"""Tiny random transformer pipelines built in code (PIPELINES.md's configs; offline, CPU, milliseconds).

SD3, Flux (dev: guidance embedding; schnell-like: none), PixArt-α (with micro-conditions), PixArt-Σ,
Sana (DPM-Solver with flow sigmas, AutoencoderDC) and DiT, each with the embeddings its pipeline
takes (`*_embeds`) so that no text encoder is needed; `with_text_encoders` adds tiny CLIP and T5
encoders and tokenizers (written here) for pipelines saved to a folder and run from the CLI.
"""
import json

import torch


def flow_vae(latent_channels=4):
    """An SD3/Flux-style AutoencoderKL (scale 1.5035, shift 0.0609), factor 1, 3 image channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035).eval()


def sd_vae(latent_channels=4):
    """An SD-style AutoencoderKL (scale 0.18215, no shift), factor 1."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, norm_num_groups=4,
                         block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), sample_size=8, scaling_factor=0.18215).eval()


def _done(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- SD3
def sd3_pipe(scheduler=None, **text):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
                                        pooled_projection_dim=64, out_channels=4).eval()
    parts = dict(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                 tokenizer_3=None)
    parts.update(text)
    return _done(StableDiffusion3Pipeline(transformer=transformer, vae=flow_vae(),
                                          scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=3.0), **parts))


def sd3_embeds(batch=1, seed=0):
    """``(prompt_embeds [B, 6, 32], pooled [B, 64], negative, negative pooled)``."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, *shape, generator=g) for shape in ((6, 32), (64,), (6, 32), (64,)))


# ----------------------------------------------------------------------------- Flux
def flux_pipe(guidance_embeds=True, scheduler=None, **text):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                         guidance_embeds=guidance_embeds).eval()
    if scheduler is None:  # dev: dynamic shifting; schnell: shift 1
        scheduler = (FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=4,
                                                     max_image_seq_len=64, base_shift=0.5, max_shift=1.15)
                     if guidance_embeds else FlowMatchEulerDiscreteScheduler(shift=1.0))
    parts = dict(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    parts.update(text)
    return _done(FluxPipeline(transformer=transformer, vae=flow_vae(latent_channels=1), scheduler=scheduler, **parts))


def flux_embeds(batch=1, seed=0):
    """``(prompt_embeds [B, 5, 32], pooled [B, 32], negative, negative pooled)``."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, *shape, generator=g) for shape in ((5, 32), (32,), (5, 32), (32,)))


# ----------------------------------------------------------------------------- PixArt
def pixart_pipe(alpha=True, scheduler=None):
    """PixArt-α with micro-conditions (``sample_size=128``: run it at 16 px) or PixArt-Σ (8 px)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(sample_size=128 if alpha else 8, num_layers=2, patch_size=2,
                                           attention_head_dim=8, num_attention_heads=3, caption_channels=32,
                                           in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
                                           activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                                           norm_type="ada_norm_single", norm_elementwise_affine=False,
                                           norm_eps=1e-6).eval()
    cls = PixArtAlphaPipeline if alpha else PixArtSigmaPipeline
    return _done(cls(tokenizer=None, text_encoder=None, vae=sd_vae(), transformer=transformer,
                     scheduler=scheduler or DPMSolverMultistepScheduler()))


def t5_embeds(batch=1, seed=0, dim=32, length=6):
    """``(prompt_embeds, mask, negative, negative mask)``; the last two tokens masked out."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:, -2:] = 0
    return (torch.randn(batch, length, dim, generator=g), mask, torch.randn(batch, length, dim, generator=g),
            mask.clone())


# ----------------------------------------------------------------------------- Sana
def sana_pipe(scheduler=None):
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel

    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                         num_attention_heads=2, attention_head_dim=4, num_cross_attention_heads=2,
                                         cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
                                         sample_size=32).eval()
    torch.manual_seed(0)
    vae = AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=2,
                        encoder_block_types=("ResBlock", "EfficientViTBlock"),
                        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
                        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)),
                        decoder_qkv_multiscales=((), (5,)), encoder_layers_per_block=(1, 1),
                        decoder_layers_per_block=[1, 1], downsample_block_type="conv",
                        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
                        scaling_factor=0.41407).eval()
    scheduler = scheduler or DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                         flow_shift=3.0)
    return _done(SanaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler))


# ----------------------------------------------------------------------------- DiT
def dit_pipe(scheduler=None):
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(sample_size=16, num_layers=2, patch_size=4, attention_head_dim=8,
                                        num_attention_heads=2, in_channels=4, out_channels=8, attention_bias=True,
                                        activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                                        norm_type="ada_norm_zero", norm_elementwise_affine=False).eval()
    return _done(DiTPipeline(transformer=transformer, vae=sd_vae(), scheduler=scheduler or DDIMScheduler(),
                             id2label={0: "tench", 1: "goldfish", 2: "shark"}))


# ----------------------------------------------------------------------------- text encoders (for the CLI)
WORDS = ("a", "cat", "dog", "photo", "of")


def clip_tokenizer(folder, max_length=8):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in [w + "</w>" for w in WORDS] + [c + e for c in "abcdefghijklmnopqrstuvwxyz" for e in ("", "</w>")]:
        vocab.setdefault(piece, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def clip_encoder(hidden, projection=None, vocab=60, positions=8):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=positions, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, projection_dim=projection or hidden)
    return (CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)).eval()


def t5(d_model=32):
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [("\u2581" + w, -3.0) for w in WORDS]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0)
    torch.manual_seed(0)
    encoder = T5EncoderModel(T5Config(d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                      vocab_size=len(vocab))).eval()
    return tokenizer, encoder


def sd3_text(tmp):
    """SD3's two CLIP encoders (hidden 16 each, projection 32: pooled 64) and T5 (d_model 32)."""
    tok = clip_tokenizer(tmp / "clip")
    tok3, enc3 = t5()
    return dict(tokenizer=tok, text_encoder=clip_encoder(16, 32), tokenizer_2=tok, text_encoder_2=clip_encoder(16, 32),
                tokenizer_3=tok3, text_encoder_3=enc3)


def flux_text(tmp):
    """Flux's CLIP (pooled 32) and T5 (d_model 32)."""
    tok2, enc2 = t5()
    return dict(tokenizer=clip_tokenizer(tmp / "clip"), text_encoder=clip_encoder(32), tokenizer_2=tok2,
                text_encoder_2=enc2)

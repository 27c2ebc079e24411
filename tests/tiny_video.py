"""Tiny random video pipelines built in code as diffusers' own tests build them (offline, CPU):
Wan 2.1 (`wan_pipe`) and CogVideoX (`cogvideox_pipe`), no text encoder (embeddings given)."""
import torch


def wan_components(scheduler=None):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    return dict(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae.eval(),
                scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=7.0))


def wan_pipe(scheduler=None, cls=None):
    from diffusers import WanPipeline

    pipe = (cls or WanPipeline)(**wan_components(scheduler))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cogvideox_components(scheduler=None):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=True)
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                 latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                 temporal_compression_ratio=4)
    # CogVideoX-2b's scheduler settings: v-prediction, SNR shift 3, trailing, zero terminal SNR
    scheduler = scheduler or CogVideoXDDIMScheduler(
        prediction_type="v_prediction", snr_shift_scale=3.0, timestep_spacing="trailing",
        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True, rescale_betas_zero_snr=True)
    return dict(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae.eval(), scheduler=scheduler)


def cogvideox_pipe(scheduler=None, cls=None):
    from diffusers import CogVideoXPipeline

    pipe = (cls or CogVideoXPipeline)(**cogvideox_components(scheduler))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def video_embeds(n=1, length=8, dim=32):
    """``(prompt_embeds, negative_prompt_embeds)`` ``[n, length, dim]``, fixed random."""
    pe = torch.randn(n, length, dim, generator=torch.Generator().manual_seed(1))
    ne = torch.randn(n, length, dim, generator=torch.Generator().manual_seed(2))
    return pe, ne


def hunyuan_pipe():
    """HunyuanVideo as diffusers' tests build it (no text encoders: embeddings given)."""
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True)
    pipe = HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=vae.eval(),
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None,
                                tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hunyuan_embeds(n=1, length=6):
    """Positive and negative ``(prompt_embeds, pooled_prompt_embeds, prompt_attention_mask)`` keywords."""
    g = torch.Generator().manual_seed(3)
    out = {}
    for prefix in ("", "negative_"):
        out[prefix + "prompt_embeds"] = torch.randn(n, length, 16, generator=g)
        out[prefix + "pooled_prompt_embeds"] = torch.randn(n, 8, generator=g)
        mask = torch.ones(n, length)
        mask[:, -2:] = 0
        out[prefix + "prompt_attention_mask"] = mask
    return out


def ltx_pipe():
    """LTX-Video as diffusers' tests build it (no text encoder: embeddings given), the VAE's latent statistics
    set off their defaults so that decoding reads them."""
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                           LTXVideoTransformer3DModel)

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=1, caption_channels=32)
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                spatio_temporal_scaling=(True, True, False, False), layers_per_block=(1, 1, 1, 1, 1),
                                patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    vae.latents_mean.copy_(torch.linspace(-0.3, 0.3, 8))
    vae.latents_std.copy_(torch.linspace(0.5, 1.5, 8))
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), vae=vae.eval(),
                       text_encoder=None, tokenizer=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe

"""Tiny random pipelines of the newer flow-matching image families (shapes as diffusers' own tests
build them; offline, CPU, milliseconds): Chroma, Flux Kontext, Flux.2, Qwen-Image, Z-Image, HiDream,
Lumina 2, CogView 4, each with the embeddings its pipeline takes so that no text encoder is needed;
``text=True`` adds the family's own text encoder classes (tiny configs) with byte-level tokenizers
built here, for folders run from the prompt (the CLI); and the call keywords each test runs them with."""
from pathlib import Path

import torch
from tiny_transformers import flow_vae, t5


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=64,
                                           base_shift=0.5, max_shift=1.15)


def _done(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def chroma_pipe(text=False):
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    torch.manual_seed(0)
    transformer = ChromaTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                           attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                           axes_dims_rope=[4, 4, 8], approximator_hidden_dim=32,
                                           approximator_layers=1, approximator_num_channels=16).eval()
    tokenizer, encoder = t5() if text else (None, None)
    return _done(ChromaPipeline(scheduler=_scheduler(), vae=flow_vae(latent_channels=1), text_encoder=encoder,
                                tokenizer=tokenizer, transformer=transformer))


def kontext_pipe():
    from diffusers import FluxKontextPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                         guidance_embeds=True).eval()
    return _done(FluxKontextPipeline(scheduler=_scheduler(), vae=flow_vae(latent_channels=1), text_encoder=None,
                                     tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer))


def flux2_pipe(text=False):
    """Flux.2; with ``text``: `flux2_text` (three Mistral layers of 16 stacked: a text width of 48)."""
    from diffusers import AutoencoderKLFlux2, Flux2Pipeline, Flux2Transformer2DModel

    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                          attention_head_dim=16, num_attention_heads=2,
                                          joint_attention_dim=48 if text else 16,
                                          timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4]).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                             up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1,
                             latent_channels=1, norm_num_groups=1, use_quant_conv=False,
                             use_post_quant_conv=False).eval()
    with torch.no_grad():  # batch-norm statistics other than the identity's, so that decoding checks them
        vae.bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.05, 0.3]))
        vae.bn.running_var.copy_(torch.tensor([1.5, 0.7, 1.1, 2.0]))
    parts = flux2_text() if text else dict(text_encoder=None, tokenizer=None)
    return _done(Flux2Pipeline(scheduler=_scheduler(), vae=vae, transformer=transformer, **parts))


def kontext_text_pipe(tmp):
    """Flux Kontext with tiny CLIP and T5 encoders (written in ``tmp``) and a VAE of factor 8, so that
    the pipeline's resizing of a reference image to a Kontext resolution (~1 MP) stays cheap."""
    from diffusers import AutoencoderKL, FluxKontextPipeline
    from tiny_transformers import flux_text

    transformer = kontext_pipe().transformer
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(4, 4, 4, 4),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, latent_channels=1, norm_num_groups=1, sample_size=64,
                        scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                        use_post_quant_conv=False).eval()
    return _done(FluxKontextPipeline(scheduler=_scheduler(), vae=vae, transformer=transformer, **flux_text(tmp)))


def qwen_pipe(text=False):
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=1,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4)).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                                 latents_std=[1.5, 0.8, 1.2, 1.0]).eval()
    parts = qwen_text() if text else dict(text_encoder=None, tokenizer=None)
    return _done(QwenImagePipeline(scheduler=_scheduler(), vae=vae, transformer=transformer, **parts))


def byte_vocab(specials=()):
    """The 256 byte symbols of a byte-level BPE (every byte one token, no merges) and then ``specials``."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    for special in specials:
        vocab[special] = len(vocab)
    return vocab


def byte_tokenizer(specials, chat_template=None, **tokens):
    """A ``PreTrainedTokenizerFast`` over `byte_vocab` (the class Llama 3's and GLM-4's tokenizers load
    as); ``tokens``: its bos/eos/pad/... among ``specials``, the rest added as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = Tokenizer(models.BPE(vocab=byte_vocab(specials), merges=[]))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    named = set(tokens.values())
    return PreTrainedTokenizerFast(tokenizer_object=model, chat_template=chat_template,
                                   additional_special_tokens=[t for t in specials if t not in named], **tokens)


def qwen_tokenizer(chat_template=None):
    """Qwen's own tokenizer class over `byte_vocab` with the chat template's special tokens."""
    from transformers import Qwen2Tokenizer

    vocab = byte_vocab(("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def qwen_text():
    """A tiny Qwen2.5-VL text encoder and `qwen_tokenizer`: Qwen-Image's prompt path, offline."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen_tokenizer()
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": 300, "eos_token_id": end, "pad_token_id": end,
                     "bos_token_id": end, "rope_theta": 1000000.0,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=300, vision_start_token_id=297, vision_end_token_id=298, vision_token_id=299)
    return dict(text_encoder=Qwen2_5_VLForConditionalGeneration(config).eval(), tokenizer=tokenizer)


def zimage_pipe(text=False):
    from diffusers import ZImagePipeline, ZImageTransformer2DModel

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32,
                                           n_layers=1, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                                           qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
                                           axes_dims=[8, 4, 4], axes_lens=[256, 32, 32]).eval()
    with torch.no_grad():  # created with torch.empty: fixed, as diffusers' tests do
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    parts = zimage_text() if text else dict(text_encoder=None, tokenizer=None)
    return _done(ZImagePipeline(scheduler=_scheduler(), vae=flow_vae(latent_channels=4), transformer=transformer,
                                **parts))


def lumina2_pipe(text=False):
    """Lumina 2 with a VAE of factor 8 (the pipeline assumes 8): 32 px images, 4x4 latents."""
    from diffusers import AutoencoderKL, Lumina2Pipeline, Lumina2Transformer2DModel

    torch.manual_seed(0)
    transformer = Lumina2Transformer2DModel(sample_size=4, patch_size=2, in_channels=4, hidden_size=8, num_layers=1,
                                            num_refiner_layers=1, num_attention_heads=1, num_kv_heads=1,
                                            multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5,
                                            scaling_factor=1.0, axes_dim_rope=(4, 2, 2), axes_lens=(512, 128, 128),
                                            cap_feat_dim=8).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(4, 4, 4, 4),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, latent_channels=4, norm_num_groups=1, sample_size=32,
                        scaling_factor=0.3611, shift_factor=0.1159).eval()
    parts = lumina2_text() if text else dict(text_encoder=None, tokenizer=None)
    return _done(Lumina2Pipeline(scheduler=_scheduler(), vae=vae, transformer=transformer, **parts))


def hidream_pipe(text=False):
    """HiDream-I1 whose default size is 16 px (the stock call rescales any size to that area)."""
    from diffusers import HiDreamImagePipeline, HiDreamImageTransformer2DModel

    torch.manual_seed(0)
    transformer = HiDreamImageTransformer2DModel(patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                                 num_single_layers=1, attention_head_dim=8, num_attention_heads=4,
                                                 caption_channels=[32, 16], text_emb_dim=64, num_routed_experts=4,
                                                 num_activated_experts=2, axes_dims_rope=(4, 2, 2),
                                                 max_resolution=(32, 32), llama_layers=(0, 1)).eval()
    parts = (hidream_text() if text
             else {f"{k}{i}": None for k in ("text_encoder", "tokenizer") for i in ("", "_2", "_3", "_4")})
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = HiDreamImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=flow_vae(latent_channels=4),
                                transformer=transformer, **parts)
    pipe.default_sample_size = 16
    return _done(pipe)


def cogview4_pipe(text=False):
    """CogView 4 with its scheduler's settings (linear time shift, base 0.25, max 0.75) at tiny sequence lengths."""
    from diffusers import CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    transformer = CogView4Transformer2DModel(patch_size=2, in_channels=4, num_layers=1, attention_head_dim=4,
                                             num_attention_heads=4, out_channels=4, text_embed_dim=32,
                                             time_embed_dim=8, condition_dim=4, sample_size=16).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(base_shift=0.25, max_shift=0.75, base_image_seq_len=4,
                                                use_dynamic_shifting=True, time_shift_type="linear")
    vae = flow_vae(latent_channels=4)
    vae.register_to_config(shift_factor=None)  # CogView 4's VAE has none (its pipeline decodes z / scaling_factor)
    parts = cogview4_text() if text else dict(text_encoder=None, tokenizer=None)
    return _done(CogView4Pipeline(scheduler=scheduler, vae=vae, transformer=transformer, **parts))


# ----------------------------------------------------------------------------- text encoders (tiny configs)
# of each family's own class, with byte-level tokenizers built here (no downloads): a folder saved with
# them loads its prompt path as a user's folder does.
QWEN3_CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and not "
              "enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
MISTRAL_CHAT = ("<s>{% for m in messages %}{% for c in m['content'] %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]"
                "{{ c['text'] }}[/SYSTEM_PROMPT]{% else %}[INST]{{ c['text'] }}[/INST]{% endif %}{% endfor %}"
                "{% endfor %}")


def _decoder(config_cls, model_cls, hidden, layers=2, **extra):
    torch.manual_seed(0)
    config = config_cls(vocab_size=300, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                        num_attention_heads=2, num_key_value_heads=2, head_dim=hidden // 2, **extra)
    return model_cls(config).eval()


def zimage_text():
    """Z-Image's Qwen3 (its second-to-last hidden layer, 16 wide: the captions) and Qwen's tokenizer
    with a Qwen3 chat template."""
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = qwen_tokenizer(QWEN3_CHAT)
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return dict(text_encoder=_decoder(Qwen3Config, Qwen3Model, 16, pad_token_id=end, eos_token_id=end),
                tokenizer=tokenizer)


def lumina2_text():
    """Lumina 2's Gemma 2 (second-to-last hidden layer, 8 wide)."""
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = byte_tokenizer(("<pad>", "<eos>", "<bos>"), pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    return dict(text_encoder=_decoder(Gemma2Config, Gemma2Model, 8, pad_token_id=256, eos_token_id=257,
                                      bos_token_id=258), tokenizer=tokenizer)


def cogview4_text():
    """CogView 4's GLM-4 (second-to-last hidden layer, 32 wide)."""
    from transformers import GlmConfig, GlmModel

    tokenizer = byte_tokenizer(("<|endoftext|>",), pad_token="<|endoftext|>", eos_token="<|endoftext|>")
    return dict(text_encoder=_decoder(GlmConfig, GlmModel, 32, pad_token_id=256, eos_token_id=256),
                tokenizer=tokenizer)


def hidream_text():
    """HiDream's two CLIPs with projections (pooled 32 + 32), T5 (32) and Llama 3 (two layers of 16),
    the CLIPs with 128 positions (HiDream pads CLIP prompts to 128 tokens)."""
    import tempfile

    from transformers import LlamaConfig, LlamaForCausalLM
    from tiny_transformers import clip_encoder, clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        clip = clip_tokenizer(Path(tmp), max_length=128)
    tokenizer_3, text_encoder_3 = t5()
    llama = byte_tokenizer(("<|begin_of_text|>", "<|end_of_text|>"), bos_token="<|begin_of_text|>",
                           eos_token="<|end_of_text|>")
    return dict(tokenizer=clip, text_encoder=clip_encoder(16, 32, positions=128), tokenizer_2=clip,
                text_encoder_2=clip_encoder(16, 32, positions=128), tokenizer_3=tokenizer_3,
                text_encoder_3=text_encoder_3, tokenizer_4=llama,
                text_encoder_4=_decoder(LlamaConfig, LlamaForCausalLM, 16, bos_token_id=256, eos_token_id=257))


def flux2_text():
    """Flux.2's Mistral 3 (30 text layers of 16: the pipeline stacks layers 10, 20 and 30; a one-layer
    Pixtral vision tower) and its processor (Pixtral's, with a Mistral chat template)."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor

    specials = ("<pad>", "<s>", "</s>", "[IMG]", "[IMG_BREAK]", "[IMG_END]", "[INST]", "[/INST]", "[SYSTEM_PROMPT]",
                "[/SYSTEM_PROMPT]")
    tokenizer = byte_tokenizer(specials, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    processor = PixtralProcessor(image_processor=PixtralImageProcessor(patch_size=6), tokenizer=tokenizer,
                                 patch_size=6, chat_template=MISTRAL_CHAT)
    torch.manual_seed(0)
    config = Mistral3Config(
        text_config={"model_type": "mistral", "vocab_size": 300, "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 30, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8,
                     "max_position_embeddings": 512, "sliding_window": None, "pad_token_id": 256,
                     "bos_token_id": 257, "eos_token_id": 258},
        vision_config={"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 32, "image_size": 30, "patch_size": 6, "num_channels": 3},
        image_token_index=259, vision_feature_layer=-1, pad_token_id=256, bos_token_id=257, eos_token_id=258)
    return dict(text_encoder=Mistral3ForConditionalGeneration(config).eval(), tokenizer=processor)


PIPES = {"chroma": chroma_pipe, "flux-kontext": kontext_pipe, "flux2": flux2_pipe, "lumina2": lumina2_pipe,
         "hidream": hidream_pipe, "cogview4": cogview4_pipe, "qwen-image": qwen_pipe, "z-image": zimage_pipe}
SIZES = {"chroma": 8, "flux-kontext": 8, "flux2": 16, "lumina2": 32, "hidream": 16, "cogview4": 16, "qwen-image": 32,
         "z-image": 8}


def call_kwargs(name, batch=2):
    """``(keywords both the stock call and the toolkit take, stock-only keywords)`` of ``name``."""
    g = torch.Generator().manual_seed(5)
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[:, -1] = 0
    if name == "chroma":
        pe, ne = torch.randn(batch, 5, 32, generator=g), torch.randn(batch, 5, 32, generator=g)
        mask = mask.float()  # as its encode_prompt returns it
        return dict(prompt_embeds=pe, negative_prompt_embeds=ne, prompt_attention_mask=mask,
                    negative_prompt_attention_mask=mask.clone(), guidance_scale=3.0), {}
    if name == "flux-kontext":  # guidance embedding; a reference image of its own size (no Kontext resizing)
        image = torch.rand(1, 3, 8, 8, generator=g)
        return (dict(prompt_embeds=torch.randn(batch, 5, 32, generator=g),
                     pooled_prompt_embeds=torch.randn(batch, 32, generator=g), guidance_scale=3.0, image=image,
                     _auto_resize=False), dict(max_area=64))
    if name == "flux2":  # a guidance embedding, one row per sample
        return dict(prompt_embeds=torch.randn(batch, 5, 16, generator=g), guidance_scale=3.0), {}
    if name == "lumina2":  # CFG with its default normalisation along the last axis
        return dict(prompt_embeds=torch.randn(batch, 5, 8, generator=g), prompt_attention_mask=mask.bool(),
                    negative_prompt_embeds=torch.randn(batch, 5, 8, generator=g),
                    negative_prompt_attention_mask=mask.bool(), guidance_scale=3.0), {}
    if name == "hidream":  # CFG batched [negative, positive], the output negated first
        return dict(prompt_embeds_t5=torch.randn(batch, 5, 32, generator=g),
                    prompt_embeds_llama3=torch.randn(2, batch, 5, 16, generator=g),
                    pooled_prompt_embeds=torch.randn(batch, 64, generator=g),
                    negative_prompt_embeds_t5=torch.randn(batch, 5, 32, generator=g),
                    negative_prompt_embeds_llama3=torch.randn(2, batch, 5, 16, generator=g),
                    negative_pooled_prompt_embeds=torch.randn(batch, 64, generator=g), guidance_scale=3.0), {}
    if name == "cogview4":  # CFG as two calls; unshifted integer timesteps on a shifted grid
        return dict(prompt_embeds=torch.randn(batch, 5, 32, generator=g),
                    negative_prompt_embeds=torch.randn(batch, 5, 32, generator=g), guidance_scale=3.0), {}
    if name == "qwen-image":  # true CFG with a negative prompt, rescaled to the positive's norm
        return dict(prompt_embeds=torch.randn(batch, 5, 16, generator=g), prompt_embeds_mask=mask,
                    negative_prompt_embeds=torch.randn(batch, 5, 16, generator=g),
                    negative_prompt_embeds_mask=mask.clone(), true_cfg_scale=3.0), {}
    if name == "z-image":  # captions are lists of [L, D]; the toolkit also takes them stacked
        pe = [torch.randn(5, 16, generator=g) for _ in range(batch)]
        ne = [torch.randn(5, 16, generator=g) for _ in range(batch)]
        return dict(prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=3.0, cfg_normalization=1.2), {}
    raise KeyError(name)

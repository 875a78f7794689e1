"""Tiny randomly initialised Wan image-to-video pipelines of the real classes, for ``--demo`` and the tests,
and the tiny CLIP parts other image-to-video families' demo builds share.

Same idea as ``families/demo.py``: real diffusers / transformers components with tiny configs, tokenizers
built from a small vocabulary, no hub access. The spatial compression of each VAE matches the real
model's (8x for Wan 2.1, 16x for the Wan 2.2 TI2V VAE), so the size rules the app applies are the real ones.
"""

from __future__ import annotations

from .demo import build_word_tokenizer, tiny_umt5

# Tiny CLIP sizes: text and image embeddings are both ``CLIP_DIM`` wide, images are ``CLIP_IMAGE`` square.
CLIP_DIM = 32
CLIP_IMAGE = 32


def build_clip_tokenizer(max_length: int = 77):
    """A real ``CLIPTokenizer`` over single byte-level characters (no merges): any prompt tokenizes."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        for token in (char, f"{char}</w>"):
            vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def clip_image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE},
        size={"shortest_edge": CLIP_IMAGE},
        do_center_crop=True,
        do_resize=True,
        do_normalize=True,
    )


def clip_vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=CLIP_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=CLIP_IMAGE,
        patch_size=8,
        projection_dim=CLIP_DIM,
    )


def build_wan_i2v(layout: str = "2.1"):
    """A tiny ``WanImageToVideoPipeline``.

    ``layout``: ``"2.1"`` (Wan 2.1 I2V: CLIP image encoder, 36-channel transformer input), ``"2.2-moe"``
    (Wan 2.2 I2V A14B: no image encoder, two experts split at ``boundary_ratio`` 0.9) or ``"2.2-ti2v"``
    (Wan 2.2 TI2V 5B: the 48-channel VAE that compresses 16x, first frame kept by ``expand_timesteps``).
    """
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPVisionModel

    if layout not in ("2.1", "2.2-moe", "2.2-ti2v"):
        raise ValueError(f"Unknown Wan I2V layout {layout!r}.")
    torch.manual_seed(0)
    tokenizer = build_word_tokenizer()
    text_encoder = tiny_umt5(len(tokenizer))
    if layout == "2.2-ti2v":
        z_dim = 48
        vae = AutoencoderKLWan(
            base_dim=8, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
            is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
            latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
        ).eval()
        in_channels = z_dim  # the first frame is carried by the latents themselves
    else:
        z_dim = 16
        vae = AutoencoderKLWan(
            base_dim=3, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).eval()
        in_channels = z_dim + 4 + z_dim  # noise + frame mask + encoded condition video
    with_image_encoder = layout == "2.1"
    heads, head_dim = 2, 12

    def transformer():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            in_channels=in_channels,
            out_channels=z_dim,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            image_dim=CLIP_DIM if with_image_encoder else None,
            added_kv_proj_dim=heads * head_dim if with_image_encoder else None,
            rope_max_seq_len=1024,
        ).eval()

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    two_experts = layout == "2.2-moe"
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        image_processor=clip_image_processor() if with_image_encoder else None,
        image_encoder=CLIPVisionModel(clip_vision_config()).eval() if with_image_encoder else None,
        transformer=transformer(),
        transformer_2=transformer() if two_experts else None,
        boundary_ratio=0.9 if two_experts else None,
        expand_timesteps=layout == "2.2-ti2v",
    )


BUILDERS = {
    "wan-i2v": lambda: build_wan_i2v("2.1"),
    "wan-i2v-moe": lambda: build_wan_i2v("2.2-moe"),
    "wan-ti2v": lambda: build_wan_i2v("2.2-ti2v"),
}

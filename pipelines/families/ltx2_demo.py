"""LTX-2's tiny demo builds: ``LTX2Pipeline`` and ``LTX2ImageToVideoPipeline`` with every real component class
(transformer, video VAE, audio VAE, vocoder, text connectors, a Gemma 3 text encoder) at a few thousand
parameters each, built locally (no hub access) and saved like a real model folder.

The sizes follow diffusers' own LTX-2 fast tests, with three changes: the text encoder is a Gemma 3 built
here (the tests download one); the video VAE has the real 32x spatial and 8x temporal compression, so the
demo's frame sizes stay a few hundred tokens; and the vocoder upsamples 160x, the audio VAE's hop length, so
the clip's sound lasts as long as its frames. A 9-frame 416 x 224 clip takes about a second on a CPU.
"""

from __future__ import annotations

TEXT_WIDTH = 32  # the tiny Gemma's hidden size; the connectors and the transformer read it
TEXT_LAYERS = 2
SAMPLE_RATE = 16000


def tiny_gemma3(vocab_size: int):
    """A tiny ``Gemma3ForConditionalGeneration`` (the real text encoder is Gemma 3 12B)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=32,
                            num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                            max_position_embeddings=256, sliding_window=64, pad_token_id=0, eos_token_id=1,
                            bos_token_id=1)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(config).eval()


def tiny_components() -> dict:
    """The components both LTX-2 pipelines take, tiny and random (seeded)."""
    import torch
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    from .demo import build_word_tokenizer

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(max_length=128)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=TEXT_WIDTH, rope_double_precision=False, rope_type="split",
    ).eval()
    connectors = LTX2TextConnectors(
        caption_channels=TEXT_WIDTH, text_proj_in_factor=TEXT_LAYERS + 1, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split",
    ).eval()
    vae = AutoencoderKLLTX2Video(  # the real layout (patch 4, then 2x2x2x2 down: 32x spatial, 8x temporal), few channels
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32, 64),
        decoder_block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, True), decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False, False, False, False),
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"), upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2), timestep_conditioning=False, patch_size=4, patch_size_t=1, encoder_causal=True,
        decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8,
    ).eval()
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=SAMPLE_RATE, mel_hop_length=160, is_causal=True, mel_bins=8,
    ).eval()
    vocoder = LTX2Vocoder(  # 5 * 4 * 4 * 2 = 160 samples per mel frame, the audio VAE's hop length
        in_channels=2 * 8, hidden_channels=64, out_channels=2, upsample_kernel_sizes=[10, 8, 8, 4],
        upsample_factors=[5, 4, 4, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=SAMPLE_RATE,
    ).eval()
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                     base_image_seq_len=1024, max_image_seq_len=4096,
                                                     shift_terminal=0.1),
        "vae": vae,
        "audio_vae": audio_vae,
        "text_encoder": tiny_gemma3(len(tokenizer)),
        "tokenizer": tokenizer,
        "connectors": connectors,
        "transformer": transformer,
        "vocoder": vocoder,
    }


def build_ltx2_t2v():
    """A tiny ``LTX2Pipeline``."""
    from diffusers import LTX2Pipeline

    return LTX2Pipeline(**tiny_components())


def build_ltx2_i2v():
    """A tiny ``LTX2ImageToVideoPipeline`` (the same components; the first frame comes from the image)."""
    from diffusers import LTX2ImageToVideoPipeline

    return LTX2ImageToVideoPipeline(**tiny_components())


BUILDERS = {"ltx2-t2v": build_ltx2_t2v, "ltx2-i2v": build_ltx2_i2v}

"""LTX-2 (``LTX2Pipeline``, ``LTX2ImageToVideoPipeline``): text and image to video, with its sound.

One transformer denoises the video latents and the audio latents together; the video VAE decodes the
frames and the audio VAE plus the vocoder the sound, which the clip's mp4 carries as an AAC track
(``decode_audio``). Its rules: ``8n + 1`` frames (the VAE compresses time 8x), width and height multiples of
32, 24 fps. The settings follow the model card and diffusers' LTX-2 page: 40 steps at guidance 4.0 for the
base model; the distilled LoRA (``ltx-2-19b-distilled-lora-384``) makes 8 steps at guidance 1.0 on the
distilled sigma schedule, and changes the output like Wan's Turbo. The call keeps LTX-2.0's own recipe
(classifier-free guidance only: no STG, no modality guidance, no cross-timestep), which is what the
published ``Lightricks/LTX-2`` weights were made for.
"""

from __future__ import annotations

import sys

from . import base
from .ltx2_lora import check as lora_check, experts as lora_experts, renamed as lora_rename  # noqa: F401 (LoRA rules)
from .spec import ModelSpec, VideoPreset

NAME = "ltx2"
DEFAULTS: dict[str, str] = {}

NEGATIVE_PROMPT = ("shaky, glitchy, low quality, worst quality, deformed, distorted, disfigured, motion smear, "
                   "motion artifacts, fused fingers, bad anatomy, weird hand, ugly, transition, static.")
TEXT_TOKENS = 1024  # Gemma 3 prompt length LTX2Pipeline uses
USES_FLOW_SHIFT = False  # its scheduler shifts by the sequence length (dynamic shifting)
SIZE_MULTIPLE = 32
TEMPORAL = 8  # the VAE compresses 8 frames into one latent frame: clips are 8n + 1 frames
MIN_FRAMES = 9
FP32_COMPONENTS: tuple[str, ...] = ()  # diffusers' examples run every component in bf16
ATTENTION = "dispatcher"
BATCHED_GUIDANCE = False  # its pipeline already runs both guidance passes in one batch
STEP_CACHE = False
CONTEXT_PARALLEL = False
PREVIEW_RGB = None
MASKLESS_ATTENTION = ("flash", "flash3", "sage")  # kernels that take no attention mask (diffusers raises)

IMAGE_CRF = 33  # LTX-2.0 was trained on first frames compressed with H.264 at this CRF
# The distilled model's sigma schedule (diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES, from Lightricks'
# ltx-pipelines constants), used when a distilled entry runs its 8 steps.
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
# LTX-2.0's call: classifier-free guidance only (diffusers' defaults follow LTX-2.3: STG, modality guidance).
_CALL = {"stg_scale": 0.0, "audio_stg_scale": 0.0, "spatio_temporal_guidance_blocks": None, "modality_scale": 1.0,
         "audio_modality_scale": 1.0, "guidance_rescale": 0.0, "audio_guidance_rescale": 0.0,
         "use_cross_timestep": False}

_PRESETS = (
    VideoPreset("Preview", "480p", 49, 20, 4.0, 1.0),
    VideoPreset("Standard", "480p", 121, 40, 4.0, 1.0),
    VideoPreset("High quality", "720p", 121, 40, 4.0, 1.0),
)
_DISTILLED = VideoPreset("Distilled", "480p", 121, len(DISTILLED_SIGMAS), 1.0, 1.0, changes_output=True)
_LORA = {"lora_repo_id": "Lightricks/LTX-2", "lora_weight_name": "ltx-2-19b-distilled-lora-384.safetensors"}
_COMMON = dict(repo_id="Lightricks/LTX-2", resolutions=("480p", "720p"), fps=24, max_frames=257)
_NOTES = "Makes its sound too (AAC in the mp4). 8n+1 frames, sizes multiples of 32, 24 fps."
_DISTILLED_NOTES = "Distilled LoRA: 8 steps at guidance 1.0. Output differs from the base model. " + _NOTES

SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(id="ltx2-t2v", task="t2v", title="LTX-2 19B (video + audio)", pipeline_class="LTX2Pipeline",
              vram_gb=70.0, presets=_PRESETS, demo_kind="ltx2-t2v", notes=_NOTES, **_COMMON),
    ModelSpec(id="ltx2-t2v-distilled", task="t2v", title="LTX-2 19B + distilled LoRA (8 steps, video + audio)",
              pipeline_class="LTX2Pipeline", vram_gb=71.0, presets=(_DISTILLED,) + _PRESETS,
              default_preset="Distilled", demo_kind="ltx2-t2v", notes=_DISTILLED_NOTES, **_LORA, **_COMMON),
    ModelSpec(id="ltx2-i2v", task="i2v", title="LTX-2 19B (video + audio)", pipeline_class="LTX2ImageToVideoPipeline",
              vram_gb=70.0, presets=_PRESETS, demo_kind="ltx2-i2v", notes=_NOTES, **_COMMON),
    ModelSpec(id="ltx2-i2v-distilled", task="i2v", title="LTX-2 19B + distilled LoRA (8 steps, video + audio)",
              pipeline_class="LTX2ImageToVideoPipeline", vram_gb=71.0, presets=(_DISTILLED,) + _PRESETS,
              default_preset="Distilled", demo_kind="ltx2-i2v", notes=_DISTILLED_NOTES, **_LORA, **_COMMON),
)
_DISTILLED_IDS = frozenset(spec.id for spec in SPECS if spec.lora_repo_id)


# --- demo builds ---------------------------------------------------------------------------------------
# Every real component class at a few thousand parameters, built locally (no hub access). The sizes follow
# diffusers' own LTX-2 fast tests, with three changes: the text encoder is a Gemma 3 built here (the tests
# download one); the video VAE has the real 32x spatial and 8x temporal compression, so the demo's frame sizes
# stay a few hundred tokens; and the vocoder upsamples 160x, the audio VAE's hop length, so the clip's sound
# lasts as long as its frames. A 17-frame 416 x 224 clip takes well under a second on a CPU.

DEMO_TEXT_WIDTH = 32  # the tiny Gemma's hidden size; the connectors and the transformer read it
DEMO_TEXT_LAYERS = 2
DEMO_SAMPLE_RATE = 16000


def tiny_gemma3(vocab_size: int):
    """A tiny ``Gemma3ForConditionalGeneration`` (the real text encoder is Gemma 3 12B)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=DEMO_TEXT_WIDTH, intermediate_size=32,
                            num_hidden_layers=DEMO_TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
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
        caption_channels=DEMO_TEXT_WIDTH, rope_double_precision=False, rope_type="split",
    ).eval()
    connectors = LTX2TextConnectors(
        caption_channels=DEMO_TEXT_WIDTH, text_proj_in_factor=DEMO_TEXT_LAYERS + 1, video_connector_num_attention_heads=4,
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
        mid_block_add_attention=False, sample_rate=DEMO_SAMPLE_RATE, mel_hop_length=160, is_causal=True, mel_bins=8,
    ).eval()
    vocoder = LTX2Vocoder(  # 5 * 4 * 4 * 2 = 160 samples per mel frame, the audio VAE's hop length
        in_channels=2 * 8, hidden_channels=64, out_channels=2, upsample_kernel_sizes=[10, 8, 8, 4],
        upsample_factors=[5, 4, 4, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=DEMO_SAMPLE_RATE,
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


DEMO_BUILDERS = {"ltx2-t2v": build_ltx2_t2v, "ltx2-i2v": build_ltx2_i2v}


def load(spec: ModelSpec, settings, device: str, dtype: str):
    """``load_video_pipeline``, without fused q/k/v projections: LTX-2's attention (its audio-video cross
    attention has keys narrower than its queries) neither fuses nor would use fused weights; and with an
    attention kernel that takes masks (cuDNN or SDPA) where flash / sage was chosen."""
    import dataclasses

    from ..device.loading import load_video_pipeline

    model = load_video_pipeline(spec, dataclasses.replace(settings, fuse_qkv=False), device, dtype,
                                family=sys.modules[__name__])
    if model.attention in MASKLESS_ATTENTION:  # LTX-2 masks its prompt's padding; these kernels take no mask
        from ..device.attention import apply_backend, reset_backend

        reset_backend(model.pipe)
        model.attention = apply_backend(model.pipe, "cudnn", device)  # SDPA where cuDNN attention is not usable
    return model


# --- requests -----------------------------------------------------------------------------------------


def fit_frames(spec: ModelSpec, wanted: int) -> tuple[int, str | None]:
    """The nearest ``8n + 1`` frame count, not above the spec's maximum, with a note when it changed."""
    frames, note = base.snap_frames(spec, max(int(wanted), 1), TEMPORAL, "LTX-2")
    if frames < MIN_FRAMES:
        frames = MIN_FRAMES
        note = f"LTX-2 makes {TEMPORAL}n+1 frames, at least {MIN_FRAMES}: {wanted} became {frames}."
    return frames, note


def check_size(width: int, height: int) -> None:
    """Width and height must be multiples of 32 (the VAE compresses 32x): a ``ValueError`` naming them if not."""
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE or width <= 0 or height <= 0:
        raise ValueError(f"LTX-2 needs a width and height that are multiples of {SIZE_MULTIPLE}, "
                         f"not {width} x {height}.")


def call_kwargs(request) -> dict:
    """The pipeline call's LTX-2 arguments: its frame rate (the positions and the sound's length follow it),
    LTX-2.0's guidance recipe, the distilled sigmas for a distilled entry's 8 steps, and (image to video) no
    re-compression of the image by the pipeline."""
    kwargs = {"frame_rate": float(request.fps), **_CALL}
    if getattr(request, "image", None):  # the app re-compresses the image itself (``recompress``): no PyAV needed
        kwargs["image_crf"] = 0
    if request.model in _DISTILLED_IDS and int(request.steps) == len(DISTILLED_SIGMAS):
        kwargs["sigmas"] = list(DISTILLED_SIGMAS)
    return kwargs


# --- running a job --------------------------------------------------------------------------------------


def encode_prompt(pipe, request, guidance: bool):
    """``((embeds, mask), (negative embeds, mask) or None)`` from Gemma 3, in the transformer's dtype."""
    import torch

    with torch.no_grad():
        positive, mask, negative, negative_mask = pipe.encode_prompt(
            prompt=request.prompt, negative_prompt=request.negative_prompt, do_classifier_free_guidance=guidance,
            num_videos_per_prompt=1, max_sequence_length=TEXT_TOKENS, device=pipe._execution_device)
    dtype = pipe.transformer.dtype
    return (positive.to(dtype), mask), ((negative.to(dtype), negative_mask) if guidance else None)


def denoise(pipe, request, embeds, seed: int, on_latents, job, inputs: dict):
    """The pipeline's loop to ``(video latents, audio latents)``, both denormalised (what ``decode`` and
    ``decode_audio`` take); ``on_latents`` gets the video latents (C, F, h, w) each step."""
    import torch

    check_size(request.width, request.height)
    (positive, mask), negative = embeds
    latent_shape = ((request.frames - 1) // pipe.vae_temporal_compression_ratio + 1,
                    request.height // pipe.vae_spatial_compression_ratio,
                    request.width // pipe.vae_spatial_compression_ratio)

    def on_step(pipeline, step, timestep, tensors):
        packed = tensors["latents"]
        on_latents(pipeline._unpack_latents(packed, *latent_shape, pipeline.transformer_spatial_patch_size,
                                            pipeline.transformer_temporal_patch_size)[0])
        if job.cancelled:
            pipeline._interrupt = True  # diffusers' contract: the loop stops at the next step
        return {}

    image = {}
    if inputs.get("image") is not None:  # at the training CRF, as the pipeline's own (PyAV) re-compression
        image = {"image": recompress(inputs["image"], IMAGE_CRF), "image_crf": 0}
    kwargs = {**call_kwargs(request), **image}
    video, audio = pipe(
        **kwargs,
        prompt_embeds=positive,
        prompt_attention_mask=mask,
        negative_prompt_embeds=negative[0] if negative is not None else None,
        negative_prompt_attention_mask=negative[1] if negative is not None else None,
        height=request.height,
        width=request.width,
        num_frames=request.frames,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        audio_guidance_scale=None,  # the same as the video's
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="latent",
        return_dict=False,
        callback_on_step_end=on_step,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    return video, audio


def decode(pipe, latents, tiled: bool):
    """Video latents -> uint8 frames (F, H, W, 3), as ``LTX2Pipeline`` decodes them (tiled: the VAE's tiling)."""
    import numpy as np
    import torch

    video_latents = latents[0] if isinstance(latents, tuple) else latents
    vae = pipe.vae
    was_tiled = bool(getattr(vae, "use_tiling", False))
    if tiled and not was_tiled:
        vae.enable_tiling()
    device = pipe._execution_device
    # a VAE with timestep conditioning decodes at the pipeline's default decode timestep (0, no added noise)
    timestep = torch.zeros(1, device=device, dtype=vae.dtype) if vae.config.timestep_conditioning else None
    try:
        with torch.no_grad():
            video = vae.decode(video_latents.to(device, vae.dtype), timestep, return_dict=False)[0]
    finally:
        if tiled and not was_tiled:
            vae.disable_tiling()
    frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def decode_audio(pipe, latents):
    """Audio latents -> ``(float32 samples (channels, n) in [-1, 1], sample rate)``: audio VAE to a mel
    spectrogram, then the vocoder, as ``LTX2Pipeline`` does."""
    import numpy as np
    import torch

    audio_latents = latents[1]
    with torch.no_grad():
        mel = pipe.audio_vae.decode(audio_latents.to(pipe._execution_device, pipe.audio_vae.dtype), return_dict=False)[0]
        waveform = pipe.vocoder(mel.to(pipe.vocoder.dtype))
    samples = waveform[0].float().cpu().numpy()
    return np.clip(samples, -1.0, 1.0).astype(np.float32), int(pipe.vocoder.config.output_sampling_rate)


def recompress(image, crf: int):
    """The input image through H.264 at ``crf`` and back (LTX-2 was trained on such frames; the pipeline's own
    re-compression needs PyAV, this uses the app's ffmpeg)."""
    import subprocess

    import numpy as np
    from PIL import Image

    from ..media.ffmpeg import ffmpeg_exe

    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    pixels = np.ascontiguousarray(pixels[:height, :width])
    encode = [ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-i", "-",
              "-c:v", "libx264", "-preset", "veryfast", "-crf", str(int(crf)), "-pix_fmt", "yuv420p", "-f", "h264", "-"]
    h264 = subprocess.run(encode, input=pixels.tobytes(), capture_output=True, check=True).stdout
    decode_cmd = [ffmpeg_exe(), "-v", "error", "-f", "h264", "-i", "-", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(decode_cmd, input=h264, capture_output=True, check=True).stdout
    return Image.fromarray(np.frombuffer(raw[: width * height * 3], np.uint8).reshape(height, width, 3))


# --- device side ----------------------------------------------------------------------------------------

# Per token and batch item, the widest live tensors of one block in the compute dtype: q, k, v, the
# attention output and the cross-attention's (video and audio streams), plus the FFN's hidden layer.
BLOCK_LIVE_WIDTHS = 8
VAE_LIVE_MAPS = 12  # fp32/bf16 feature maps of 128 channels at the output size, whole decode
VAE_CHANNELS = 128
VAE_TILE_PIXELS = 512 * 512  # diffusers' LTX-2 VAE tiles (tile_sample_min_height/width = 512)
AUDIO_LATENTS_PER_SECOND = 25  # 16 kHz / hop 160 / 4x temporal compression


def tokens(config, frames: int, height: int, width: int, fps: float = 24.0) -> tuple[int, int]:
    """(video tokens, audio tokens) of the transformer for a clip."""
    spatial, temporal = config.vae_scale_factors[1], config.vae_scale_factors[0]
    video = ((frames - 1) // temporal + 1) * (height // spatial) * (width // spatial)
    video //= config.patch_size_t * config.patch_size * config.patch_size
    audio = round(frames / fps * config.audio_sampling_rate / config.audio_hop_length / config.audio_scale_factor)
    return video, audio


def activation_bytes(pipe, shape, batched_guidance: bool) -> int:
    """Peak transient memory of one denoising step (estimate): both guidance passes run as one batch."""
    config = pipe.transformer.config
    video, audio = tokens(config, shape.frames, shape.height, shape.width)
    batch = 2 if shape.guidance else 1
    width = config.num_attention_heads * config.attention_head_dim
    audio_width = config.audio_num_attention_heads * config.audio_attention_head_dim
    element = getattr(pipe.transformer.dtype, "itemsize", 2)
    return batch * element * (video * BLOCK_LIVE_WIDTHS * width * 3 // 2 + audio * BLOCK_LIVE_WIDTHS * audio_width * 3 // 2)


def decode_bytes(pipe, shape, tiled: bool) -> int:
    """Peak memory of the video VAE decode of one clip, whole or tiled (estimate)."""
    pixels = shape.height * shape.width
    if tiled:
        pixels = min(pixels, VAE_TILE_PIXELS)
    frames = min(shape.frames, 16) if tiled else shape.frames
    return 2 * pixels * frames * VAE_CHANNELS * VAE_LIVE_MAPS // 8


# --- measuring ----------------------------------------------------------------------------------------


def forward_flops_closed_form(config, video: int, audio: int, text: int) -> int:
    """FLOPs of one transformer forward (2 per multiply-add), blocks only: per block, video and audio self-attention,
    cross-attention to the text, the audio-to-video and video-to-audio cross-attention, and the FFNs."""
    d = config.num_attention_heads * config.attention_head_dim
    a = config.audio_num_attention_heads * config.audio_attention_head_dim
    per_block = (
        8 * video * d * d + 4 * video * video * d  # video self-attention
        + 4 * video * d * d + 4 * text * d * d + 4 * video * text * d  # video <- text
        + 8 * audio * a * a + 4 * audio * audio * a  # audio self-attention
        + 4 * audio * a * a + 4 * text * a * a + 4 * audio * text * a  # audio <- text
        + 2 * (2 * video * d * a + 2 * audio * a * a + 2 * audio * a * a + 2 * video * a * d + 2 * video * audio * a)
        + 16 * video * d * d + 16 * audio * a * a  # FFNs (4x wide)
    )
    return config.num_layers * per_block


def forward_flops(transformer, frames: int, height: int, width: int, text_tokens: int = TEXT_TOKENS) -> float:
    """One transformer forward (video and audio streams) at a clip's shapes, counted on the ``meta`` device."""
    import torch

    config = transformer.config
    video, audio = tokens(config, frames, height, width)
    temporal, spatial = config.vae_scale_factors[0], config.vae_scale_factors[1]
    dtype = transformer.dtype

    def empty(*shape, kind=dtype):
        return torch.empty(*shape, device="meta", dtype=kind)

    return base.count_forward_flops(
        transformer, hidden_states=empty(1, video, config.in_channels),
        audio_hidden_states=empty(1, audio, config.audio_in_channels),
        encoder_hidden_states=empty(1, text_tokens, config.caption_channels),
        audio_encoder_hidden_states=empty(1, text_tokens, config.caption_channels),
        timestep=empty(1, kind=torch.float32), encoder_attention_mask=empty(1, text_tokens, kind=torch.float32),
        audio_encoder_attention_mask=empty(1, text_tokens, kind=torch.float32), num_frames=(frames - 1) // temporal + 1,
        height=height // spatial, width=width // spatial, fps=24.0, audio_num_frames=audio, return_dict=False)


def denoise_flops(model_id: str, frames: int, height: int, width: int, steps: int, guidance: bool) -> dict:
    """FLOPs of the denoising steps at the real size (``assets/model_configs/<id>.json``'s transformer)."""
    per_forward = forward_flops(base.meta_component(model_id, "transformer"), frames, height, width)
    passes = 2 if guidance else 1
    return {"per_forward": per_forward, "forwards_per_step": passes, "steps": steps, "total": per_forward * passes * steps}


# --- creators' LoRAs --------------------------------------------------------------------------------------

LORA_SUPPORT = ""  # it takes them: every layout of ltx2_lora, through diffusers' LTX2LoraLoaderMixin
LORA_COMPONENTS = ("transformer", "connectors")  # the text connectors run in the call: cached prompts stay right

"""Wan 2.1 / 2.2 (``WanPipeline``, ``WanImageToVideoPipeline``): text and image to video.

The family interface (``families/base.py``): catalogue entries and presets, the job's stages (prompt
encoding, the denoising call with diffusers' step callback and interrupt flag, the VAE decode exactly as
``WanPipeline`` does it), 4n+1 frames, memory and FLOP estimates, the latent preview and the demo builds
(``families/demo.py``, ``families/demo_i2v.py``).
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from . import base
from .spec import ModelSpec, VideoPreset
from .wan_lora import check as lora_check, experts as lora_experts, renamed as lora_rename  # noqa: F401 (LoRA rules)

NAME = "wan"
DEFAULTS = {"t2v": "wan2.1-t2v-1.3b"}
# Wan's own negative prompt (from its reference code), which the model was tuned with.
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
TEXT_TOKENS = 512  # the prompt length WanPipeline.__call__ and Wan's reference code use
USES_FLOW_SHIFT = True
SIZE_MULTIPLE = 16
MIN_FRAMES = 5
FP32_COMPONENTS = ("vae",)  # as Wan's authors recommend
ATTENTION = "dispatcher"
BATCHED_GUIDANCE = True
STEP_CACHE = True
CONTEXT_PARALLEL = True

# Wan's reference settings: guidance 5.0 and flow shift 3.0 at 480p, 5.0 at 720p; 16 fps; 81 frames.
_WAN_480 = (
    VideoPreset("Preview", "480p", 33, 20, 5.0, 3.0),
    VideoPreset("Standard", "480p", 81, 30, 5.0, 3.0),
    VideoPreset("High quality", "480p", 81, 50, 6.0, 8.0),
)
_WAN_720 = (
    VideoPreset("Preview", "480p", 33, 20, 5.0, 3.0),
    VideoPreset("Standard", "480p", 81, 40, 5.0, 3.0),
    VideoPreset("High quality", "720p", 81, 50, 5.0, 5.0),
)
_TURBO = VideoPreset("Turbo", "480p", 81, 4, 1.0, 5.0, changes_output=True)

# Wan 2.1 I2V's reference settings: 40 steps, guidance 5.0, shift 3.0 at 480p and 5.0 at 720p.
_WAN_I2V_480 = (
    VideoPreset("Preview", "480p", 33, 20, 5.0, 3.0),
    VideoPreset("Standard", "480p", 81, 40, 5.0, 3.0),
    VideoPreset("High quality", "480p", 81, 50, 5.0, 3.0),
)
_WAN_I2V_720 = (
    VideoPreset("Preview", "480p", 33, 20, 5.0, 3.0),
    VideoPreset("Standard", "720p", 81, 40, 5.0, 5.0),
    VideoPreset("High quality", "720p", 81, 50, 5.0, 5.0),
)
_I2V_TURBO = VideoPreset("Turbo", "480p", 81, 4, 1.0, 5.0, changes_output=True)
# Wan 2.1 I2V: the CLIP image encoder stays in fp32 with the VAE, as in diffusers' example for these repos.
_WAN21_I2V_EXTRA = {"size_multiple": 16, "fp32_components": ("vae", "image_encoder")}


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="wan2.1-t2v-1.3b",
        task="t2v",
        title="Wan 2.1 T2V 1.3B",
        repo_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        pipeline_class="WanPipeline",
        vram_gb=17.0,
        presets=_WAN_480,
        resolutions=("480p",),
        demo_kind="wan-t2v",
        notes="Trained at 480p; 720p works but is not what it was made for.",
    ),
    ModelSpec(
        id="wan2.1-t2v-14b",
        task="t2v",
        title="Wan 2.1 T2V 14B",
        repo_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
        pipeline_class="WanPipeline",
        vram_gb=42.0,
        presets=_WAN_720,
        resolutions=("480p", "720p"),
        demo_kind="wan-t2v",
    ),
    ModelSpec(
        id="wan2.1-t2v-14b-turbo",
        task="t2v",
        title="Wan 2.1 T2V 14B + lightx2v 4-step LoRA (Turbo)",
        repo_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
        pipeline_class="WanPipeline",
        vram_gb=43.0,
        presets=(_TURBO,) + _WAN_720,
        default_preset="Turbo",
        resolutions=("480p", "720p"),
        lora_repo_id="lightx2v/Wan2.1-Distill-Loras",
        lora_weight_name="wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors",
        demo_kind="wan-t2v",
        notes="Step- and guidance-distilled: 4 steps at guidance 1.0. Output differs from the base model.",
    ),
    ModelSpec(
        id="wan2.2-ti2v-5b",
        task="t2v",
        title="Wan 2.2 TI2V 5B",
        repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        pipeline_class="WanPipeline",
        vram_gb=24.0,
        presets=(
            VideoPreset("Preview", "720p", 49, 20, 5.0, 5.0),
            VideoPreset("Standard", "720p", 121, 40, 5.0, 5.0),
            VideoPreset("High quality", "720p", 121, 50, 5.0, 5.0),
    ),
        resolutions=("720p",),
        fps=24,
        max_frames=241,
        demo_kind="wan-t2v",
        notes="Its VAE compresses 16x spatially: sizes are multiples of 32. 24 fps.",
    ),
    ModelSpec(
        id="wan2.2-t2v-a14b",
        task="t2v",
        title="Wan 2.2 T2V A14B (two experts)",
        repo_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        pipeline_class="WanPipeline",
        vram_gb=72.0,
        presets=(
            VideoPreset("Preview", "480p", 33, 20, 4.0, 12.0),
            VideoPreset("Standard", "480p", 81, 40, 4.0, 12.0),
            VideoPreset("High quality", "720p", 81, 40, 4.0, 12.0),
    ),
        resolutions=("480p", "720p"),
        demo_kind="wan-t2v-moe",
        notes="High-noise and low-noise experts; both are kept resident.",
    ),
    ModelSpec(
        id="wan2.1-i2v-14b-480p",
        task="i2v",
        title="Wan 2.1 I2V 14B 480p",
        repo_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        pipeline_class="WanImageToVideoPipeline",
        vram_gb=45.0,
        presets=_WAN_I2V_480,
        resolutions=("480p",),
        demo_kind="wan-i2v",
        extra={**_WAN21_I2V_EXTRA},
    ),
    ModelSpec(
        id="wan2.1-i2v-14b-720p",
        task="i2v",
        title="Wan 2.1 I2V 14B 720p",
        repo_id="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
        pipeline_class="WanImageToVideoPipeline",
        vram_gb=45.0,
        presets=_WAN_I2V_720,
        resolutions=("480p", "720p"),
        demo_kind="wan-i2v",
        extra={**_WAN21_I2V_EXTRA},
    ),
    ModelSpec(
        id="wan2.1-i2v-14b-480p-turbo",
        task="i2v",
        title="Wan 2.1 I2V 14B 480p + lightx2v 4-step LoRA (Turbo)",
        repo_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        pipeline_class="WanImageToVideoPipeline",
        vram_gb=46.0,
        presets=(_I2V_TURBO,) + _WAN_I2V_480,
        default_preset="Turbo",
        resolutions=("480p",),
        lora_repo_id="lightx2v/Wan2.1-Distill-Loras",
        lora_weight_name="wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors",
        demo_kind="wan-i2v",
        notes="Step- and guidance-distilled: 4 steps at guidance 1.0. Output differs from the base model.",
        extra={**_WAN21_I2V_EXTRA},
    ),
    ModelSpec(
        id="wan2.2-ti2v-5b-i2v",
        task="i2v",
        title="Wan 2.2 TI2V 5B",
        repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        pipeline_class="WanImageToVideoPipeline",
        vram_gb=24.0,
        presets=(
            VideoPreset("Preview", "720p", 49, 20, 5.0, 5.0),
            VideoPreset("Standard", "720p", 121, 40, 5.0, 5.0),
            VideoPreset("High quality", "720p", 121, 50, 5.0, 5.0),
    ),
        resolutions=("720p",),
        fps=24,
        max_frames=241,
        demo_kind="wan-ti2v",
        notes="The same weights as the text-to-video entry; its VAE compresses 16x: sizes are multiples of 32. 24 fps.",
        extra={"size_multiple": 32},
    ),
    ModelSpec(
        id="wan2.2-i2v-a14b",
        task="i2v",
        title="Wan 2.2 I2V A14B (two experts)",
        repo_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        pipeline_class="WanImageToVideoPipeline",
        vram_gb=72.0,
        presets=(
            VideoPreset("Preview", "480p", 33, 20, 3.5, 5.0),
            VideoPreset("Standard", "480p", 81, 40, 3.5, 5.0),
            VideoPreset("High quality", "720p", 81, 40, 3.5, 5.0),
    ),
        resolutions=("480p", "720p"),
        demo_kind="wan-i2v-moe",
        notes="High-noise and low-noise experts, both kept resident. Can end on a given last frame.",
        extra={"size_multiple": 16, "last_frame": True},
    ),
)


# --- demo builds ---------------------------------------------------------------------------------------


def _demo(kind: str):
    def build():
        from . import demo, demo_i2v

        return {"wan-t2v": lambda: demo.build_wan_t2v(False), "wan-t2v-moe": lambda: demo.build_wan_t2v(True),
                "wan-i2v": lambda: demo_i2v.build_wan_i2v("2.1"), "wan-i2v-moe": lambda: demo_i2v.build_wan_i2v("2.2-moe"),
                "wan-ti2v": lambda: demo_i2v.build_wan_i2v("2.2-ti2v")}[kind]()

    return build


DEMO_BUILDERS = {kind: _demo(kind) for kind in ("wan-t2v", "wan-t2v-moe", "wan-i2v", "wan-i2v-moe", "wan-ti2v")}


def load(spec: ModelSpec, settings, device: str, dtype: str):
    from ..device.loading import load_video_pipeline

    return load_video_pipeline(spec, settings, device, dtype, family=sys.modules[__name__])


# --- creators' LoRAs (the key rules: families/wan_lora.py) ----------------------------------------------

LORA_SUPPORT = ""  # it takes them: every layout of wan_lora, through diffusers' WanLoraLoaderMixin
LORA_COMPONENTS = ("transformer", "transformer_2")  # what its loader changes (never the text encoder)
# lora_check, lora_rename, lora_experts: imported from wan_lora at the top


# --- requests ------------------------------------------------------------------------------------------


def fit_frames(spec: ModelSpec, wanted: int) -> tuple[int, str | None]:
    return base.snap_frames(spec, wanted, 4, "Wan")


def call_kwargs(request) -> dict:
    return {}


# --- a job's stages ------------------------------------------------------------------------------------


def set_flow_shift(pipe, shift: float) -> None:
    """The scheduler with ``shift`` (a fresh one only when it changes)."""
    config = pipe.scheduler.config
    if "flow_shift" in config and config.get("flow_shift") != shift:
        pipe.scheduler = type(pipe.scheduler).from_config(config, flow_shift=shift)
    elif "shift" in config and "flow_shift" not in config and config.get("shift") != shift:
        pipe.scheduler = type(pipe.scheduler).from_config(config, shift=shift)


def encode_prompt(pipe, request, guidance: bool) -> tuple:
    import torch

    with torch.no_grad():
        positive, negative = pipe.encode_prompt(
            prompt=request.prompt, negative_prompt=request.negative_prompt, do_classifier_free_guidance=guidance,
            num_videos_per_prompt=1, max_sequence_length=TEXT_TOKENS, device=pipe._execution_device)
    # in the transformer's dtype already, so the pipeline passes these very tensors on (batched guidance
    # recognises the negative one by identity)
    dtype = (pipe.transformer or pipe.transformer_2).dtype
    return positive.to(dtype), negative.to(dtype) if negative is not None else None


def denoise(pipe, request, embeds, seed: int, on_latents, job, inputs: dict):
    """``pipe(...)`` to latents, with diffusers' step callback: previews, and the interrupt flag on cancel."""
    import torch

    positive, negative = embeds
    use_guidance = request.guidance > 1.0
    if request.shift is not None:
        set_flow_shift(pipe, request.shift)

    def on_step(pipeline, step, timestep, tensors):
        on_latents(tensors["latents"][0])
        if job.cancelled:
            pipeline._interrupt = True  # diffusers' contract: the loop stops at the next step
        return {}

    return pipe(
        **inputs, prompt_embeds=positive, negative_prompt_embeds=negative if use_guidance else None,
        height=request.height, width=request.width, num_frames=request.frames, num_inference_steps=request.steps,
        guidance_scale=request.guidance, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
        callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"],
    ).frames


@contextlib.contextmanager
def vae_tiles(pipe, tiled: bool):
    """The VAE decodes in tiles while inside when ``tiled`` (and it can); back as it was afterwards."""
    vae = pipe.vae
    before = bool(getattr(vae, "use_tiling", False))
    if tiled and not before and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    try:
        yield tiled or before
    finally:
        if tiled and not before and hasattr(vae, "disable_tiling"):
            vae.disable_tiling()


def decode_latents(pipe, latents):
    """Latents -> uint8 frames (F, H, W, 3), exactly as ``WanPipeline`` decodes them."""
    import torch

    vae = pipe.vae
    latents = latents.to(vae.device if not hasattr(pipe, "_execution_device") else pipe._execution_device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    with torch.no_grad():
        video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
    frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def decode(pipe, latents, tiled: bool):
    with vae_tiles(pipe, tiled):
        return decode_latents(pipe, latents)


# --- memory, FLOPs, preview ----------------------------------------------------------------------------

# Estimates that only choose a starting memory level (the out-of-memory ladder catches one that was too low).
# Transformer, per token, per batch item: the widest live tensors of one block (q, k, v, attention output,
# the FFN's hidden layer) in the compute dtype.
BLOCK_LIVE_WIDTHS = 6  # x hidden size, plus the FFN width
# VAE decode, whole (4 output frames per latent frame, with a causal cache): about this many fp32 feature
# maps of 96 channels at the output size live at once.
VAE_LIVE_MAPS = 10
VAE_CHANNELS = 96
VAE_TILE_PIXELS = 256 * 256  # diffusers' Wan VAE tile (tile_sample_min_height/width = 256)


def _transformer(pipe):
    return getattr(pipe, "transformer", None) or getattr(pipe, "transformer_2", None)


def tokens(config, shape, spatial: int = 8, temporal: int = 4) -> int:
    """Sequence length of the transformer for a clip: latent frames x latent pixels / patch. ``spatial``
    and ``temporal`` are the VAE's compression (8 and 4; Wan 2.2 TI2V 5B's VAE: 16 and 4)."""
    p_t, p_h, p_w = config.patch_size
    latent_frames = (shape.frames - 1) // temporal + 1
    return (latent_frames // p_t) * (shape.height // (spatial * p_h)) * (shape.width // (spatial * p_w))


def activation_bytes(pipe, shape, batched_guidance: bool) -> int:
    transformer = _transformer(pipe)
    config = transformer.config
    batch = 2 if shape.guidance and batched_guidance else 1
    hidden = config.num_attention_heads * config.attention_head_dim
    spatial = int(getattr(pipe, "vae_scale_factor_spatial", 8) or 8)
    temporal = int(getattr(pipe, "vae_scale_factor_temporal", 4) or 4)
    item = getattr(getattr(transformer, "dtype", None), "itemsize", 2)
    return batch * tokens(config, shape, spatial, temporal) * (BLOCK_LIVE_WIDTHS * hidden + config.ffn_dim) * item


def decode_bytes(pipe, shape, tiled: bool) -> int:
    pixels = shape.height * shape.width
    if tiled:
        pixels = min(pixels, VAE_TILE_PIXELS)
    return 4 * pixels * VAE_CHANNELS * 4 * VAE_LIVE_MAPS


def forward_flops_closed_form(config, tokens: int, text_tokens: int = 512, image_tokens: int = 0) -> float:
    """One transformer forward, blocks only: 8·N·d² (q, k, v, out) + 4·N²·d (self-attention) + 4·N·d² +
    4·L·d² + 4·N·L·d (cross-attention to L text tokens) + 4·N·d·f (FFN), with N tokens, width d, FFN width f."""
    d = config.num_attention_heads * config.attention_head_dim
    f = config.ffn_dim
    n, context = tokens, text_tokens + image_tokens
    per_block = 8 * n * d * d + 4 * n * n * d + 4 * n * d * d + 4 * context * d * d + 4 * n * context * d + 4 * n * d * f
    return float(per_block * config.num_layers)


def forward_flops(transformer, frames: int, height: int, width: int, text_tokens: int = TEXT_TOKENS,
                  spatial: int = 8, temporal: int = 4) -> float:
    """One transformer forward at a clip's shapes, counted on the ``meta`` device."""
    import torch

    config = transformer.config
    latent = (1, config.in_channels, (frames - 1) // temporal + 1, height // spatial, width // spatial)
    dtype = transformer.dtype
    kwargs = {}
    if getattr(config, "image_dim", None):
        kwargs["encoder_hidden_states_image"] = torch.empty(1, 257, config.image_dim, device="meta", dtype=dtype)
    return base.count_forward_flops(transformer, torch.empty(latent, device="meta", dtype=dtype),
                                    torch.empty(1, device="meta"),
                                    torch.empty(1, text_tokens, config.text_dim, device="meta", dtype=dtype),
                                    return_dict=False, **kwargs)


def denoise_flops(model_id: str, frames: int, height: int, width: int, steps: int, guidance: bool) -> dict:
    per_forward = forward_flops(base.meta_component(model_id, "transformer"), frames, height, width)
    passes = 2 if guidance else 1
    return {"per_forward": per_forward, "forwards_per_step": passes, "steps": steps, "total": per_forward * passes * steps}


# Wan 2.1 VAE latent (16 channels, normalised space) to RGB, as fitted by the ComfyUI project.
PREVIEW_RGB = (
    np.array([
        [-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747], [0.0372, 0.2344, 0.1420],
        [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665], [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975],
        [-0.0412, 0.0267, -0.1364], [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
        [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950], [0.1984, 0.0913, 0.1861],
    ], dtype=np.float32),
    np.array([-0.1835, -0.0868, -0.3360], dtype=np.float32),
)

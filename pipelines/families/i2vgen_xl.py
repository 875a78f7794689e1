"""I2VGen-XL (``I2VGenXLPipeline``): image to video with a UNet; everything the app knows about it.

Its pipeline has no ``callback_on_step_end`` and no interrupt flag. For each job its scheduler is replaced
by a fresh copy whose ``step`` reports the step (and a preview) and raises ``JobCancelled`` when the job is
cancelled; the resident pipeline gets its own scheduler back afterwards, whatever happened. The scheduler
steps once per denoising step (the UNet runs on a doubled batch with guidance, still once per step), so
the bar counts steps. Its prompt is encoded here (CLIP's penultimate layer, as the pipeline's default
``clip_skip=1`` does): the pipeline's own code for that reaches for ``text_encoder.text_model``, which
transformers 5 no longer has. Family interface: ``families/base.py``.
"""

from __future__ import annotations

import contextlib
import functools
import sys

from . import base
from .spec import ModelSpec, VideoPreset

NAME = "i2vgen"
DEFAULTS = {"i2v": "i2vgen-xl"}
# Its negative prompt from its model card.
NEGATIVE_PROMPT = (
    "Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, disconnected limbs, "
    "Ugly faces, incomplete arms"
)
TEXT_TOKENS = 77
USES_FLOW_SHIFT = False  # DDIM: no flow shift
SIZE_MULTIPLE = 32
MIN_FRAMES = 2
FP32_COMPONENTS = ()  # one VAE and UNet in the same dtype
ATTENTION = "processors"  # the UNet's older attention processors: xformers or SDPA
BATCHED_GUIDANCE = False  # its pipeline batches both guidance passes itself
STEP_CACHE = False  # no transformer blocks to skip
CONTEXT_PARALLEL = False
PREVIEW_RGB = None  # 4 SD-VAE channels: the preview normalises the first three
# Estimates for the memory levels: its published peak (13.8 GB at 512p, 16 frames, guidance) minus ~5 GB
# of fp16 weights, per latent pixel and frame (64 x 64 latents x 16 frames); the SD VAE decoder in fp16.
BYTES_PER_LATENT_PIXEL_FRAME = 140_000
DECODE_BYTES_PER_PIXEL_FRAME = 400

# I2VGen-XL's presets are the ones creators benchmark it by (DDIM: no flow shift, the value is unused).
_I2VGEN_XL = (
    VideoPreset("Quick preview", "512p", 8, 30, 9.0, 0.0),
    VideoPreset("Standard", "512p", 16, 50, 9.0, 0.0),
    VideoPreset("High quality", "768p", 24, 80, 10.0, 0.0),
)

SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="i2vgen-xl",
        task="i2v",
        title="I2VGen-XL",
        repo_id="ali-vilab/i2vgen-xl",
        pipeline_class="I2VGenXLPipeline",
        vram_gb=10.0,
        presets=_I2VGEN_XL,
        resolutions=("512p", "768p"),
        fps=16,
        max_frames=64,
        demo_kind="i2vgen-xl",
        notes="Trained on 16-frame clips; one VAE and UNet in the same dtype (no fp32 VAE).",
        
    ),
)


def build_demo():
    """A tiny ``I2VGenXLPipeline``: CLIP text and image encoders, SD-style VAE (8x), 3D UNet, DDIM."""
    import torch

    from . import demo_i2v
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLPipeline, I2VGenXLUNet
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    tokenizer = demo_i2v.build_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=demo_i2v.CLIP_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=demo_i2v.CLIP_DIM,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_act="gelu",
        )
    ).eval()
    image_encoder = CLIPVisionModelWithProjection(demo_i2v.clip_vision_config()).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.18215,
    ).eval()
    unet = I2VGenXLUNet(
        in_channels=4,
        out_channels=4,
        # attention only at the lower level keeps a CPU demo job at a few seconds
        down_block_types=("DownBlock3D", "CrossAttnDownBlock3D"),
        up_block_types=("CrossAttnUpBlock3D", "UpBlock3D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=demo_i2v.CLIP_DIM,
        attention_head_dim=4,
    ).eval()
    scheduler = DDIMScheduler(
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
        rescale_betas_zero_snr=True,
        prediction_type="v_prediction",
    )
    return I2VGenXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        image_encoder=image_encoder,
        feature_extractor=demo_i2v.clip_image_processor(),
        unet=unet,
        scheduler=scheduler,
    )


DEMO_BUILDERS = {"i2vgen-xl": build_demo}


def load(spec: ModelSpec, settings, device: str, dtype: str):
    from ..device.loading import load_video_pipeline

    return load_video_pipeline(spec, settings, device, dtype, family=sys.modules[__name__])


def fit_frames(spec: ModelSpec, wanted: int) -> tuple[int, str | None]:
    return wanted, None  # any count; trained on 16


def call_kwargs(request) -> dict:
    return {"target_fps": request.fps}


# --- a job's stages ------------------------------------------------------------------------------------


@contextlib.contextmanager
def scheduler_step_hook(pipe, after_step):
    """While inside, ``pipe`` denoises with a fresh copy of its scheduler that calls ``after_step(output)``
    after every ``step``; the pipeline's own scheduler is put back on the way out, even on an exception.
    ``functools.wraps`` keeps ``step``'s signature visible, so the pipeline still passes ``eta`` and
    ``generator`` to it."""
    original = pipe.scheduler
    scheduler = type(original).from_config(original.config)
    inner = scheduler.step

    @functools.wraps(inner)
    def step(*args, **kwargs):
        output = inner(*args, **kwargs)
        after_step(output)
        return output

    scheduler.step = step
    pipe.scheduler = scheduler
    try:
        yield scheduler
    finally:
        pipe.scheduler = original


def _clip_prompt_embeds(pipe, texts: list[str], device):
    """CLIP's penultimate hidden layer through its final layer norm."""
    tokens = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                            return_tensors="pt")
    encoder = pipe.text_encoder
    hidden = encoder(tokens.input_ids.to(device), output_hidden_states=True).hidden_states[-2]
    norm = getattr(encoder, "text_model", encoder).final_layer_norm  # transformers 4 nests it, 5 does not
    return norm(hidden).to(dtype=encoder.dtype, device=device)


def encode_prompt(pipe, request, guidance: bool) -> tuple:
    import torch

    with torch.no_grad():
        device = pipe._execution_device
        positive = _clip_prompt_embeds(pipe, [request.prompt], device)
        negative = _clip_prompt_embeds(pipe, [request.negative_prompt or ""], device) if guidance else None
    return positive, negative


def denoise(pipe, request, embeds, seed: int, on_latents, job, inputs: dict):
    import torch

    from ..studio.jobs import JobCancelled

    positive, negative = embeds
    use_guidance = request.guidance > 1.0

    def after_step(output):
        latents = output.prev_sample if hasattr(output, "prev_sample") else output[0]
        # the loop steps (frames, C, h, w); one video: back to (C, frames, h, w)
        on_latents(latents.reshape(request.frames, *latents.shape[1:]).transpose(0, 1))
        if job.cancelled and job.progress.step < job.progress.total:  # after the last step: keep the clip
            raise JobCancelled()  # no interrupt flag in this pipeline: leave its loop from the step

    generator = torch.Generator("cpu").manual_seed(seed)
    torch.manual_seed(seed)  # its VAE samples the image latents from the global generator
    with scheduler_step_hook(pipe, after_step):
        return pipe(
            image=inputs["image"], prompt_embeds=positive, negative_prompt_embeds=negative if use_guidance else None,
            height=request.height, width=request.width, num_frames=request.frames,
            num_inference_steps=request.steps, guidance_scale=request.guidance, generator=generator,
            output_type="latent", **call_kwargs(request),
        ).frames


def decode(pipe, latents, tiled: bool):
    """Latents -> uint8 frames (F, H, W, 3), as ``I2VGenXLPipeline`` decodes them; tiled: a frame at a time."""
    import numpy as np
    import torch

    frames_count = latents.shape[2]
    latents = latents.to(pipe._execution_device, pipe.vae.dtype)
    with torch.no_grad():
        video = pipe.decode_latents(latents, decode_chunk_size=1 if tiled else frames_count)
    frames = pipe.video_processor.postprocess_video(video=video, output_type="np")[0]
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


# --- memory, FLOPs -------------------------------------------------------------------------------------


def activation_bytes(pipe, shape, batched_guidance: bool) -> int:
    per = BYTES_PER_LATENT_PIXEL_FRAME // (1 if shape.guidance else 2)  # both guidance passes: one batch
    return per * shape.frames * (shape.height // 8) * (shape.width // 8)


def decode_bytes(pipe, shape, tiled: bool) -> int:
    return DECODE_BYTES_PER_PIXEL_FRAME * shape.height * shape.width * (1 if tiled else shape.frames)


def forward_flops(unet, frames: int, height: int, width: int, batch: int = 2) -> float:
    """One UNet forward; ``batch`` 2 with guidance (its pipeline batches both passes)."""
    import torch

    from .base import count_forward_flops

    dtype = unet.dtype
    latent = (batch, unet.config.in_channels, frames, height // 8, width // 8)
    cross = unet.config.cross_attention_dim
    return count_forward_flops(
        unet, torch.empty(latent, device="meta", dtype=dtype), torch.tensor(500, device="meta"),
        fps=torch.empty(batch, device="meta"), image_latents=torch.empty(latent, device="meta", dtype=dtype),
        image_embeddings=torch.empty(batch, 1, cross, device="meta", dtype=dtype),
        encoder_hidden_states=torch.empty(batch, 77, cross, device="meta", dtype=dtype), return_dict=False,
    )


def denoise_flops(model_id: str, frames: int, height: int, width: int, steps: int, guidance: bool) -> dict:
    from .base import meta_component

    per_forward = forward_flops(meta_component(model_id, "unet"), frames, height, width, batch=2 if guidance else 1)
    return {"per_forward": per_forward, "forwards_per_step": 1, "steps": steps, "total": per_forward * steps}


# --- creators' LoRAs --------------------------------------------------------------------------------------

LORA_SUPPORT, LORA_COMPONENTS, lora_check, lora_rename, lora_experts = base.no_loras(
    "diffusers' I2VGenXLPipeline has no LoRA loader.")

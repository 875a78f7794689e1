"""Wan 2.1 / 2.2 (``WanPipeline``, ``WanImageToVideoPipeline``): text and image to video."""

from __future__ import annotations

from .spec import ModelSpec, VideoPreset

NAME = "wan"

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
_WAN21_I2V_EXTRA = {"family": "wan", "size_multiple": 16, "fp32_components": ("vae", "image_encoder")}


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
        extra={"family": "wan", "size_multiple": 32},
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
        extra={"family": "wan", "size_multiple": 16, "last_frame": True},
    ),
)

"""The model catalogue: which models the studio offers, where their weights live, and their presets.

Pure data: no torch import. A spec names the real diffusers / transformers class that loads it, its
Hugging Face repository, a rough VRAM need (bf16 weights, everything resident) and the presets a creator
picks from. In ``--demo`` mode every spec is served by a tiny randomly initialised model of the same
class (see ``pipelines/demo_models.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VideoPreset:
    """Settings that a preset sets together; every value stays editable in the UI."""

    name: str
    resolution: str  # "480p" or "720p"
    frames: int
    steps: int
    guidance: float
    shift: float
    changes_output: bool = False  # True for step-distilled presets (Turbo)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the catalogue."""

    id: str
    task: str  # "t2v", "i2v" or "asr"
    title: str
    repo_id: str
    pipeline_class: str  # class name in diffusers (video) or transformers (asr)
    vram_gb: float  # rough need with everything resident, bf16 weights
    presets: tuple[VideoPreset, ...] = ()
    default_preset: str = "Standard"
    resolutions: tuple[str, ...] = ("480p",)
    fps: int = 16
    max_frames: int = 161
    revision: str | None = None
    lora_repo_id: str | None = None  # step-distillation LoRA fused into the transformer at load
    lora_weight_name: str | None = None
    demo_kind: str = ""  # which tiny model serves this spec in --demo mode
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def distilled(self) -> bool:
        return any(p.changes_output for p in self.presets)

    def preset(self, name: str) -> VideoPreset:
        for preset in self.presets:
            if preset.name == name:
                return preset
        known = ", ".join(p.name for p in self.presets)
        raise ValueError(f"Model {self.id!r} has no preset {name!r}; it has {known}.")


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

# Image to video. I2VGen-XL's presets are the ones creators benchmark it by (DDIM: no flow shift, the
# value is unused). Wan 2.1 I2V's reference settings: 40 steps, guidance 5.0, shift 3.0 at 480p and 5.0 at 720p.
_I2VGEN_XL = (
    VideoPreset("Quick preview", "512p", 8, 30, 9.0, 0.0),
    VideoPreset("Standard", "512p", 16, 50, 9.0, 0.0),
    VideoPreset("High quality", "768p", 24, 80, 10.0, 0.0),
)
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

CATALOGUE: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
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
        # Image to video. ``extra`` keys read by pipelines/i2v.py: ``family`` ("i2vgen" or "wan"), ``size_multiple``
        # (width and height are multiples of it), ``last_frame`` (the pipeline can end on a given frame),
        # ``fp32_components`` (kept in fp32 whatever the dtype; read by the loader).
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
            extra={"family": "i2vgen", "size_multiple": 32, "fp32_components": ()},
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
        # Speech recognition: transformers' Whisper. fp16/bf16 on GPU; the small ones suit CPU-only machines.
        ModelSpec(
            id="whisper-large-v3",
            task="asr",
            title="Whisper large-v3",
            repo_id="openai/whisper-large-v3",
            pipeline_class="WhisperForConditionalGeneration",
            vram_gb=4.5,
            demo_kind="whisper",
            notes="Most accurate; transcribes and translates to English.",
        ),
        ModelSpec(
            id="whisper-large-v3-turbo",
            task="asr",
            title="Whisper large-v3 turbo",
            repo_id="openai/whisper-large-v3-turbo",
            pipeline_class="WhisperForConditionalGeneration",
            vram_gb=2.5,
            demo_kind="whisper",
            notes="About as accurate and much faster; not trained for translation (translation uses large-v3).",
        ),
        ModelSpec(
            id="whisper-medium",
            task="asr",
            title="Whisper medium",
            repo_id="openai/whisper-medium",
            pipeline_class="WhisperForConditionalGeneration",
            vram_gb=2.5,
            demo_kind="whisper",
        ),
        ModelSpec(
            id="whisper-small",
            task="asr",
            title="Whisper small",
            repo_id="openai/whisper-small",
            pipeline_class="WhisperForConditionalGeneration",
            vram_gb=1.0,
            demo_kind="whisper",
            notes="Fast enough on a CPU.",
        ),
    )
}

DEFAULT_MODEL = {"t2v": "wan2.1-t2v-1.3b", "i2v": "i2vgen-xl", "asr": "whisper-large-v3"}


def models_for(task: str) -> list[ModelSpec]:
    """The catalogue's models for one task, in catalogue order."""
    return [spec for spec in CATALOGUE.values() if spec.task == task]


def get_spec(model_id: str) -> ModelSpec:
    try:
        return CATALOGUE[model_id]
    except KeyError:
        known = ", ".join(CATALOGUE)
        raise ValueError(f"Unknown model {model_id!r}; the catalogue has {known}.") from None


# Frame sizes (width, height) per resolution and aspect ratio: Wan's native 832x480 and 1280x720, and
# sizes of about the same pixel area for the other ratios.
FRAME_SIZES = {
    "240p": {"16:9": (416, 240), "9:16": (240, 416), "1:1": (320, 320), "4:3": (368, 272), "3:4": (272, 368)},
    "480p": {"16:9": (832, 480), "9:16": (480, 832), "1:1": (624, 624), "4:3": (704, 544), "3:4": (544, 704)},
    "720p": {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960), "4:3": (1088, 816), "3:4": (816, 1088)},
}
ASPECT_RATIOS = tuple(FRAME_SIZES["480p"])

# In --demo mode the tiny models run on whatever machine is at hand (often a CPU), so their presets are
# small; every value stays editable, and the real presets come back with real weights.
DEMO_PRESETS = (
    VideoPreset("Preview", "240p", 9, 4, 5.0, 3.0),
    VideoPreset("Standard", "240p", 17, 8, 5.0, 3.0),
    VideoPreset("High quality", "480p", 17, 12, 5.0, 3.0),
)
DEMO_RESOLUTIONS = ("240p", "480p", "720p")


def frame_size(resolution: str, aspect: str, multiple: int = 16) -> tuple[int, int]:
    """Width and height for a resolution and aspect ratio, rounded down to ``multiple`` (Wan: 16 or 32)."""
    if resolution not in FRAME_SIZES:
        raise ValueError(f"Resolution must be one of {', '.join(FRAME_SIZES)}, not {resolution!r}.")
    if aspect not in FRAME_SIZES[resolution]:
        raise ValueError(f"Aspect ratio must be one of {', '.join(ASPECT_RATIOS)}, not {aspect!r}.")
    width, height = FRAME_SIZES[resolution][aspect]
    return width // multiple * multiple, height // multiple * multiple


def snap_frames(frames: int, temporal: int = 4) -> int:
    """Nearest frame count of Wan's ``4n + 1`` form (1, 5, 9, ... 81)."""
    n = max(0, int((frames - 1) / temporal + 0.5))  # halves round up: 3 -> 5
    return n * temporal + 1


# Image to video keeps the input's aspect ratio: a resolution is a pixel area (the 16:9 frame of that
# height), and the frame size follows each model's multiples (see ``pipelines/images.py``).
I2V_MAX_AREA = {
    "128p": 224 * 128,
    "256p": 448 * 256,
    "480p": 832 * 480,
    "512p": 896 * 512,
    "720p": 1280 * 720,
    "768p": 1344 * 768,
}
DEMO_I2V_RESOLUTIONS = ("128p", "256p", "480p")
# (resolution, frames for Wan, frames for I2VGen-XL, steps) of each preset in --demo mode: seconds on a CPU,
# like T2V's DEMO_PRESETS.
_DEMO_I2V_SIZES = {
    "Preview": ("128p", 9, 8, 4),
    "Quick preview": ("128p", 9, 8, 4),
    "Turbo": ("128p", 9, 8, 4),
    "Standard": ("256p", 17, 16, 8),
    "High quality": ("256p", 17, 16, 12),
}


def demo_i2v_presets(spec: ModelSpec) -> tuple[VideoPreset, ...]:
    """The spec's presets made small for --demo: same names, guidance and shift; few pixels, frames and steps."""
    presets = []
    for preset in spec.presets:
        resolution, wan_frames, other_frames, steps = _DEMO_I2V_SIZES.get(preset.name, ("128p", 9, 8, 4))
        frames = wan_frames if spec.extra.get("family") == "wan" else other_frames
        presets.append(VideoPreset(preset.name, resolution, frames, min(steps, preset.steps), preset.guidance,
                                   preset.shift, preset.changes_output))
    return tuple(presets)

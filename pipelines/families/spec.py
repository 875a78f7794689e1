"""What a catalogue entry is: ``ModelSpec`` and its presets, and the frame-size rules the video tasks share.

Pure data: no torch import. A spec names the real diffusers / transformers class that loads it, its
Hugging Face repository, a rough VRAM need (bf16 weights, everything resident) and the presets a creator
picks from. In ``--demo`` mode every spec is served by a tiny randomly initialised model of the same
class (its family module's demo build).
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
    family: str = ""  # the family module that owns it (``pipelines.families.<family>``), set by the catalogue
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
    """Nearest frame count of the ``temporal * n + 1`` form (4: 1, 5, 9, ... 81)."""
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
# (resolution, frames, steps) of each preset in --demo mode: seconds on a CPU, like T2V's DEMO_PRESETS; the
# task makes the frame count one the family can make (``fit_frames``: 8 -> 9 for 4n+1).
_DEMO_I2V_SIZES = {
    "Preview": ("128p", 8, 4),
    "Quick preview": ("128p", 8, 4),
    "Turbo": ("128p", 8, 4),
    "Standard": ("256p", 16, 8),
    "High quality": ("256p", 16, 12),
}


def demo_i2v_sizes(spec: ModelSpec) -> tuple[VideoPreset, ...]:
    """The spec's presets made small for --demo: same names, guidance and shift; few pixels, frames and steps."""
    presets = []
    for preset in spec.presets:
        resolution, frames, steps = _DEMO_I2V_SIZES.get(preset.name, ("128p", 8, 4))
        presets.append(VideoPreset(preset.name, resolution, frames, min(steps, preset.steps), preset.guidance,
                                   preset.shift, preset.changes_output))
    return tuple(presets)

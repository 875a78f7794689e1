"""I2VGen-XL (``I2VGenXLPipeline``): image to video with a UNet."""

from __future__ import annotations

from .spec import ModelSpec, VideoPreset

NAME = "i2vgen"

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
        extra={"family": "i2vgen", "size_multiple": 32, "fp32_components": ()},
    ),
)

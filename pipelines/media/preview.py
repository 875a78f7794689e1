"""Cheap previews of a clip while it is denoised: a linear latent-to-RGB map, no VAE decode."""

from __future__ import annotations

import numpy as np

# Wan 2.1 VAE latent (16 channels, normalised space) to RGB, as fitted by the ComfyUI project.
WAN21_RGB_FACTORS = np.array(
    [
        [-0.1299, -0.1692, 0.2932],
        [0.0671, 0.0406, 0.0442],
        [0.3568, 0.2548, 0.1747],
        [0.0372, 0.2344, 0.1420],
        [0.0313, 0.0189, -0.0328],
        [0.0296, -0.0956, -0.0665],
        [-0.3477, -0.4059, -0.2925],
        [0.0166, 0.1902, 0.1975],
        [-0.0412, 0.0267, -0.1364],
        [-0.1293, 0.0740, 0.1636],
        [0.0680, 0.3019, 0.1128],
        [0.0032, 0.0581, 0.0639],
        [-0.1251, 0.0927, 0.1699],
        [0.0060, -0.0633, 0.0005],
        [0.3477, 0.2275, 0.2950],
        [0.1984, 0.0913, 0.1861],
    ],
    dtype=np.float32,
)
WAN21_RGB_BIAS = np.array([-0.1835, -0.0868, -0.3360], dtype=np.float32)


def latents_to_rgb(latents: np.ndarray, max_frames: int = 4, upscale: int = 1) -> np.ndarray:
    """Up to ``max_frames`` latent frames as one uint8 RGB image: a 2x2 grid for four, else a strip.

    ``latents`` is (C, F, H, W) for one video. 16-channel latents use Wan 2.1's fitted factors; other
    channel counts use the first three channels, normalised, which still shows motion and layout.
    ``upscale`` repeats pixels so a tiny latent stays visible.
    """
    channels, frames = latents.shape[:2]
    picks = np.unique(np.linspace(0, frames - 1, num=min(max_frames, frames)).round().astype(int))
    chosen = latents[:, picks].astype(np.float32)  # (C, n, H, W)
    if channels == WAN21_RGB_FACTORS.shape[0]:
        rgb = np.einsum("cnhw,cr->nhwr", chosen, WAN21_RGB_FACTORS) + WAN21_RGB_BIAS
        rgb = (rgb + 1.0) / 2.0
    else:
        rgb = np.moveaxis(chosen[:3], 0, -1)
        low, high = np.percentile(rgb, 2), np.percentile(rgb, 98)
        rgb = (rgb - low) / max(high - low, 1e-6)
    rgb = np.clip(rgb, 0.0, 1.0)
    if upscale > 1:  # latents are 8x smaller than the clip: blow them up so the preview is readable
        rgb = rgb.repeat(upscale, axis=1).repeat(upscale, axis=2)
    tiles = list(rgb)
    if len(tiles) == 4:  # 2x2 grid keeps the clip's aspect ratio
        grid = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    else:
        grid = np.concatenate(tiles, axis=1)
    return (grid * 255).round().astype(np.uint8)

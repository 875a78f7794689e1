"""Cheap previews of a clip while it is denoised: a linear latent-to-RGB map, no VAE decode."""

from __future__ import annotations

import numpy as np


def latents_to_rgb(latents: np.ndarray, max_frames: int = 4, upscale: int = 1, factors=None) -> np.ndarray:
    """Up to ``max_frames`` latent frames as one uint8 RGB image: a 2x2 grid for four, else a strip.

    ``latents`` is (C, F, H, W) for one video. ``factors`` is a family's ``PREVIEW_RGB``, a fitted linear map
    ``(weights (C, 3), bias (3,))``, used when the channel count matches; otherwise the first three channels,
    normalised, which still shows motion and layout.
    ``upscale`` repeats pixels so a tiny latent stays visible.
    """
    channels, frames = latents.shape[:2]
    picks = np.unique(np.linspace(0, frames - 1, num=min(max_frames, frames)).round().astype(int))
    chosen = latents[:, picks].astype(np.float32)  # (C, n, H, W)
    if factors is not None and channels == factors[0].shape[0]:
        rgb = np.einsum("cnhw,cr->nhwr", chosen, factors[0]) + factors[1]
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

"""ffmpeg in and out: encode frames to mp4, probe files. Uses the system ffmpeg, else imageio-ffmpeg's."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary: the one on PATH, else the one bundled with ``imageio-ffmpeg``."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        raise RuntimeError(
            "ffmpeg was not found: install it (apt install ffmpeg / winget install ffmpeg) "
            "or `pip install imageio-ffmpeg`."
        ) from error


def write_mp4(frames: np.ndarray, path: Path, fps: int, crf: int = 18, comment: str = "",
              audio: tuple[np.ndarray, int] | None = None) -> None:
    """Encode uint8 frames (F, H, W, 3) to an H.264 mp4 that browsers play (yuv420p, faststart); ``audio``
    (float samples (channels, n) in [-1, 1], sample rate) becomes an AAC track of the clip's length."""
    import tempfile

    import ffmpeg

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Expected uint8 frames of shape (F, H, W, 3), got {frames.dtype} {frames.shape}.")
    count, height, width, _ = frames.shape
    if height % 2 or width % 2:  # yuv420p needs even sizes
        frames = frames[:, : height - height % 2, : width - width % 2]
        count, height, width, _ = frames.shape
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
    options = dict(vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset="medium", movflags="+faststart", format="mp4")
    if comment:
        options["metadata"] = f"comment={comment}"
    with tempfile.TemporaryDirectory(prefix="cinescribe-audio-") as folder:
        streams = [stream]
        if audio is not None:
            samples, rate = np.asarray(audio[0], dtype=np.float32), int(audio[1])
            samples = samples[None] if samples.ndim == 1 else samples
            raw = Path(folder) / "audio.f32"
            np.clip(samples, -1.0, 1.0).T.astype("<f4").tofile(raw)  # interleaved
            # padded with silence or cut to the clip's length
            sound = ffmpeg.input(str(raw), format="f32le", ar=rate, ac=samples.shape[0]).audio.filter("apad")
            streams.append(sound)
            options.update(acodec="aac", audio_bitrate="192k", t=f"{count / fps:.6f}")
        process = ffmpeg.output(*streams, str(path), **options).overwrite_output().global_args("-loglevel", "error")
        try:
            process.run(cmd=ffmpeg_exe(), input=np.ascontiguousarray(frames).tobytes(), capture_stdout=True,
                        capture_stderr=True)
        except ffmpeg.Error as error:
            message = (error.stderr or b"").decode("utf-8", "replace").strip()
            if "No space left" in message:
                raise OSError(28, f"The disk is full while writing {Path(path).name}.") from None
            raise RuntimeError(f"ffmpeg could not encode the clip: {message or error}") from None


def probe_video(path: Path) -> dict:
    """Frame count, size, fps and codec of a video, decoded with ffmpeg (no ffprobe needed)."""
    result = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode("utf-8", "replace").strip() or "ffmpeg failed")
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, check=False)
    text = info.stderr.decode("utf-8", "replace")
    import re

    match = re.search(r"Video: (\w+).*?, (\d{2,5})x(\d{2,5})", text)
    fps_match = re.search(r"(\d+(?:\.\d+)?) fps", text)
    if not match:
        raise RuntimeError(f"No video stream in {path}")
    width, height = int(match.group(2)), int(match.group(3))
    frame_bytes = width * height * 3
    return {
        "codec": match.group(1),
        "width": width,
        "height": height,
        "frames": len(result.stdout) // frame_bytes,
        "fps": float(fps_match.group(1)) if fps_match else None,
    }


def encode_comment(settings: dict) -> str:
    """A compact JSON of the settings, embedded in the mp4 so the clip carries its own recipe."""
    return json.dumps(settings, separators=(",", ":"), ensure_ascii=True, default=str)[:4000]

"""Audio in: probe and decode any file ffmpeg reads to 16 kHz mono float32, and find silence.

ffmpeg is driven through ffmpeg-python with the binary from ``pipelines.media.ffmpeg.ffmpeg_exe`` (the system
ffmpeg, else the one bundled by imageio-ffmpeg). ffprobe is not needed: ``ffmpeg -i`` describes a file on
its own. Every problem with an input file becomes an ``AudioInputError`` (a ``RequestError``) whose
message names the file and says what is wrong with it, so a batch can report it and go on.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..studio.jobs import RequestError
from .ffmpeg import ffmpeg_exe

SAMPLE_RATE = 16_000  # what Whisper's feature extractor expects
MAX_DURATION_S = 3 * 3600.0  # longest file accepted: 3 hours (691 MB of float32 samples)
# Silence gate: a file (or a 30-second window) whose loudest 100 ms is quieter than this is not sent to the
# model at all. Speech is at -30 to -10 dBFS; room tone and hiss of a quiet recording sit below -60 dBFS.
SILENCE_DBFS = -55.0
SILENCE_WINDOW_S = 0.1


class AudioInputError(RequestError):
    """An input file that cannot be transcribed: missing, empty, corrupt, without audio, or too long."""


@dataclass
class AudioInfo:
    """What ``ffmpeg -i`` says about a file."""

    duration_s: float | None
    audio_codec: str = ""
    sample_rate: int | None = None
    channels: str = ""
    audio_streams: int = 0
    video_streams: int = 0
    container: str = ""

    def as_dict(self) -> dict:
        return {
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "container": self.container,
            "audio_codec": self.audio_codec,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "audio_streams": self.audio_streams,
            "video_streams": self.video_streams,
        }


_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_AUDIO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Audio: ([^,\s]+)[^,]*(?:, (\d+) Hz)?(?:, ([^,]+))?")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: ")
_CONTAINER = re.compile(r"Input #0, ([^,]+(?:,[^,]+)*?), from")


def format_duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min 30 s``, ``42.5 s``: for messages."""
    seconds = float(seconds)
    if seconds >= 3600:
        hours, rest = divmod(int(round(seconds)), 3600)
        return f"{hours} h {rest // 60:02d} min"
    if seconds >= 60:
        minutes, rest = divmod(int(round(seconds)), 60)
        return f"{minutes} min {rest:02d} s"
    return f"{seconds:.1f} s"


def _ffmpeg_error_line(stderr: str) -> str:
    """The most telling line of ffmpeg's complaint (its last non-empty line, without the file path)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    line = lines[-1]
    if ": " in line and not line.startswith("["):
        head, _, tail = line.partition(": ")
        if "/" in head or "\\" in head or "." in head:
            line = tail
    return line[:200]


def probe_audio(path: Path, name: str | None = None) -> AudioInfo:
    """Describe ``path`` with ``ffmpeg -i``; raises ``AudioInputError`` for a missing, empty or unreadable file."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise AudioInputError(f"{name}: the file does not exist (any more).", key="asr_file_missing", name=name)
    if path.stat().st_size == 0:
        raise AudioInputError(f"{name} is empty (0 bytes).", key="asr_file_empty", name=name)
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, check=False
    )
    text = result.stderr.decode("utf-8", "replace")
    if "Input #0" not in text:
        raise AudioInputError(
            f"{name} could not be read as audio or video; it may be damaged or not a media file "
            f"(ffmpeg: {_ffmpeg_error_line(text)}).",
            key="asr_file_corrupt",
            name=name,
            detail=_ffmpeg_error_line(text),
        )
    duration = None
    match = _DURATION.search(text)
    if match:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    audio = [m for m in _AUDIO_STREAM.finditer(text)]
    container = _CONTAINER.search(text)
    info = AudioInfo(
        duration_s=duration,
        audio_streams=len(audio),
        video_streams=len(_VIDEO_STREAM.findall(text)),
        container=container.group(1) if container else "",
    )
    if audio:
        codec, rate, channels = audio[0].groups()
        info.audio_codec = codec
        info.sample_rate = int(rate) if rate else None
        info.channels = (channels or "").strip()
    return info


def decode_audio(path: Path, name: str | None = None, max_duration_s: float = MAX_DURATION_S) -> tuple[np.ndarray, AudioInfo]:
    """The first audio stream of ``path`` as 16 kHz mono float32 in [-1, 1], and what the file holds.

    Refuses (``AudioInputError``) a file that is missing, empty, unreadable, has no audio stream, holds no
    samples, or is longer than ``max_duration_s``.
    """
    import ffmpeg

    path = Path(path)
    name = name or path.name
    info = probe_audio(path, name)
    if info.audio_streams == 0:
        holds = f"it holds {info.video_streams} video stream(s) and no sound" if info.video_streams else "it holds no sound"
        raise AudioInputError(f"{name} has no audio stream: {holds}.", key="asr_no_audio", name=name)
    if info.duration_s is not None and info.duration_s > max_duration_s:
        raise AudioInputError(
            f"{name} is {format_duration(info.duration_s)} long; the limit is {format_duration(max_duration_s)}. "
            "Cut it into parts (for example with ffmpeg -ss/-t) and transcribe them one by one.",
            key="asr_too_long",
            name=name,
            duration=format_duration(info.duration_s),
            limit=format_duration(max_duration_s),
        )
    # Read at most a little more than the limit, whatever the container claims.
    stream = ffmpeg.input(str(path), t=f"{max_duration_s + 1:.3f}")
    stream = stream.output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=SAMPLE_RATE,
                           map="0:a:0", vn=None, sn=None, dn=None)
    stream = stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    try:
        out, _ = stream.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as error:
        detail = _ffmpeg_error_line((error.stderr or b"").decode("utf-8", "replace"))
        raise AudioInputError(
            f"{name}: its sound could not be decoded; the file may be damaged (ffmpeg: {detail}).",
            key="asr_file_corrupt",
            name=name,
            detail=detail,
        ) from None
    audio = np.frombuffer(out, dtype=np.float32)
    del out
    if audio.size == 0:
        raise AudioInputError(f"{name} contains no audio samples.", key="asr_file_empty", name=name)
    if audio.size > max_duration_s * SAMPLE_RATE:
        seconds = audio.size / SAMPLE_RATE
        raise AudioInputError(
            f"{name} is longer than the limit of {format_duration(max_duration_s)}. "
            "Cut it into parts (for example with ffmpeg -ss/-t) and transcribe them one by one.",
            key="asr_too_long",
            name=name,
            duration=format_duration(seconds),
            limit=format_duration(max_duration_s),
        )
    # A copy that numpy may write to, without NaN/inf from float sources, within [-1, 1].
    audio = np.clip(np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return audio, info


def loudest_dbfs(audio: np.ndarray, window_s: float = SILENCE_WINDOW_S, sample_rate: int = SAMPLE_RATE) -> float:
    """RMS level, in dB relative to full scale, of the loudest ``window_s`` window (``-inf`` for zeros)."""
    if audio.size == 0:
        return -math.inf
    window = max(1, int(window_s * sample_rate))
    loudest = 0.0
    block = window * 1000  # about 100 s at a time: bounded memory on long files
    for start in range(0, audio.size, block):
        part = audio[start : start + block].astype(np.float64)
        usable = part.size - part.size % window
        if usable:
            power = np.square(part[:usable]).reshape(-1, window).mean(axis=1).max()
        else:
            power = np.square(part).mean()
        loudest = max(loudest, float(power))
    return -math.inf if loudest <= 0 else 10.0 * math.log10(loudest)


def is_silent(audio: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when even the loudest 100 ms of ``audio`` is below ``threshold_dbfs``."""
    return loudest_dbfs(audio) < threshold_dbfs

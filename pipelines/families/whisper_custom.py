"""A creator's own Whisper models: folders under ``models/whisper/<name>/`` (or ``--models-dir DIR``), and
Hugging Face repo ids typed into the page (from the cache).

A folder is a model when it is a transformers Whisper (``config.json`` with ``model_type`` whisper and its
weights) or a faster-whisper conversion (``model.bin`` + ``config.json``). English-only models (``.en``
in the name, or a faster-whisper/transformers config that is not multilingual) transcribe English only;
``english_only`` says so for the page and the request check. Anything else gets a clear message from
``custom_spec``; ``list_custom`` lists the good folders and skips the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

from .spec import ModelSpec

DEFAULT_DIR = Path("models") / "whisper"
NAME = "whisper"


class NotAWhisper(ValueError):
    """A folder or name that is not a Whisper model (the message says why)."""


def _dirs(models_dir: str | Path | None) -> list[Path]:
    found = [Path(models_dir).expanduser()] if models_dir else []
    return [*found, DEFAULT_DIR]


def folder_kind(folder: Path) -> str:
    """``"ctranslate2"``, ``"transformers"``, or a ``NotAWhisper`` with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAWhisper(f"{folder} is not a folder.")
    if (folder / "model.bin").is_file() and (folder / "config.json").is_file():
        return "ctranslate2"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NotAWhisper(f"{folder.name} is not a Whisper model: no readable config.json (a transformers Whisper) "
                          "and no model.bin (a faster-whisper folder).") from None
    if not isinstance(config, dict) or config.get("model_type") != "whisper":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise NotAWhisper(f"{folder.name} is not a Whisper model (its config.json says model_type {kind!r}).")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise NotAWhisper(f"{folder.name} is a Whisper config without weights (no .safetensors or .bin).")
    return "transformers"


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def english_only(folder: Path, name: str = "") -> bool:
    """True for a ``.en`` model: ``.en`` in its name, a transformers generation config that is not
    multilingual (or has no language tokens), a CTranslate2 config without ``lang_ids``, or, with none of
    these, a transformers ``vocab_size`` under 51865 (Whisper's English-only vocabulary has 51864)."""
    if name.endswith(".en") or Path(folder).name.endswith(".en"):
        return True
    generation = _json(Path(folder) / "generation_config.json")
    if "is_multilingual" in generation:
        return not generation["is_multilingual"]
    if "lang_to_id" in generation:
        return not generation["lang_to_id"]
    config = _json(Path(folder) / "config.json")
    if "lang_ids" in config:
        return not config["lang_ids"]
    return config.get("vocab_size", 51865) < 51865


def _spec(name: str, folder: Path, kind: str, repo: str | None = None) -> ModelSpec:
    only_en = english_only(folder, name)
    return ModelSpec(id=name, task="asr", title=name, repo_id=str(folder), pipeline_class="WhisperForConditionalGeneration",
                     vram_gb=1.0, demo_kind="whisper", family=NAME,
                     notes="Your model" + (" (English only: the language is English)" if only_en else ""),
                     extra={"custom": True, "kind": kind, "english_only": only_en, "hub_repo": repo})


def list_custom(models_dir: str | Path | None = None) -> tuple[list[ModelSpec], list[str]]:
    """The Whisper folders found (first folder wins a name) and a message per folder that is not one."""
    specs: dict[str, ModelSpec] = {}
    problems: list[str] = []
    for root in _dirs(models_dir):
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name in specs:
                continue
            try:
                specs[folder.name] = _spec(folder.name, folder, folder_kind(folder))
            except NotAWhisper as error:
                problems.append(str(error))
    return list(specs.values()), problems


def custom_spec(name: str, models_dir: str | Path | None = None) -> ModelSpec | None:
    """The spec of a creator's model called ``name`` (a folder name, or a repo id such as
    ``org/whisper-small-cantonese`` found in the Hugging Face cache); ``None`` when there is no such model.
    A folder of that name that is not a Whisper raises ``NotAWhisper``."""
    for root in _dirs(models_dir):
        folder = root / name
        if name and "/" not in name and folder.is_dir():
            return _spec(name, folder, folder_kind(folder))
    if name.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(name, local_files_only=True))
        except Exception:  # not in the cache (or not a repo id at all)
            return None
        return _spec(name, folder, folder_kind(folder), repo=name)
    return None

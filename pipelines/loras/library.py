"""The LoRA library: the ``*.safetensors`` files of the LoRA folder, read by their header only (no torch).

A file's header (8 bytes little-endian length, then JSON: each tensor's dtype, shape and byte range, and
``__metadata__``) says its layout and layer shapes, which each catalogue model's family checks against its
own layers (``lora_check``); the metadata gives the title, trigger words and kohya's training tags. A file
that is not a complete safetensors file (short, a header that is not JSON, tensors past the end: a
truncated download) fits nothing, with the reason. Scans are cached by each file's size and mtime.

``parse_loras`` reads the ``loras`` text of a request (``"name[.safetensors][:strength], ..."``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..studio.jobs import RequestError

SUFFIX = ".safetensors"
APP_DIR = Path(__file__).resolve().parents[2]
DEFAULT_DIR = APP_DIR / "loras"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
MAX_STRENGTH = 2.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_TAGS = 20
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
# Speed-up LoRAs (step- and guidance-distilled): what they are made for. A "4step"/"8 steps" in the name wins.
SPEED_LORAS = (("lightx2v", 4), ("lightning", 4), ("causvid", 8), ("fusionix", 8), ("fusionx", 8))


class LoraFileError(ValueError):
    """A file that is not a readable safetensors LoRA (the message says why)."""


@dataclass
class LoraInfo:
    """One file of the LoRA folder, as the page lists it."""

    name: str  # path inside the folder, without ``.safetensors``, with ``/`` separators
    path: Path
    size: int
    fits: tuple[str, ...] = ()  # catalogue model ids whose layers it fits
    reason: str = ""  # why it fits no model ("" when it fits one)
    layout: str = ""  # "diffusers", "wan-original", "kohya", "lightx2v" ("" when unknown)
    triggers: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # kohya's most frequent training tags
    title: str = ""
    thumbnail: Path | None = None
    speed: dict | None = None  # {"steps": 4, "guidance": 1.0} for a speed-up LoRA
    why_not: dict[str, str] = field(default_factory=dict, repr=False)  # model id -> why it does not fit
    mtime_ns: int = 0

    @property
    def file(self) -> str:
        return self.path.name


def loras_dir(settings) -> Path:
    """The LoRA folder: ``--loras-dir DIR``, else ``loras/`` in the app folder."""
    chosen = getattr(settings, "loras_dir", None)
    return Path(chosen).expanduser() if chosen not in (None, "") else DEFAULT_DIR


# --- the header ------------------------------------------------------------------------------------------


def read_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """``({tensor name: shape}, metadata)`` of a safetensors file, read from its header alone; a
    ``LoraFileError`` says what is wrong with a file that is not whole."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            start = handle.read(8)
            if len(start) < 8:
                raise LoraFileError(f"it is {size} bytes long: too short to be a safetensors file.")
            (length,) = struct.unpack("<Q", start)
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise LoraFileError(f"its header says {length} bytes but the file has {size}: not a safetensors "
                                    "file, or cut short.")
            raw = handle.read(length)
    except OSError as error:
        raise LoraFileError(f"it cannot be read ({error.strerror or error}).") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LoraFileError("its header is not the JSON a safetensors file starts with (a damaged file?).") from None
    if not isinstance(header, dict):
        raise LoraFileError("its header is not the JSON object a safetensors file starts with.")
    metadata = header.pop("__metadata__", None) or {}
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, entry in header.items():
        try:
            shape = tuple(int(n) for n in entry["shape"])
            first, last = (int(n) for n in entry["data_offsets"])
            count = math.prod(shape) * _DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise LoraFileError(f"its header entry {name!r} is not a tensor description (a damaged file?).") from None
        if last - first != count or first < 0:
            raise LoraFileError(f"its tensor {name!r} does not add up ({shape}, {entry['dtype']}): a damaged file.")
        shapes[name] = shape
        end = max(end, last)
    if 8 + length + end > size:
        raise LoraFileError(f"it is cut short: its tensors need {8 + length + end} bytes, the file has {size} "
                            "(an unfinished download?).")
    if not shapes:
        raise LoraFileError("it holds no tensors.")
    return shapes, {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


# --- what the metadata says -------------------------------------------------------------------------------


def _words(value: str) -> list[str]:
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    items = parsed if isinstance(parsed, list) else str(parsed).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def triggers_of(metadata: dict[str, str]) -> list[str]:
    found: list[str] = []
    for key in ("modelspec.trigger_phrase", "ss_trigger_words", "trigger_words", "trigger_word", "trigger_phrase"):
        if metadata.get(key):
            found += _words(metadata[key])
    return list(dict.fromkeys(found))


def tags_of(metadata: dict[str, str]) -> list[str]:
    """The most frequent training tags of kohya's ``ss_tag_frequency`` (``{dataset: {tag: count}}``)."""
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency") or "{}")
    except ValueError:
        return []
    counts: Counter = Counter()
    for tags in (frequency.values() if isinstance(frequency, dict) else ()):
        if isinstance(tags, dict):
            for tag, count in tags.items():
                if isinstance(count, (int, float)) and str(tag).strip():
                    counts[str(tag).strip()] += count
    return [tag for tag, _ in counts.most_common(MAX_TAGS)]


def speed_of(name: str, metadata: dict[str, str]) -> dict | None:
    """Steps and guidance a speed-up LoRA is made for, known by its name or metadata; else None."""
    text = " ".join([name, metadata.get("ss_output_name", ""), metadata.get("modelspec.title", ""),
                     metadata.get("modelspec.description", "")]).lower()
    for word, steps in SPEED_LORAS:
        if word in text:
            match = re.search(r"(\d{1,2})[\s_-]?steps?", text)
            return {"steps": int(match.group(1)) if match else steps, "guidance": 1.0}
    return None


def thumbnail_of(path: Path) -> Path | None:
    """An image next to the file with its stem (``x.png``, ``x.preview.png``, ...), the Civitai convention."""
    for name in [path.stem + suffix for suffix in IMAGE_SUFFIXES] + [path.stem + ".preview" + s for s in IMAGE_SUFFIXES]:
        candidate = path.with_name(name)
        if candidate.is_file():
            return candidate
    return None


# --- the scan --------------------------------------------------------------------------------------------

_cache: dict[tuple[str, int, int, bool], LoraInfo] = {}
_lock = threading.Lock()


def _video_specs():
    from ..families.catalogue import CATALOGUE

    return [spec for spec in CATALOGUE.values() if spec.task in ("t2v", "i2v")]


def inspect(path: Path, name: str, demo: bool) -> LoraInfo:
    """One file read and checked against every video model of the catalogue (uncached)."""
    from ..families.catalogue import family_of

    stat = path.stat()
    info = LoraInfo(name=name, path=path, size=stat.st_size, title=PurePosixPath(name).name,
                    thumbnail=thumbnail_of(path), mtime_ns=stat.st_mtime_ns)
    try:
        shapes, metadata = read_header(path)
    except LoraFileError as error:
        info.reason = str(error)
        info.speed = speed_of(name, {})
        return info
    info.title = metadata.get("ss_output_name") or metadata.get("modelspec.title") or info.title
    info.triggers, info.tags, info.speed = triggers_of(metadata), tags_of(metadata), speed_of(name, metadata)
    fits, layouts = [], []
    for spec in _video_specs():
        family = family_of(spec)
        if getattr(family, "LORA_SUPPORT", "cannot take LoRAs"):
            info.why_not[spec.id] = f"{spec.title} cannot take LoRAs here: {family.LORA_SUPPORT}"
            continue
        layout, reason = family.lora_check(spec, shapes, demo)
        layouts.append((not reason, layout))
        if reason:
            info.why_not[spec.id] = f"Not for {spec.title}: {reason}"
        else:
            fits.append(spec.id)
    info.fits = tuple(fits)
    info.layout = max(layouts, key=lambda found: (found[0], bool(found[1])), default=(False, ""))[1]  # where it fits
    if not fits:
        checked = [why for why in info.why_not.values() if "cannot take LoRAs" not in why]
        info.reason = checked[0] if checked else "no model of the catalogue takes LoRAs."  # the first: the default
    return info


def scan_library(settings) -> list[LoraInfo]:
    """Every ``*.safetensors`` under the LoRA folder (subfolders too), sorted by name; files unchanged since
    the last scan (same size and mtime) are not read again."""
    root = loras_dir(settings)
    demo = bool(getattr(settings, "demo", False))
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*" + SUFFIX)):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        name = path.relative_to(root).with_suffix("").as_posix()
        key = (str(path), stat.st_size, stat.st_mtime_ns, demo)
        with _lock:
            info = _cache.get(key)
        if info is None:
            info = inspect(path, name, demo)
            with _lock:
                _cache[key] = info
        found.append(dataclasses.replace(info, thumbnail=thumbnail_of(path)))
    return found


def loras_for_model(settings, model_id: str) -> tuple[list[LoraInfo], list[LoraInfo]]:
    """``(fitting, not fitting)`` for one model; each of the second has ``reason`` set for this model."""
    fitting, other = [], []
    for info in scan_library(settings):
        if model_id in info.fits:
            fitting.append(info)
        else:
            other.append(dataclasses.replace(info, reason=info.why_not.get(model_id) or info.reason))
    return fitting, other


# --- the request's text ----------------------------------------------------------------------------------


def parse_loras(text) -> list[tuple[str, float]]:
    """``"name[.safetensors][:strength], ..."`` -> ``[(name, strength)]``; empty text: none. Strength -2..2,
    default 1; ``;`` separates too (handy in a CSV cell). A ``RequestError`` names what is wrong."""
    if text is None:
        return []
    if not isinstance(text, str):
        raise RequestError(f"LoRAs are given as text like \"style:0.8, motion\", not {type(text).__name__}.",
                           key="lora_text", value=str(text)[:80])
    found: list[tuple[str, float]] = []
    for item in (part.strip() for part in re.split(r"[,;]", text)):
        if not item:
            continue
        name, colon, number = item.rpartition(":") if ":" in item else (item, "", "")
        name = name.strip()
        strength = 1.0
        if colon:
            try:
                strength = float(number)
                if not math.isfinite(strength):
                    raise ValueError
            except ValueError:
                raise RequestError(f"The LoRA strength in {item!r} must be a number from -2 to 2.",
                                   key="lora_strength_type", item=item) from None
            if not -MAX_STRENGTH <= strength <= MAX_STRENGTH:
                raise RequestError(f"The LoRA strength in {item!r} must be from -2 to 2, not {strength:g}.",
                                   key="lora_strength_range", item=item, value=strength)
        name = name.replace("\\", "/").removesuffix(SUFFIX)
        if not name or name.startswith("/") or ".." in PurePosixPath(name).parts or ":" in name:
            raise RequestError(f"{item!r} is not a LoRA name: write a file name from the LoRA folder, like "
                               "\"style.safetensors:0.8\".", key="lora_name", item=item)
        if any(seen == name for seen, _ in found):
            raise RequestError(f"The LoRA {name} is listed twice; give it once, with one strength.",
                               key="lora_twice", name=name)
        found.append((name, strength))
    return found


def format_loras(loras) -> str:
    """``[(name, strength)]`` -> the request's text (``"name:0.8, other:1"``)."""
    return ", ".join(f"{name}:{strength:g}" for name, strength in loras)

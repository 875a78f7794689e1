"""A request's LoRAs checked before anything is queued, and what a clip records about them.

``check_loras`` finds each named file in the LoRA folder and refuses, with a ``RequestError`` that names the
file and why, one that is missing, damaged, for another model, or given to a model that takes no LoRAs;
``check_request`` is where that happens before a job is queued (both executors' ``submit`` call it), while
the tasks' validation keeps only ``check_rules`` (the text and what the model and app allow, no file read).
``file_sha256`` hashes a file once per (path, size, mtime), also across restarts (``<data>/lora_hashes.json``);
``record`` is what the sidecar and the mp4's comment list: file, strength, sha256 and the short hash that
A1111 and Civitai print (its first 10 hex digits).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from ..studio.jobs import RequestError
from .library import SUFFIX, LoraInfo, format_loras, loras_dir, parse_loras, scan_library

MAX_LORAS = 8
SHORT_HASH = 10
_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


@dataclass
class ChosenLora:
    """One LoRA of a request, found in the folder and fitting its model."""

    name: str
    strength: float
    info: LoraInfo

    @property
    def path(self) -> Path:
        return self.info.path


def find_lora(settings, name: str, library: list[LoraInfo] | None = None) -> LoraInfo:
    """The folder's file ``name`` (its path in the folder without ``.safetensors``; a bare file name is
    enough when only one subfolder has it)."""
    library = scan_library(settings) if library is None else library
    exact = [info for info in library if info.name == name]
    if exact:
        return exact[0]
    by_file = [info for info in library if info.name.rsplit("/", 1)[-1] == name]
    if len(by_file) == 1:
        return by_file[0]
    folder = loras_dir(settings)
    if len(by_file) > 1:
        raise RequestError(f"Several LoRAs are called {name}{SUFFIX} ({', '.join(i.name for i in by_file)}); write "
                           "which one with its subfolder.", key="lora_ambiguous", name=name,
                           choices=", ".join(i.name for i in by_file))
    raise RequestError(f"There is no LoRA {name}{SUFFIX} in the LoRA folder {folder}.", key="lora_missing",
                       name=name, folder=str(folder))


def check_rules(text, spec, settings=None) -> list[tuple[str, float]]:
    """The cheap part of the check, without reading the folder: the text, how many, whether the model (and,
    with ``settings``, the app's --fp8 / --parallel) takes LoRAs. Returns ``(name, strength)`` pairs."""
    wanted = parse_loras(text)
    if not wanted:
        return []
    if len(wanted) > MAX_LORAS:
        raise RequestError(f"{len(wanted)} LoRAs were given; at most {MAX_LORAS} go on one clip.", key="lora_too_many",
                           count=len(wanted), limit=MAX_LORAS)
    from ..families.catalogue import family_of

    support = getattr(family_of(spec), "LORA_SUPPORT", "it has no LoRA rules.")
    if support:
        raise RequestError(f"{spec.title} cannot take LoRAs here: {support}", key="lora_unsupported",
                           model=spec.title, why=support)
    if getattr(settings, "fp8", False):  # peft would store the adapters in the fp8 of the layers they wrap
        why = "not with --fp8 weight storage yet; start without --fp8 to use them."
        raise RequestError(f"{spec.title} cannot take LoRAs here: {why}", key="lora_unsupported", model=spec.title,
                           why=why)
    if getattr(settings, "parallel", 1) > 1:
        raise RequestError("LoRAs do not run across several GPUs (--parallel) yet; start without it to use them.",
                           key="lora_parallel")
    return wanted


def check_loras(text, spec, settings) -> list[ChosenLora]:
    """The LoRAs of a request's ``loras`` text for model ``spec``, each checked (``check_rules``, then each file
    found in the folder, its header read once per file version, and fitting the model); a ``RequestError`` for
    the first that cannot be used. Without ``settings`` (no folder known) only the rules are checked."""
    wanted = check_rules(text, spec, settings)
    if not wanted or settings is None:
        return []
    library = scan_library(settings)
    chosen = []
    for name, strength in wanted:
        info = find_lora(settings, name, library)
        file = info.path.name
        if spec.id not in info.fits:
            why = info.why_not.get(spec.id) or info.reason
            bad = info.reason and not info.layout and not info.fits
            raise RequestError(f"The LoRA {file} cannot be used with {spec.title}: {why}",
                               key="lora_damaged" if bad else "lora_wrong_model", file=file, model=spec.title, why=why)
        chosen.append(ChosenLora(info.name, strength, info))
    return chosen


def canonical_text(text) -> str:
    """The request's ``loras`` text written the one way (``"name:0.8, other:1"``); the text's errors raise."""
    return format_loras(parse_loras(text))


# --- hashes and the clip's record --------------------------------------------------------------------------


def _store(settings) -> Path | None:
    data = getattr(settings, "data_dir", None)
    return Path(data) / "lora_hashes.json" if data else None


def file_sha256(path: Path, settings=None) -> str:
    """sha256 of a file, computed once per (path, size, mtime): kept in memory and in ``<data>/lora_hashes.json``."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key in _hashes:
            return _hashes[key]
    store = _store(settings)
    saved: dict = {}
    if store is not None and store.is_file():
        try:
            saved = json.loads(store.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
    entry = saved.get(key[0]) if isinstance(saved, dict) else None
    if isinstance(entry, dict) and entry.get("size") == key[1] and entry.get("mtime_ns") == key[2]:
        digest = str(entry.get("sha256"))
    else:
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        if store is not None:
            saved = saved if isinstance(saved, dict) else {}
            saved[key[0]] = {"size": key[1], "mtime_ns": key[2], "sha256": digest}
            try:  # our own cache file: replaced whole (never half-written)
                store.parent.mkdir(parents=True, exist_ok=True)
                temp = store.with_name(f".{store.name}.{threading.get_ident()}.tmp")
                temp.write_text(json.dumps(saved, indent=1), encoding="utf-8")
                temp.replace(store)
            except OSError:
                pass  # the hash is still right; it is computed again after a restart
    with _hash_lock:
        _hashes[key] = digest
    return digest


def record(chosen: list[ChosenLora], settings=None) -> list[dict]:
    """What a clip says about each LoRA: name, file, strength, sha256 and the short (A1111 / Civitai) hash."""
    found = []
    for lora in chosen:
        digest = file_sha256(lora.path, settings)
        found.append({"name": lora.name, "file": lora.path.name, "strength": lora.strength, "sha256": digest,
                      "short_hash": digest[:SHORT_HASH]})
    return found


def hashes_text(records: list[dict]) -> str:
    """``"name: 0123456789, ..."``: the ``Lora hashes`` line A1111 writes and Civitai reads."""
    return ", ".join(f"{entry['name'].rsplit('/', 1)[-1]}: {entry['short_hash']}" for entry in records)


def check_request(request, settings) -> None:
    """The one file check before a job is queued: both executors' ``submit`` (``GPUWorker``, ``RayExecutor``)
    call it, whatever made the request (page, API, Batch, CLI, scripts). The tasks' validation checks only
    the rules (``check_rules``); the job checks the files again when it runs (they may have changed)."""
    if not getattr(request, "loras", ""):
        return
    from ..families.catalogue import get_spec

    try:
        spec = get_spec(str(request.model))
    except ValueError:
        return  # the task's own validation names the unknown model
    check_loras(request.loras, spec, settings)

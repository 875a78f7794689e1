#!/usr/bin/env python3
"""Download model weights into the Hugging Face cache, ahead of the first generation.

    python scripts/download_models.py --list                 # what exists, what is cached
    python scripts/download_models.py wan2.1-t2v-1.3b whisper-large-v3-turbo
    python scripts/download_models.py --all
    python scripts/download_models.py Org/any-repo --revision main --local-dir D:\\models

Run it with the venv's Python (``.venv/bin/python`` or ``.venv\\Scripts\\python.exe``), which has
``huggingface_hub``. Weights land in the normal cache (``HF_HOME``, default ~/.cache/huggingface),
where the app finds them; ``--local-dir`` puts each model in its own folder instead.

Model ids come from the app's catalogue (``pipelines/families/``) plus a built-in table, so the
script also works on its own. Any ``org/name`` Hugging Face repository id is accepted too.

Network trouble gives a short message and exit code 1 (no traceback); ``HF_ENDPOINT`` selects a
mirror (e.g. https://hf-mirror.com) and ``HF_TOKEN`` a token for gated or private repositories.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Entry:
    id: str
    repo_id: str
    task: str = ""
    title: str = ""
    approx_gb: float | None = None  # download size, rough (the safetensors the loaders use)
    lora_repo_id: str | None = None
    lora_weight_name: str | None = None
    revision: str | None = None


# Fallback catalogue (and download-size hints) used when pipelines/families/ is missing or lacks
# an id. Sizes are approximate: the umT5-XXL text encoder alone is ~11 GB in every Wan repo.
BUILTIN: dict[str, Entry] = {e.id: e for e in (
    Entry("wan2.1-t2v-1.3b", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "t2v", "Wan 2.1 T2V 1.3B", 18),
    Entry("wan2.1-t2v-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "t2v", "Wan 2.1 T2V 14B", 70),
    Entry("wan2.2-ti2v-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "t2v", "Wan 2.2 TI2V 5B", 34),
    Entry("wan2.2-t2v-a14b", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "t2v", "Wan 2.2 T2V A14B", 126),
    Entry("wan2.1-i2v-14b-480p", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "i2v", "Wan 2.1 I2V 14B 480p", 72),
    Entry("wan2.1-i2v-14b-720p", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", "i2v", "Wan 2.1 I2V 14B 720p", 72),
    Entry("wan2.2-i2v-a14b", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "i2v", "Wan 2.2 I2V A14B", 126),
    Entry("i2vgen-xl", "ali-vilab/i2vgen-xl", "i2v", "I2VGen-XL", 15),
    Entry("whisper-large-v3", "openai/whisper-large-v3", "asr", "Whisper large-v3", 3.1),
    Entry("whisper-large-v3-turbo", "openai/whisper-large-v3-turbo", "asr", "Whisper large-v3 turbo", 1.6),
    Entry("whisper-medium", "openai/whisper-medium", "asr", "Whisper medium", 3.1),
    Entry("whisper-small", "openai/whisper-small", "asr", "Whisper small", 1.0),
)}

# Formats the diffusers / transformers loaders do not read: never downloaded (unless --all-files).
IGNORE_ALWAYS = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.mlmodel",
                 "*.mlpackage/*", "*.gguf", "*.ckpt", "*.pth", "*.pt", "coreml/*", "onnx/*"]

HELP_NETWORK = (
    "Hints:\n"
    "  * Check the internet connection; behind a proxy set HTTPS_PROXY=http://host:port.\n"
    "  * Hugging Face unreachable from here (e.g. in mainland China)? Use a mirror:\n"
    "      HF_ENDPOINT=https://hf-mirror.com   (Windows: set HF_ENDPOINT=https://hf-mirror.com)\n"
    "  * Gated or private repository? Create a token at https://huggingface.co/settings/tokens,\n"
    "    accept the model's terms on its page, and set HF_TOKEN=hf_... (or run `hf auth login`).\n"
    "  * HF_HUB_OFFLINE=1 forbids downloads; unset it to download.\n"
    "  * Running the script again resumes an interrupted download."
)


def load_catalogue() -> tuple[dict[str, Entry], str | None]:
    """The app's catalogue merged over the built-in table, and a note when the app's is unusable."""
    entries = dict(BUILTIN)
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from pipelines.families.catalogue import CATALOGUE  # imported here: the script must work without it
    except ImportError:
        return entries, None
    except Exception as exc:  # a broken catalogue must not block downloads
        return entries, (f"pipelines/families/ could not be read ({type(exc).__name__}: {exc}); "
                         "using the built-in list.")
    finally:
        sys.path.remove(str(REPO_ROOT))
    merged = {}
    for spec in CATALOGUE.values():
        known = BUILTIN.get(spec.id)
        size = known.approx_gb if known and known.repo_id == spec.repo_id else _size_by_repo(spec.repo_id)
        merged[spec.id] = Entry(spec.id, spec.repo_id, getattr(spec, "task", ""), getattr(spec, "title", ""),
                                size, getattr(spec, "lora_repo_id", None), getattr(spec, "lora_weight_name", None),
                                getattr(spec, "revision", None))
    merged.update({key: entry for key, entry in entries.items() if key not in merged})
    return merged, None


def _size_by_repo(repo_id: str) -> float | None:
    return next((e.approx_gb for e in BUILTIN.values() if e.repo_id == repo_id), None)


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def cached_repos() -> dict[str, float]:
    """repo_id -> size on disk in GB for models in the Hugging Face cache."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir()
    except Exception:  # no cache folder yet, or unreadable: nothing cached
        return {}
    return {repo.repo_id: repo.size_on_disk / 1e9 for repo in info.repos if repo.repo_type == "model"}


def list_models(entries: dict[str, Entry], local_dir: str | None) -> int:
    cached = cached_repos()
    width = max(len(key) for key in entries)
    repo_width = max(len(entry.repo_id) for entry in entries.values())
    print(f"{'id':<{width}}  {'task':<4}  {'repository':<{repo_width}}  {'approx.':>8}  status")
    for key, entry in entries.items():
        size = f"~{entry.approx_gb:g} GB" if entry.approx_gb else "?"
        if local_dir and (Path(local_dir) / key).is_dir():
            status = f"in {Path(local_dir) / key}"
        elif entry.repo_id in cached:
            status = f"cached ({cached[entry.repo_id]:.1f} GB on disk)"
        else:
            status = "not downloaded"
        print(f"{key:<{width}}  {entry.task:<4}  {entry.repo_id:<{repo_width}}  {size:>8}  {status}")
    from huggingface_hub import constants

    print(f"\nHugging Face cache: {constants.HF_HUB_CACHE}  (set HF_HOME to move it)")
    return 0


def resolve(names: list[str], entries: dict[str, Entry]) -> list[Entry]:
    chosen = []
    for name in names:
        if name in entries:
            chosen.append(entries[name])
        elif "/" in name:
            chosen.append(Entry(name.replace("/", "--"), name))
        else:
            close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown model id {name!r}.{hint} Known ids: {', '.join(entries)}. "
                           "A Hugging Face repository id (org/name) works too.")
    return chosen


def ignore_patterns(repo_id: str, revision: str | None) -> list[str]:
    """Skip formats no loader reads, *.bin weights where the same folder has safetensors, and, in a
    diffusers repository (``model_index.json``), single-file checkpoints at its top: ``from_pretrained``
    reads the component folders (a LoRA the catalogue names is fetched on its own)."""
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(repo_id, revision=revision)
    return skipped_files(files)


def skipped_files(files: list[str]) -> list[str]:
    """``ignore_patterns`` for a repository's file list."""
    with_safetensors = {os.path.dirname(f) for f in files if f.endswith(".safetensors")}
    # exact paths: a pattern such as "*.bin" would also match files in other folders
    skipped = [f for f in files if f.endswith(".bin") and os.path.dirname(f) in with_safetensors]
    if "model_index.json" in files:
        skipped += [f for f in files if "/" not in f and f.endswith((".safetensors", ".ckpt", ".pt", ".pth", ".gguf"))]
    return IGNORE_ALWAYS + skipped


def download(entry: Entry, revision: str | None, local_dir: str | None, all_files: bool) -> str:
    from huggingface_hub import constants, snapshot_download

    revision = revision or entry.revision
    target = str(Path(local_dir) / entry.id) if local_dir else None
    if constants.HF_HUB_OFFLINE:
        path = snapshot_download(entry.repo_id, revision=revision, local_dir=target, local_files_only=True)
    else:
        ignore = None if all_files else ignore_patterns(entry.repo_id, revision)
        path = snapshot_download(entry.repo_id, revision=revision, local_dir=target, ignore_patterns=ignore)
    if entry.lora_repo_id:
        allow = [entry.lora_weight_name] if entry.lora_weight_name else None
        snapshot_download(entry.lora_repo_id, allow_patterns=allow, local_files_only=constants.HF_HUB_OFFLINE,
                          local_dir=str(Path(local_dir) / (entry.id + "-lora")) if local_dir else None)
    return path


def explain(exc: BaseException, entry: Entry) -> str:
    """One paragraph for a failed download, without a traceback."""
    from huggingface_hub import errors

    name = type(exc).__name__
    if isinstance(exc, errors.GatedRepoError):
        what = (f"{entry.repo_id} is gated: accept its terms on https://huggingface.co/{entry.repo_id} "
                "and set HF_TOKEN.")
    elif isinstance(exc, errors.RepositoryNotFoundError):
        what = f"{entry.repo_id} was not found (or is private: set HF_TOKEN)."
    elif isinstance(exc, errors.RevisionNotFoundError):
        what = f"{entry.repo_id} has no revision {exc}."
    elif isinstance(exc, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError)) or \
            os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        what = (f"{entry.repo_id} is not in the cache and HF_HUB_OFFLINE=1 forbids downloading it "
                f"({name}).")
    elif isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        what = f"the disk is full while downloading {entry.repo_id} ({exc})."
    else:
        what = f"could not download {entry.repo_id}: {name}: {' '.join(str(exc).split())[:400]}"
    return what


def is_network_down(exc: BaseException) -> bool:
    """Connection-level failures (as opposed to one repository's problem): later downloads would fail too."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"ConnectError", "ConnectionError", "TransportError", "TimeoutException", "Timeout",
                         "ConnectTimeout", "ProxyError", "NetworkError"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download Cinescribe's models into the Hugging Face cache.")
    parser.add_argument("models", nargs="*", metavar="MODEL_ID", help="catalogue ids (see --list) or org/name")
    parser.add_argument("--list", action="store_true", help="show the models, their size and whether cached")
    parser.add_argument("--all", action="store_true", help="download every model in the catalogue")
    parser.add_argument("--revision", help="branch, tag or commit to download (default: the catalogue's, or main)")
    parser.add_argument("--local-dir", help="put each model in DIR/<id> instead of the Hugging Face cache")
    parser.add_argument("--all-files", action="store_true",
                        help="download every file of the repository (default skips formats the loaders ignore)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    args = parser.parse_args(argv)

    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return _fail("huggingface_hub is not installed for this Python. Run the script with the venv's Python: "
                     ".venv/bin/python scripts/download_models.py (Windows: .venv\\Scripts\\python.exe ...), "
                     "or start the launcher once so it installs the packages.")

    entries, note = load_catalogue()
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.list or not (args.models or args.all):
        code = list_models(entries, args.local_dir)
        if not (args.list or args.models or args.all):
            print("\nDownload with: python scripts/download_models.py MODEL_ID [...]  (or --all)")
        return code
    try:
        chosen = list(entries.values()) if args.all else resolve(args.models, entries)
    except KeyError as exc:
        return _fail(exc.args[0], 2)

    failed = done = 0
    for entry in chosen:
        size = f" (~{entry.approx_gb:g} GB)" if entry.approx_gb else ""
        print(f"==> {entry.id}: {entry.repo_id}{size}", flush=True)
        try:
            path = download(entry, args.revision, args.local_dir, args.all_files)
        except KeyboardInterrupt:
            print("\ninterrupted; run the same command again to resume.", file=sys.stderr)
            return 130
        except Exception as exc:  # network and hub errors become one readable message
            if args.debug:
                raise
            print(f"error: {explain(exc, entry)}", file=sys.stderr)
            failed += 1
            if is_network_down(exc):
                break  # the next models would wait for the same timeouts
            continue
        print(f"    done: {path}", flush=True)
        done += 1
    if failed:
        print(HELP_NETWORK, file=sys.stderr)
        skipped = len(chosen) - failed - done
        print(f"Downloads: {done} done, {failed} failed, {skipped} not tried "
              "(add --debug for the traceback).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

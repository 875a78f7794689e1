#!/usr/bin/env python3
"""Download the catalogue's models ahead of time, from Hugging Face, a mirror or ModelScope.

  python scripts/download_models.py --list
  python scripts/download_models.py wan2.1-t2v-1.3b whisper-small            # auto: HF, else ModelScope
  python scripts/download_models.py --source modelscope whisper-large-v3
  HF_ENDPOINT=https://hf-mirror.com python scripts/download_models.py wan2.2-ti2v-5b
  python scripts/download_models.py --delete whisper-small

Files go to <data>/models/<org>--<name>/ (``--data-dir``, default ``data``), where the app finds them;
an interrupted download resumes when started again; every file is checked against the source's
sha256 before the model is installed (ModelScope's files come through the ``modelscope`` package's
downloader, its own progress bars off: the one progress line is ours). The same code serves the page's
Models tab (pipelines/studio/downloads.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.studio import downloads  # noqa: E402
from pipelines.studio.downloads import skipped_files  # noqa: E402,F401  (what is not fetched)
from pipelines.studio.model_sources import SOURCES  # noqa: E402


def fetch_lora(repo_id: str, weight_name: str | None) -> None:
    """A step-distillation LoRA the catalogue names: into the Hugging Face cache, where the loader reads it."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, allow_patterns=[weight_name] if weight_name else None)


def catalogue() -> dict:
    """model id -> its ModelSpec."""
    from pipelines.families.catalogue import CATALOGUE

    return dict(CATALOGUE)


def progress_line(p: downloads.Progress) -> str:
    share = p.done / p.total * 100 if p.total else 0.0
    eta = f"{p.eta:.0f} s" if p.eta is not None else "?"
    speed = f"{p.speed / (1 << 20):.1f} MiB/s" if p.speed else "-"
    return (f"{p.repo_id}: {share:5.1f}%  {downloads.gib(p.done)} of {downloads.gib(p.total)}  "
            f"{speed}  ETA {eta}  {p.file}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="catalogue ids (see --list) or Hugging Face repo ids")
    parser.add_argument("--list", action="store_true", help="list the catalogue with what is on disk")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="auto: Hugging Face (or HF_ENDPOINT), then ModelScope when it cannot be reached")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: the main branch)")
    parser.add_argument("--data-dir", default="data", help="the app's data folder (models go to DATA/models)")
    parser.add_argument("--all", action="store_true", help="every catalogue model")
    parser.add_argument("--delete", action="store_true", help="delete these models' downloads")
    args = parser.parse_args(argv)
    root = Path(args.data_dir) / "models"
    known = catalogue()
    if args.all:
        args.models = list(known)
    if args.list or not args.models:
        for model_id, spec in known.items():
            repo = spec.repo_id
            state = downloads.model_state(repo, root)
            size = f"  {downloads.gib(state['size'])}" if state["size"] else ""
            print(f"{model_id:28} {repo:42} {state['state']}{size}  {state['source']}")
        return 0
    repos = []
    for name in args.models:
        if name in known:
            spec = known[name]
            repos.append((spec.repo_id, args.revision or spec.revision, spec.lora_repo_id, spec.lora_weight_name))
        elif "/" in name:
            repos.append((name, args.revision, None, None))
        else:
            print(f"error: unknown model {name!r}; choose from: {', '.join(known)}", file=sys.stderr)
            return 2
    failed = 0
    for repo, revision, lora, lora_weight in dict.fromkeys(repos):
        try:
            if args.delete:
                print(f"{repo}: deleted, {downloads.gib(downloads.delete_model(repo, root))} freed")
                continue
            last: list = [0.0, None]  # when the line was drawn, the latest progress

            def show(p: downloads.Progress) -> None:
                last[1] = p
                if time.monotonic() - last[0] >= 0.5:
                    last[0] = time.monotonic()
                    print("\r" + progress_line(p), end="", file=sys.stderr, flush=True)

            folder = downloads.download_model(repo, root, revision=revision, source=args.source, on_progress=show)
            if last[1] is not None:  # the line as it ended (it is drawn at most twice a second)
                print("\r" + progress_line(last[1]), end="", file=sys.stderr, flush=True)
            found = downloads.find_downloaded(repo, root)
            print(f"\n{repo}: verified and installed in {folder} ({found[1] if found else ''})")
            if lora:
                try:
                    fetch_lora(lora, lora_weight)
                except Exception as error:  # the hub client's errors: network, gated repo, ...
                    failed += 1
                    print(f"error: the LoRA {lora} could not be fetched ({error})", file=sys.stderr)
        except downloads.DownloadError as error:
            failed += 1
            print(f"\nerror: {error}", file=sys.stderr)
            if "cannot be reached" in str(error):
                print("Hint: set HF_ENDPOINT to a Hugging Face mirror (e.g. https://hf-mirror.com), use "
                      "--source modelscope, or HF_TOKEN for gated repos; start again to resume.", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

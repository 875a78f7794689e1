#!/usr/bin/env python3
"""Pick the PyTorch build for this machine and keep track of the launchers' set-up.

start.sh and start.bat both call this file, so the decision lives in one place and can be
unit-tested. It runs before any package is installed (with the venv's bare interpreter, on
Linux and on Windows), so it uses the standard library only.

Sub-commands (all print ``KEY=VALUE`` lines that bash and cmd can read):

  select        which torch build suits this machine (``--json`` for humans and tests)
  plan          what the launcher has to (re)install now; writes ``--out`` and a JSON sidecar
  verify        run with the venv's python after installing torch: does it import, does CUDA
                work (a tiny kernel on the GPU), then write the pip constraints file
  fallback      run with the venv's python when torch's own index failed: what to install from
                the index pip is configured with instead, and the one line that says so
  write-marker  record a finished set-up inside .venv
  hf-symlinks   Windows, once per environment: can the Hugging Face cache use symlinks? If not,
                explain huggingface_hub's warning about it
  table         print the build table as Markdown (docs/install.md carries a copy)

How a build is chosen (``select``): by compute capability and driver version, never by GPU
name. Each CUDA variant below ships kernels for a range of GPU architectures and needs a minimum
driver; the newest variant that every GPU and the driver support wins. No GPU, ``--cpu``, or a
driver too old for any variant gives the CPU build (with a message naming the driver needed).
``CINESCRIBE_TORCH_INDEX`` / ``CINESCRIBE_TORCH_SPEC`` override the choice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# The command line lives here; the table, the choice and the set-up steps in these modules (the
# names are re-exported: doctor.py and the tests use torch_build.X).
from torch_index import (Selection, fallback_selection, parse_versions, select,  # noqa: F401
                         wanted_companions)
from torch_setup import (_Reporter, cmd_quote, extra_requirements, default_extras,  # noqa: F401
                         install_extras, installed_torch, plan, read_marker, selection_fields, verify,
                         write_constraints, write_fields, write_marker)
from torch_table import (COMPANIONS, CONSTRAINTS_NAME, CUDA_VARIANTS, EXTRAS, MARKER_NAME, PYPI_LINUX_DEFAULT, PYTHON_CHECK,  # noqa: F401
                         PYTHON_SUPPORTED, PYTORCH_INDEX, TRITON_FOR_TORCH, VARIANTS, Gpu, Variant,
                         find_nvidia_smi, format_version, parse_smi, parse_version, run_nvidia_smi,
                         table_markdown)


# --------------------------------------------------------------------------------------------
# hf-symlinks: huggingface_hub's symlink warning on Windows, explained once
# --------------------------------------------------------------------------------------------

HF_SYMLINK_NOTE = """\
Note (shown once): this Windows account cannot create symbolic links, so the Hugging Face cache
({cache}) stores a full copy of a file where it would otherwise link to it. Downloads work, they
just take more disk space when two revisions share a file. huggingface_hub prints a long warning
about this for every download; Cinescribe switches that warning off
(HF_HUB_DISABLE_SYMLINKS_WARNING=1). To get symlinks, turn on Developer Mode
(Settings > System > For developers) and start Cinescribe again."""


def hf_cache_dir(env: dict[str, str]) -> Path:
    """Where huggingface_hub keeps models (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/...)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home) / "hub"


def symlinks_supported(folder: Path) -> bool:
    """The same test huggingface_hub makes: can a relative symlink be created in ``folder``?"""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            source = Path(tmp) / "source"
            source.touch()
            os.symlink("source", Path(tmp) / "link")
        return True
    except OSError:
        return False


def hf_symlinks(marker: Path, env: dict[str, str] | None = None, log: str | None = None) -> int:
    """Explain the symlink warning if this machine would get it; once (``marker`` records it)."""
    env = dict(os.environ) if env is None else env
    cache = hf_cache_dir(env)
    supported = symlinks_supported(cache)
    if not supported:
        _Reporter(log)(HF_SYMLINK_NOTE.format(cache=cache))
    try:
        marker.write_text(f"symlinks supported in {cache}: {supported}\n", encoding="utf-8")
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _pip_output(*args: str) -> str:
    """stdout of ``python -m pip ARGS`` with this interpreter ('' when it fails)."""
    import subprocess

    try:
        proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                              encoding="utf-8", errors="replace", timeout=300)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def pip_index_name(env: dict[str, str], config: str) -> str:
    """The index pip is configured with: PIP_INDEX_URL, else index-url in pip's config, else PyPI."""
    if env.get("PIP_INDEX_URL", "").strip():
        return env["PIP_INDEX_URL"].strip()
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith(".index-url") and value.strip():
            return value.strip().strip("'\"")
    return "PyPI"


def fallback(plan_json: Path, platform: str, out: Path) -> int:
    """torch's index failed: choose from pip's own index, record it in the plan, write the fields."""
    data = json.loads(plan_json.read_text(encoding="utf-8"))
    chosen = Selection.from_dict(data["selection"])
    companions = [r.split("=")[0] for r in chosen.requirements[1:]]
    available = parse_versions(_pip_output("index", "versions", "torch"))
    selection, line = fallback_selection(chosen, platform, available,
                                         pip_index_name(dict(os.environ), _pip_output("config", "list")),
                                         companions)
    data["selection"] = selection.to_dict()
    data["fields"].update(selection_fields(selection, platform))
    plan_json.write_text(json.dumps(data, indent=2), encoding="utf-8")
    with open(out, "w", encoding="utf-8", newline="\n") as handle:
        write_fields({"VARIANT": selection.variant, "LINE": line,
                      "PIP_ARGS": selection_fields(selection, platform)["PIP_ARGS"]}, handle, selection.pip_args())
    return 0


def _default_platform() -> str:
    return "win32" if sys.platform == "win32" else ("linux" if sys.platform.startswith("linux") else sys.platform)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_select = sub.add_parser("select", help="print the torch build for this machine")
    p_select.add_argument("--platform", default=_default_platform(), choices=["linux", "win32", "darwin"])
    p_select.add_argument("--cpu", action="store_true", help="force the CPU build")
    p_select.add_argument("--smi-file", help="read nvidia-smi's CSV from this file instead of running it")
    p_select.add_argument("--requirements", help="requirements.txt (to add torchvision/torchaudio)")
    p_select.add_argument("--json", action="store_true")

    p_plan = sub.add_parser("plan", help="decide what the launcher must install")
    p_plan.add_argument("--venv", required=True)
    p_plan.add_argument("--requirements", required=True)
    p_plan.add_argument("--platform", default=_default_platform(), choices=["linux", "win32", "darwin"])
    p_plan.add_argument("--cpu", action="store_true")
    p_plan.add_argument("--update", action="store_true")
    p_plan.add_argument("--out", help="write KEY=VALUE lines here (and a .json sidecar) instead of stdout")

    p_verify = sub.add_parser("verify", help="check the installed torch (run with the venv's python)")
    p_verify.add_argument("--variant", required=True)
    p_verify.add_argument("--platform", default=_default_platform())
    p_verify.add_argument("--constraints", help="write the pip constraints file here")
    p_verify.add_argument("--log", help="append the messages to this file too")
    p_verify.add_argument("--launcher", default="start.bat" if sys.platform == "win32" else "./start.sh")

    p_fallback = sub.add_parser("fallback", help="torch from pip's own index (run with the venv's python)")
    p_fallback.add_argument("--plan", required=True, help="the .json sidecar written by plan --out (updated)")
    p_fallback.add_argument("--platform", default=_default_platform())
    p_fallback.add_argument("--out", required=True, help="write KEY=VALUE lines here")

    p_marker = sub.add_parser("write-marker", help="record a finished set-up")
    p_marker.add_argument("--venv", required=True)
    p_marker.add_argument("--plan", required=True, help="the .json sidecar written by plan --out")

    p_extras = sub.add_parser("extras", help="install the optional accelerators (run with the venv's python)")
    p_extras.add_argument("--variant", required=True)
    p_extras.add_argument("--platform", default=_default_platform())
    p_extras.add_argument("--constraints", required=True, help="the constraints file that pins torch")
    p_extras.add_argument("--index-url", default="", help="torch's index, as an extra index")
    p_extras.add_argument("--log", help="pip's log and the messages go here too")

    p_hf = sub.add_parser("hf-symlinks", help="explain the Hugging Face cache's symlink warning, once")
    p_hf.add_argument("--marker", required=True, help="file that records that it was checked")
    p_hf.add_argument("--log", help="append the note to this file too")

    sub.add_parser("table", help="print the build table as Markdown")

    args = parser.parse_args(argv)
    if args.command == "select":
        if args.smi_file:
            smi_output, smi_problem = Path(args.smi_file).read_text(encoding="utf-8"), None
        elif args.cpu:
            smi_output, smi_problem = None, None
        else:
            smi_output, smi_problem = run_nvidia_smi()
        selection = select(smi_output, args.platform, force_cpu=args.cpu, smi_problem=smi_problem,
                           companions=wanted_companions(args.requirements), env=dict(os.environ))
        if args.json:
            print(json.dumps({**selection.to_dict(), "pip_args": selection.pip_args()}, indent=2))
        else:
            write_fields(selection_fields(selection, args.platform), sys.stdout, selection.pip_args())
        return 0
    if args.command == "plan":
        fields, selection = plan(Path(args.venv), Path(args.requirements), args.platform,
                                 cpu=args.cpu, update=args.update)
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="\n") as handle:
                write_fields(fields, handle, selection.pip_args())
            Path(args.out + ".json").write_text(
                json.dumps({"fields": fields, "selection": selection.to_dict()}, indent=2), encoding="utf-8")
        else:
            write_fields(fields, sys.stdout, selection.pip_args())
        return 0
    if args.command == "verify":
        return verify(args.variant, args.platform, args.constraints, args.log, args.launcher)
    if args.command == "fallback":
        return fallback(Path(args.plan), args.platform, Path(args.out))
    if args.command == "write-marker":
        write_marker(Path(args.venv), Path(args.plan))
        return 0
    if args.command == "extras":
        return install_extras(args.variant, args.platform, args.constraints, args.index_url or None, args.log)
    if args.command == "hf-symlinks":
        return hf_symlinks(Path(args.marker), log=args.log)
    if args.command == "table":
        print(table_markdown())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
#!/usr/bin/env bash
# Cinescribe launcher for Linux (and WSL).
#
# First run: creates .venv, installs the PyTorch build that suits this machine's GPU and driver
# (chosen by scripts/torch_build.py), checks that it really runs on the GPU, then installs
# requirements.txt. Every run: starts `python app.py [flags]` and starts it again whenever it
# exits with code 42 (the app's "restart me"). Set-up output goes to logs/setup.log.
#
# Usage: ./start.sh [launcher options] [app flags...]      (./start.sh --help-launcher)

set -u
set -o pipefail

readonly RESTART_CODE=42

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)" || exit 1
cd -- "$ROOT" || exit 1

VENV="${CINESCRIBE_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac  # relative: to the Cinescribe folder
VENV="${VENV%/}"
VENV_PY="$VENV/bin/python"
HELPER="$ROOT/scripts/torch_build.py"
REQUIREMENTS="$ROOT/requirements.txt"
PLAN="$VENV/cinescribe-plan.env"
CONSTRAINTS="$VENV/cinescribe-constraints.txt"
LOG="$ROOT/logs/setup.log"

export CINESCRIBE_LAUNCHER=1
export PYTHONUTF8=1
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

usage() {
    cat <<'EOF'
Usage: ./start.sh [launcher options] [app flags...]

Launcher options (not passed to the app):
  --cpu            install the CPU build of PyTorch even if an NVIDIA GPU is present
  --update         upgrade the app's packages in place (and re-check the PyTorch build)
  --reinstall      delete .venv and set everything up again
  --extras         also install optional accelerators (xformers) made for the installed torch;
                   a failure is only a warning
  --help-launcher  show this help
  --               pass everything after it to the app unchanged

Every other argument goes to `python app.py` unchanged, e.g. ./start.sh --port 7861

Environment:
  CINESCRIBE_PYTHON        Python 3.11-3.13 to build .venv with (default: first suitable one)
  CINESCRIBE_VENV          where the Python environment lives (default: .venv in this folder)
  CINESCRIBE_TORCH_INDEX   pip index for torch (URL ending in /cu128 etc., "pypi", or a folder of wheels);
                           when it (or PyTorch's own index) cannot be reached, torch comes from the
                           index pip is configured with (PyPI or its mirror), said in one line
  CINESCRIBE_TORCH_SPEC    pip requirement(s) for torch, e.g. "torch==2.11.0+cu128"
  CINESCRIBE_EXTRAS        packages for --extras (default: xformers; also wheel files or URLs)
Set-up log: logs/setup.log. More: docs/install.md
EOF
}

log_line() {
    printf '%s\n' "$*" >>"$LOG" 2>/dev/null || true
}

say() {
    printf '[cinescribe] %s\n' "$*"
    log_line "[cinescribe] $*"
}

warn() {
    printf '[cinescribe] WARNING: %s\n' "$*" >&2
    log_line "[cinescribe] WARNING: $*"
}

# fail LINE... : print the lines as an error and stop the launcher with exit code 1.
fail() {
    local line
    for line in "$@"; do
        printf '[cinescribe] ERROR: %s\n' "$line" >&2
        log_line "[cinescribe] ERROR: $line"
    done
    printf '[cinescribe] Set-up log: %s\n' "$LOG" >&2
    exit 1
}

# python_ok EXE: true when EXE is a 64-bit Python 3.11-3.13: every torch build has wheels for
# those, and diffusers needs 3.11+ (the same check as PYTHON_CHECK in scripts/torch_build.py).
python_ok() {
    "$1" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) and sys.maxsize > 2**32 else 1)' \
        >/dev/null 2>&1
}

python_version() {
    "$1" -c 'import platform, struct; print(platform.python_version(), "(%d-bit)" % (8 * struct.calcsize("P")))' \
        2>/dev/null || printf 'unknown version'
}

# find_python: set BASE_PY to a suitable interpreter.
find_python() {
    local candidate path seen=""
    if [ -n "${CINESCRIBE_PYTHON:-}" ]; then
        if python_ok "$CINESCRIBE_PYTHON"; then
            BASE_PY="$CINESCRIBE_PYTHON"
            return 0
        fi
        fail "CINESCRIBE_PYTHON=$CINESCRIBE_PYTHON is not a 64-bit Python 3.11-3.13 ($(python_version "$CINESCRIBE_PYTHON"))."
    fi
    for candidate in python3 python python3.12 python3.11 python3.13; do
        path="$(command -v "$candidate" 2>/dev/null)" || continue
        if python_ok "$path"; then
            BASE_PY="$path"
            return 0
        fi
        seen="$seen $candidate=$(python_version "$path")"
    done
    fail "Cinescribe needs a 64-bit Python 3.11, 3.12 or 3.13 (what PyTorch and diffusers both support)." \
        "Found:${seen:- no python at all}" \
        "Install one, e.g. 'sudo apt install python3.12 python3.12-venv' (Ubuntu 24.04), 'uv python install 3.12'" \
        "or pyenv, then run ./start.sh again (or point CINESCRIBE_PYTHON at it)."
}

# venv_pip SUBCOMMAND ARGS...: pip inside .venv, its detailed output appended to the set-up log.
venv_pip() {
    local subcommand="$1"
    shift
    "$VENV_PY" -m pip "$subcommand" --log "$LOG" "$@"
}

# ----------------------------------------------------------------------------------------------
# Launcher options
# ----------------------------------------------------------------------------------------------
ORIGINAL_ARGS="$*"
OPT_CPU=0
OPT_UPDATE=0
OPT_REINSTALL=0
OPT_EXTRAS=0
APP_ARGS=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --cpu) OPT_CPU=1 ;;
        --update) OPT_UPDATE=1 ;;
        --reinstall) OPT_REINSTALL=1 ;;
        --extras) OPT_EXTRAS=1 ;;
        --help-launcher)
            usage
            exit 0
            ;;
        --)
            shift
            APP_ARGS+=("$@")
            break
            ;;
        *) APP_ARGS+=("$1") ;;
    esac
    shift
done

mkdir -p "$ROOT/logs" || fail "Cannot create $ROOT/logs (is the folder writable?)"
log_line ""
log_line "=== $(date '+%Y-%m-%d %H:%M:%S') start.sh $ORIGINAL_ARGS"

# Spaces or brackets in the environment's path break some packages' build and compile steps.
case "$VENV" in
    *[[:space:]\(\)\[\]]*)
        warn "The Python environment's path contains spaces or brackets: $VENV"
        warn "Some packages fail in such paths. If set-up or the app fails, put the environment in a plain path:"
        warn "  CINESCRIBE_VENV=\$HOME/.local/share/cinescribe-venv ./start.sh   (or move Cinescribe to such a folder)"
        ;;
esac

# ----------------------------------------------------------------------------------------------
# The virtual environment
# ----------------------------------------------------------------------------------------------
if [ "$OPT_REINSTALL" = 1 ] && [ -d "$VENV" ]; then
    if [ ! -f "$VENV/pyvenv.cfg" ]; then
        fail "--reinstall: $VENV is not a Python environment (no pyvenv.cfg); not deleting it." \
            "Check CINESCRIBE_VENV, or delete the folder yourself."
    fi
    say "--reinstall: deleting $VENV"
    rm -rf -- "$VENV" || fail "Could not delete $VENV (is the app still running?)"
fi

FRESH_VENV=0
if [ ! -x "$VENV_PY" ]; then
    BASE_PY=""
    find_python
    say "Creating the Python environment $VENV with $BASE_PY (Python $(python_version "$BASE_PY"))"
    venv_existed=0
    [ -d "$VENV" ] && venv_existed=1
    if ! "$BASE_PY" -m venv "$VENV" >>"$LOG" 2>&1; then
        # Only what this run created is removed (CINESCRIBE_VENV may name a folder that existed).
        [ "$venv_existed" = 0 ] && rm -rf -- "$VENV"
        fail "Could not create the virtual environment with $BASE_PY." \
            "On Debian/Ubuntu the venv module is a separate package: sudo apt install python3-venv" \
            "(or python3.X-venv matching your Python), then run ./start.sh again."
    fi
    FRESH_VENV=1
fi

if ! python_ok "$VENV_PY"; then
    fail "$VENV uses Python $(python_version "$VENV_PY"), which cannot run Cinescribe (needs 64-bit 3.11-3.13)," \
        "or its Python was removed. Rebuild it: ./start.sh --reinstall"
fi

# ----------------------------------------------------------------------------------------------
# What to install (scripts/torch_build.py decides; it runs nvidia-smi only when needed)
# ----------------------------------------------------------------------------------------------
plan_args=(plan --venv "$VENV" --requirements "$REQUIREMENTS" --platform linux --out "$PLAN")
[ "$OPT_CPU" = 1 ] && plan_args+=(--cpu)
[ "$OPT_UPDATE" = 1 ] && plan_args+=(--update)
"$VENV_PY" "$HELPER" "${plan_args[@]}" || fail "scripts/torch_build.py plan failed."

NEED_TORCH=0 UNINSTALL=0 INSTALLED_TORCH="" VERIFY=0 NEED_REQS=0 VARIANT="" INDEX_URL=""
REASON="" WARNING="" NOTE=""
TORCH_ARGS=()
while IFS= read -r line || [ -n "$line" ]; do
    value="${line#*=}"
    case "${line%%=*}" in
        NEED_TORCH) NEED_TORCH="$value" ;;
        UNINSTALL) UNINSTALL="$value" ;;
        INSTALLED_TORCH) INSTALLED_TORCH="$value" ;;
        VERIFY) VERIFY="$value" ;;
        NEED_REQS) NEED_REQS="$value" ;;
        VARIANT) VARIANT="$value" ;;
        INDEX_URL) INDEX_URL="$value" ;;
        REASON) REASON="$value" ;;
        WARNING) WARNING="$value" ;;
        NOTE) NOTE="$value" ;;
        PIP_ARG) TORCH_ARGS+=("$value") ;;
    esac
done <"$PLAN"

[ -n "$NOTE" ] && say "$NOTE"

if [ "$NEED_TORCH" = 1 ] || [ "$NEED_REQS" = 1 ] || [ "$OPT_EXTRAS" = 1 ]; then
    if ! "$VENV_PY" -m pip --version >/dev/null 2>&1; then
        say "pip is missing in .venv; bootstrapping it"
        "$VENV_PY" -m ensurepip --upgrade >>"$LOG" 2>&1 || fail "Could not install pip into .venv; run ./start.sh --reinstall"
    fi
    if [ "$FRESH_VENV" = 1 ]; then
        say "Upgrading pip"
        venv_pip install --upgrade pip || warn "Could not upgrade pip; going on with the bundled one."
    fi
fi

torch_failed() {
    fail "Installing PyTorch failed (pip install ${TORCH_ARGS[*]})." \
        "Check the internet connection (behind a proxy: export HTTPS_PROXY=http://host:port) and free disk space." \
        "Another build can be chosen with --cpu or CINESCRIBE_TORCH_INDEX (docs/install.md)."
}

# ----------------------------------------------------------------------------------------------
# PyTorch first, from the chosen index, so requirements.txt's torch>=2.4 is already satisfied
# ----------------------------------------------------------------------------------------------
if [ "$NEED_TORCH" = 1 ]; then
    say "PyTorch build: $REASON"
    [ -n "$WARNING" ] && warn "$WARNING"
    if [ "$UNINSTALL" = 1 ]; then
        say "Removing torch $INSTALLED_TORCH first"
        venv_pip uninstall -y torch torchvision torchaudio || warn "pip uninstall failed; installing over it."
    fi
    say "Installing PyTorch: pip install ${TORCH_ARGS[*]}"
    say "(a download of up to 3 GB; see logs/setup.log for details)"
    if ! venv_pip install "${TORCH_ARGS[@]}"; then
        # PyTorch's index (or the mirror in CINESCRIBE_TORCH_INDEX) failed: torch from the index pip
        # is configured with (PyPI or its mirror); torch_build.py says in one line what build that is.
        if [ -z "$INDEX_URL" ] || ! "$VENV_PY" "$HELPER" fallback --plan "$PLAN.json" --platform linux \
            --out "$PLAN.fallback" 2>>"$LOG"; then
            torch_failed
        fi
        TORCH_ARGS=()
        while IFS= read -r line || [ -n "$line" ]; do
            value="${line#*=}"
            case "${line%%=*}" in
                VARIANT) VARIANT="$value" ;;
                LINE) FALLBACK_LINE="$value" ;;
                PIP_ARG) TORCH_ARGS+=("$value") ;;
            esac
        done <"$PLAN.fallback"
        warn "$FALLBACK_LINE"
        say "Installing PyTorch: pip install ${TORCH_ARGS[*]}"
        venv_pip install "${TORCH_ARGS[@]}" || torch_failed
        INDEX_URL=""
        VERIFY=1
    fi
fi

if [ "$VERIFY" = 1 ]; then
    say "Checking PyTorch"
    if ! "$VENV_PY" "$HELPER" verify --variant "$VARIANT" --platform linux --constraints "$CONSTRAINTS" \
        --log "$LOG" --launcher ./start.sh; then
        fail "PyTorch does not work as installed; see the messages above. Set-up stopped."
    fi
fi

# ----------------------------------------------------------------------------------------------
# The app's packages (torch pinned by the constraints file, so pip can never swap it)
# ----------------------------------------------------------------------------------------------
if [ "$NEED_REQS" = 1 ]; then
    if [ -f "$REQUIREMENTS" ]; then
        req_args=(-r "$REQUIREMENTS" -c "$CONSTRAINTS")
        if [ "$OPT_UPDATE" = 1 ]; then
            req_args+=(--upgrade)
            say "Upgrading the app's packages (requirements.txt)"
        else
            say "Installing the app's packages (requirements.txt)"
        fi
        if ! venv_pip install "${req_args[@]}"; then
            fail "Installing requirements.txt failed; see the pip messages above and logs/setup.log." \
                "If pip reports a conflict with torch, a package needs another torch version than the one" \
                "installed ($VARIANT); run ./start.sh --update, or report it."
        fi
    else
        warn "requirements.txt not found; skipping the app's packages."
    fi
fi

# Optional accelerators: one at a time, wheels only, torch pinned by the constraints file (so pip
# can only choose a version made for the installed torch, and can never replace torch).
# torch_build.py only warns when one fails.
if [ "$OPT_EXTRAS" = 1 ]; then
    "$VENV_PY" "$HELPER" extras --variant "$VARIANT" --platform linux --constraints "$CONSTRAINTS" \
        --index-url "$INDEX_URL" --log "$LOG" || warn "Installing the optional accelerators failed."
fi

if [ "$NEED_TORCH" = 1 ] || [ "$NEED_REQS" = 1 ] || [ "$VERIFY" = 1 ]; then
    "$VENV_PY" "$HELPER" write-marker --venv "$VENV" --plan "$PLAN.json" 2>>"$LOG" ||
        warn "Could not record the finished set-up; it will be checked again next time."
    say "Set-up complete."
fi

# ----------------------------------------------------------------------------------------------
# Run the app; exit code 42 means "restart me" (same flags), anything else ends the launcher
# ----------------------------------------------------------------------------------------------
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
while true; do
    "$VENV_PY" app.py ${APP_ARGS[@]+"${APP_ARGS[@]}"}
    code=$?
    if [ "$code" -eq "$RESTART_CODE" ]; then
        say "The app asked for a restart (exit code $RESTART_CODE); starting it again."
        continue
    fi
    exit "$code"
done

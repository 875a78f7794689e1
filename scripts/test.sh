#!/usr/bin/env bash
# Install what the tests need (into .venv, created on first run) and run the whole suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k t2v -x
# Two test processes by default (pytest-xdist; a file's tests stay in one process): CINESCRIBE_TEST_WORKERS=N
# sets how many, 0 runs in this process; an -n of your own wins.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[test] creating .venv"
  "$PYTHON" -m venv .venv
fi
VPY=.venv/bin/python

# torch first: keep a build that is already there (a CUDA one from start.sh), else the pinned CPU one.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "[test] installing torch==2.13.0"
  "$VPY" -m pip install --disable-pip-version-check "torch==2.13.0"
fi
echo "[test] installing requirements (and Ray, optional for the app, for tests/test_cluster.py)"
"$VPY" -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt \
  -r requirements-cluster.txt -c constraints-ci.txt

WORKERS=${CINESCRIBE_TEST_WORKERS:-2}
PARALLEL=()
case " $* " in
  *" -n "*|*" -n="*|*" --numprocesses"*|*" -p no:xdist "*) ;;
  *) if [ "$WORKERS" != "0" ]; then PARALLEL=(-n "$WORKERS" --dist loadgroup); fi ;;
esac
echo "[test] running pytest${PARALLEL[*]:+ (${PARALLEL[*]})}"
exec "$VPY" -m pytest "${PARALLEL[@]}" "$@"

#!/usr/bin/env bash
# The waiting GPU measurements (docs/benchmarks.md, "Waiting for a GPU run") as one run of about 8 minutes,
# for a lent GPU machine that has Python, PyTorch, transformers, accelerate and peft but not this project's
# other packages, and no internet.
#   here, once:  bash scripts/gpu_run.sh --wheels      (diffusers, ffmpeg-python, imageio-ffmpeg into .whl/)
#   there:       bash scripts/gpu_run.sh               (with .whl/ carried along; OUT=folder for the tables)
# Each step has its own time limit, so one slow step leaves the others' tables. Reports go to
# outputs/benchmarks/ and are copied to $OUT with the log and nvidia-smi's view.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}

if [ "${1:-}" = "--wheels" ]; then
  mkdir -p .whl
  DIFFUSERS=$(.venv/bin/python -c "import diffusers; print(diffusers.__version__)")
  exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2010_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "diffusers==$DIFFUSERS" ffmpeg-python==0.2.0 future==1.0.0 imageio-ffmpeg==0.5.1
fi

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "[gpu_run] could not install the carried wheels"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-outputs/gpu_run}
mkdir -p "$OUT" outputs/benchmarks
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee "$OUT/log.txt"

step() {  # step SECONDS benchmark-arguments...
  local limit=$1; shift
  echo "[gpu_run] $(date +%T) benchmark $* (at most ${limit} s)" | tee -a "$OUT/log.txt"
  timeout "$limit" "$PY" scripts/benchmark.py --random-weights --no-cold-start --device cuda "$@" 2>&1 \
    | tail -n 40 | tee -a "$OUT/log.txt"
}

# 1. Wan 2.1 T2V 1.3B High quality (480p, 81 frames, 50 steps) against the plain WanPipeline call, and the
#    4-step Turbo settings: the speed-up, % of bf16 peak and peak VRAM columns.
step 230 --tasks t2v --workloads "High quality" --turbo --baseline --repeat 1
# 2. Whisper large-v3 on 10 minutes of audio against transformers' plain pipeline: real-time factor.
step 130 --tasks asr --model whisper-large-v3 --workloads "10 min" --baseline --repeat 1
# 3. LoRA switching between jobs on the resident 1.3B model, and steps with LoRAs unfused vs fused.
step 100 --tasks lora --repeat 1

find outputs/benchmarks -name "*.md" -newer "$OUT/nvidia-smi.txt" -exec cp {} "$OUT/" \;
echo "[gpu_run] $(date +%T) done" | tee -a "$OUT/log.txt"

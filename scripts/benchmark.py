#!/usr/bin/env python3
"""Benchmark Cinescribe on this machine, through the app's own pipeline code; results to outputs/benchmarks/.

    python scripts/benchmark.py --demo --repeat 2            # tiny models: the app's own overhead (CI)
    python scripts/benchmark.py --random-weights --baseline  # real architectures, no download needed
    python scripts/benchmark.py --tasks asr --random-weights # Whisper: exactly 100 tokens per 30-s window
    python scripts/benchmark.py --tasks asr --asr-real 10    # CPU, real Whisper base: our engines vs theirs
    python scripts/benchmark.py --model wan2.1-t2v-14b       # real weights from the HF cache
    python scripts/benchmark.py --demo --soak 50             # 50 mixed jobs back to back
    python scripts/benchmark.py --tasks lora --random-weights # LoRA switching between jobs, unfused vs fused steps
    python scripts/benchmark.py --tasks t2v --random-weights --baseline --compile --step-cache 0.1 --turbo
                                                             # the fast path: compiled, step cache, 4-step Turbo

Every number in docs/benchmarks.md was made with this script; the report names the command.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.studio.settings import ATTENTION_BACKENDS, BATCH_GUIDANCE, MEMORY_LEVELS, OFFLOAD_MODES, Settings  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--demo", action="store_true", help="tiny random models (runs anywhere in seconds)")
    mode.add_argument("--random-weights", action="store_true",
                      help="real architectures at real size with random weights (no download)")
    parser.add_argument("--tasks", default="t2v,i2v,asr",
                        help="comma-separated tasks (default t2v,i2v,asr); lora: the LoRA-switch run on its own")
    parser.add_argument("--asr-real", type=float, default=0, metavar="MINUTES",
                        help="with --tasks asr: the CPU run on real Whisper base weights over MINUTES of espeak-ng speech, "
                             "our two engines next to faster-whisper's and transformers' own calls "
                             "(pipelines/bench/asr_real.py)")
    parser.add_argument("--model", help="model id (default: each task's default model)")
    parser.add_argument("--workloads", help="only workloads whose name contains one of these (comma-separated)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per workload after one warm-up (default 5)")
    parser.add_argument("--baseline", action="store_true", help="also time the plain library call, same process")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="then N jobs back to back, mixed")
    parser.add_argument("--no-cold-start", action="store_true", help="skip measuring the app's cold start")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--attention", default="auto", choices=ATTENTION_BACKENDS)
    parser.add_argument("--offload", default="none", choices=OFFLOAD_MODES)
    fast = parser.add_argument_group("the fast path (as app.py's flags)")
    fast.add_argument("--memory-level", default="auto", choices=MEMORY_LEVELS)
    fast.add_argument("--compile", action="store_true", help="regional torch.compile of the denoiser's blocks")
    fast.add_argument("--no-fuse-qkv", dest="fuse_qkv", action="store_false")
    fast.add_argument("--batch-guidance", default="auto", choices=BATCH_GUIDANCE)
    fast.add_argument("--prompt-cache", type=int, default=8, metavar="N",
                      help="0 = every run encodes its prompt (the timed runs repeat one prompt)")
    fast.add_argument("--fp8", action="store_true", help="fp8 weight storage (changes the output)")
    fast.add_argument("--vae-tiling", action="store_true")
    fast.add_argument("--gpu-memory", type=float, metavar="GB")
    fast.add_argument("--asr-static-cache", action="store_true")
    fast.add_argument("--step-cache", type=float, default=0.0, metavar="THRESHOLD",
                      help="also run each Wan workload with the step cache at this threshold (changes the output)")
    fast.add_argument("--turbo", action="store_true",
                      help="also a 4-step, guidance-1 text-to-video workload at 480p / 81 frames (the Turbo settings)")
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from diffusers.utils import logging as diffusers_logging
    from tqdm import tqdm
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()

    from pipelines.bench.benchmark import run_benchmark, standard_workloads, write_report
    from pipelines.device.worker import GPUWorker

    settings = Settings(outputs_dir=args.outputs, data_dir=args.data_dir, device=args.device, dtype=args.dtype,
                        attention=args.attention, offload=args.offload, demo=args.demo,
                        random_weights=args.random_weights, memory_level=args.memory_level, compile=args.compile,
                        fuse_qkv=args.fuse_qkv, batch_guidance=args.batch_guidance, prompt_cache=args.prompt_cache,
                        fp8=args.fp8, vae_tiling=args.vae_tiling, gpu_memory_gb=args.gpu_memory,
                        asr_static_cache=args.asr_static_cache)
    tasks = tuple(task.strip() for task in args.tasks.split(",") if task.strip())
    if args.asr_real > 0 and "asr" in tasks:
        from pipelines.bench.asr_real import markdown, run as run_asr_real

        print(markdown(run_asr_real(args.asr_real, args.data_dir / "benchmark_inputs" / "asr_real",
                                    args.outputs / "benchmarks")))
        return 0
    if "lora" in tasks:  # its own run: LoRA switching between jobs (pipelines/bench/lora_switch.py)
        from pipelines.bench.lora_switch import markdown as lora_markdown, run as run_lora

        print(lora_markdown(run_lora(settings, args.model or "wan2.1-t2v-1.3b", args.repeat,
                                     args.data_dir / "benchmark_inputs" / "lora", args.outputs / "benchmarks")))
        return 0
    try:
        workloads = standard_workloads(args.demo, tasks, args.model, scratch=args.data_dir / "benchmark_inputs",
                                       step_cache=args.step_cache, turbo=args.turbo)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.workloads:
        wanted = [w.strip().lower() for w in args.workloads.split(",")]
        workloads = [w for w in workloads if any(part in w.name.lower() for part in wanted)]
    if not workloads:
        print("error: no workload matches", file=sys.stderr)
        return 2
    worker = GPUWorker(settings)
    worker.start()
    worker.wait_ready()
    command = "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    total = len(workloads) * (args.repeat + 1) + args.soak
    try:
        with tqdm(total=total, desc="benchmark", unit="run") as progress:
            report = run_benchmark(worker, settings, workloads, args.repeat, baseline=args.baseline,
                                   soak_jobs=args.soak, cold_start=not args.no_cold_start, command=command.strip(),
                                   progress=progress)
    finally:
        worker.stop()
    md_path, json_path = write_report(report, settings.outputs_dir / "benchmarks")
    print(md_path.read_text(encoding="utf-8"))
    print(f"Written: {md_path}\n         {json_path}")
    failed = [w["name"] for w in report["workloads"] if w.get("error")]
    if failed:
        print(f"Failed workloads: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

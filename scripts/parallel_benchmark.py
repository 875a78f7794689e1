"""Speed-up of one Wan clip across N GPUs (``--parallel N``) against one GPU, through the app's own code.

    python scripts/parallel_benchmark.py --model wan2.1-t2v-14b --gpus 1,2,4,8 --resolution 720p --steps 10
    python scripts/parallel_benchmark.py --demo --device cpu --gpus 1,2 --steps 2    # the machinery, no GPU

For each N: N=1 loads the model as the worker does (``load_video_pipeline``) and runs ``WanPipeline``
in this process; N>1 starts N rank processes (``pipelines.scale.parallel.load_parallel_model``). The prompt is
encoded once; then one warm-up clip and ``--repeat`` timed ones (denoise and decode, each timed on its
own). The table gives seconds per denoising step and the speed-up of the denoise over N=1; the same as
JSON and Markdown under ``--out``. Nothing is written for a model that is not in the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_one_gpu(spec, settings, device, dtype, clip, args) -> dict:
    import torch

    from pipelines.device.loading import load_video_pipeline
    from pipelines.device.memory import free_memory
    from pipelines.families import wan

    started = time.perf_counter()
    model = load_video_pipeline(spec, settings, device, dtype, wan)
    load = time.perf_counter() - started
    pipe = model.pipe
    wan.set_flow_shift(pipe, args.shift)
    with torch.no_grad():
        positive, negative = pipe.encode_prompt(prompt=args.prompt, negative_prompt="", do_classifier_free_guidance=True,
                                                num_videos_per_prompt=1, max_sequence_length=wan.TEXT_TOKENS)
    denoise, decode = [], []
    for run in range(args.repeat + 1):
        _sync(device)
        started = time.perf_counter()
        latents = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, **clip,
                       generator=torch.Generator("cpu").manual_seed(args.seed), output_type="latent").frames
        _sync(device)
        middle = time.perf_counter()
        wan.decode_latents(pipe, latents)
        _sync(device)
        if run:  # the first run warms up
            denoise.append(middle - started)
            decode.append(time.perf_counter() - middle)
    del pipe, model
    free_memory(device)
    return {"load_s": load, "denoise_s": denoise, "decode_s": decode, "mode": "one process", "attention": None}


def run_ranks(spec, settings, device, dtype, world, clip, args) -> dict:
    from pipelines.families import wan
    from pipelines.scale.parallel import load_parallel_model

    started = time.perf_counter()
    model = load_parallel_model(spec, dataclasses.replace(settings, parallel=world), device, dtype)
    load = time.perf_counter() - started
    runner = model.pipe
    try:
        _, uneven = runner.split(clip["num_frames"], clip["height"], clip["width"])
        positive, negative = runner.encode(prompt=args.prompt, negative_prompt="", do_classifier_free_guidance=True,
                                           num_videos_per_prompt=1, max_sequence_length=wan.TEXT_TOKENS)
        denoise, decode = [], []
        for run in range(args.repeat + 1):
            started = time.perf_counter()
            runner.denoise({"prompt_embeds": positive, "negative_prompt_embeds": negative, **clip}, args.seed, args.shift,
                           uneven, 0, lambda step, preview: False)
            middle = time.perf_counter()
            runner.decode()
            if run:
                denoise.append(middle - started)
                decode.append(time.perf_counter() - middle)
        record = runner.record(*runner.split(clip["num_frames"], clip["height"], clip["width"]))
    finally:
        runner.close()
    return {"load_s": load, "denoise_s": denoise, "decode_s": decode, "mode": runner.mode.label,
            "attention": record["attention"], "backend": record["backend"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="wan2.1-t2v-1.3b")
    parser.add_argument("--gpus", default="1,2,4,8", help="rank counts to time, comma-separated (1: one process)")
    parser.add_argument("--resolution", default="480p")
    parser.add_argument("--aspect", default="16:9")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--prompt", default="a cat walking on the beach at sunset, cinematic")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--demo", action="store_true", help="the tiny random demo model (checks the script itself)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args(argv)

    import torch

    from pipelines.families.catalogue import get_spec
    from pipelines.families.spec import frame_size
    from pipelines.studio.settings import Settings

    spec = get_spec(args.model)
    cuda = args.device != "cpu" and torch.cuda.is_available()
    device = "cuda:0" if cuda else "cpu"
    dtype = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    available = torch.cuda.device_count() if cuda else None
    width, height = frame_size(args.resolution, args.aspect, spec.extra.get("size_multiple", 16))
    clip = {"height": height, "width": width, "num_frames": args.frames, "num_inference_steps": args.steps,
            "guidance_scale": args.guidance}
    settings = Settings(data_dir=args.data_dir, outputs_dir=args.out.parent, device="cuda" if cuda else "cpu",
                        demo=args.demo)
    rows = []
    for world in (int(n) for n in args.gpus.split(",") if n.strip()):
        if available is not None and world > available:
            print(f"N={world}: skipped, this machine has {available} GPUs")
            continue
        print(f"N={world}: loading {spec.title} ...", flush=True)
        if world == 1:
            result = run_one_gpu(spec, settings, device, dtype, clip, args)
        else:
            result = run_ranks(spec, settings, device, dtype, world, clip, args)
        result["ranks"] = world
        result["denoise_mean_s"] = statistics.mean(result["denoise_s"])
        result["s_per_step"] = result["denoise_mean_s"] / args.steps
        rows.append(result)
    base = next((row["denoise_mean_s"] for row in rows if row["ranks"] == 1), None)
    for row in rows:
        row["speedup"] = round(base / row["denoise_mean_s"], 3) if base else None

    lines = [f"# {spec.title}: one clip across N {'GPUs' if cuda else 'CPU processes'}", "",
             f"{width}x{height}, {args.frames} frames, {args.steps} steps, guidance {args.guidance}, {dtype}, "
             f"{torch.cuda.get_device_name(0) if cuda else 'CPU'}; mean of {args.repeat} after a warm-up", "",
             "| N | split | load s | s/step | denoise s | decode s | speed-up |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['ranks']} | {row['mode']} | {row['load_s']:.1f} | {row['s_per_step']:.3f} | "
                     f"{row['denoise_mean_s']:.2f} | {statistics.mean(row['decode_s']):.2f} | "
                     f"{row['speedup'] if row['speedup'] is not None else '-'} |")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{dt.datetime.now():%Y%m%d-%H%M%S}_parallel"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps({"model": spec.id, "device": device, "dtype": dtype, "clip": clip,
                                                     "demo": args.demo, "rows": rows}, indent=2), encoding="utf-8")
    print(f"written: {stem}.md / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

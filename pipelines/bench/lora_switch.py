"""The LoRA benchmark: how long switching creators' LoRAs between jobs takes on a resident model, and what
LoRAs cost per denoising step, unfused (peft adapters, as the app runs them) against fused into the weights.

Two random LoRAs (rank ``RANK``, every attention and FFN layer of every block, bf16, Wan's original keys as
ComfyUI writes them) are made at the model's real size (``--random-weights``; tiny with ``--demo``) in a
scratch LoRA folder. Then jobs run through the app's own GPU worker, each switching: none -> A (loaded) ->
B (loaded) -> A at 0.5 (reused: ``set_adapters`` only) -> A + B (reused) -> none; each row has the switch
seconds its sidecar records and its median step time, and the base model's load count at the end (1: it
never reloaded). Last, on the resident transformer at the job's shapes, one forward without LoRAs, with A
and B as adapters, and with them fused (``fuse_lora``) is timed.
``python scripts/benchmark.py --tasks lora --random-weights``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import statistics
import time
from pathlib import Path

RANK = 64
JOBS = (("none", ""), ("A (first time)", "bench_a"), ("B (first time)", "bench_b"), ("A at 0.5", "bench_a:0.5"),
        ("A + B", "bench_a:1, bench_b:0.5"), ("none again", ""))


def make_loras(folder: Path, spec, demo: bool, rank: int = RANK) -> list[Path]:
    """Two random LoRAs for ``spec`` in Wan's original layout (``diffusion_model.blocks.N...``, with alpha)."""
    import torch
    from safetensors.torch import save_file

    from ..families import wan_lora

    original = {inner: name for name, inner in wan_lora.BLOCK_NAMES.items()}
    layers = {name: shape for name, shape in wan_lora.layers(spec, demo).items() if name.startswith("blocks.")}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, name in enumerate(("bench_a", "bench_b")):
        generator = torch.Generator().manual_seed(index)
        tensors = {}
        for layer, (out_f, in_f) in layers.items():
            _, block, inner = layer.split(".", 2)
            key = f"diffusion_model.blocks.{block}.{original[inner]}"
            tensors[f"{key}.lora_down.weight"] = (torch.randn(rank, in_f, generator=generator) / in_f ** 0.5).bfloat16()
            tensors[f"{key}.lora_up.weight"] = (torch.randn(out_f, rank, generator=generator) * 0.01).bfloat16()
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
        path = folder / f"{name}.safetensors"
        save_file(tensors, str(path))
        paths.append(path)
    return paths


def _request(model_id: str, demo: bool, loras: str):
    from ..tasks.t2v import T2VRequest

    size = dict(resolution="240p", aspect="1:1", frames=5, steps=2) if demo else dict(
        resolution="480p", aspect="16:9", frames=33, steps=4)
    return T2VRequest(prompt="a red fox running through snow, cinematic", model=model_id, guidance=1.0, shift=5.0,
                      seed=0, loras=loras, **size)


def _forward_seconds(model, request, repeat: int) -> dict:
    """One transformer forward at the job's shapes: no LoRAs, both as adapters (unfused), both fused."""
    import torch

    pipe = model.pipe
    transformer = pipe.transformer
    config = transformer.config
    device = next(transformer.parameters()).device
    generator = torch.Generator("cpu").manual_seed(0)
    latent_frames = (request.frames - 1) // 4 + 1
    latents = torch.randn(1, config.in_channels, latent_frames, request.height // 8, request.width // 8,
                          generator=generator).to(device, transformer.dtype)
    text = torch.randn(1, 512, config.text_dim, generator=generator).to(device, transformer.dtype)
    timestep = torch.tensor([500.0], device=device)

    def timed() -> float:
        runs = []
        for _ in range(repeat + 1):  # the first is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            with torch.no_grad():
                transformer(latents, timestep, text, return_dict=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            runs.append(time.perf_counter() - started)
        return round(statistics.median(runs[1:]), 4)

    names = [name for name in model.loras if name in (getattr(transformer, "peft_config", None) or {})]
    if not names:  # the LoRA jobs failed: their rows say why
        return {"forward_s": {"no LoRA": timed()}, "fuse_s": None}
    transformer.disable_lora()
    result = {"no LoRA": timed()}
    transformer.enable_lora()
    transformer.set_adapters(names, [1.0] * len(names))
    result[f"{len(names)} LoRAs as adapters (unfused)"] = timed()
    started = time.perf_counter()
    pipe.fuse_lora(components=["transformer"], adapter_names=names)
    fuse_s = time.perf_counter() - started
    result[f"{len(names)} LoRAs fused"] = timed()
    pipe.unfuse_lora(components=["transformer"])
    transformer.disable_lora()
    return {"forward_s": result, "fuse_s": round(fuse_s, 3)}


def run(settings, model_id: str, repeat: int, scratch: Path, outputs: Path) -> dict:
    """The jobs and the forwards; returns the report (also written to ``outputs`` as .json and .md)."""
    from ..device.worker import GPUWorker
    from ..families.catalogue import get_spec
    from ..studio.jobs import JobState
    from ..tasks.t2v import validate_t2v

    spec = get_spec(model_id)
    folder = scratch / "loras"
    paths = make_loras(folder, spec, settings.demo)
    settings = dataclasses.replace(settings, loras_dir=str(folder))
    worker = GPUWorker(settings)
    worker.start()
    worker.wait_ready(300)
    rows = []
    try:
        for name, loras in JOBS:
            started = time.perf_counter()
            job = worker.submit("t2v", _request(model_id, settings.demo, loras))
            seen = -1
            while not job.state.finished:
                seen = job.wait_for_change(seen, 1.0)
            if job.state != JobState.DONE:
                rows.append({"name": name, "loras": loras, "error": job.error})
                continue
            sidecar = json.loads(Path(job.result["clips"][0]["sidecar"]).read_text(encoding="utf-8"))
            used = sidecar.get("loras") or {}
            rows.append({"name": name, "loras": loras, "job_s": round(time.perf_counter() - started, 2),
                         "switch_s": used.get("seconds", 0.0), "loaded": used.get("loaded", []),
                         "reused": used.get("reused", []), "step_s": sidecar["fast_path"].get("step_s_median")})
            print(rows[-1], flush=True)
        request = validate_t2v(_request(model_id, settings.demo, ""), demo=settings.demo)
        forwards = worker.run_exclusive(lambda: _forward_seconds(worker.models.get(spec)[0], request, repeat), 600)
        loads = dict(worker.models.load_counts)
        environment = dict(worker.environment)
    finally:
        worker.stop()
    report = {"created": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "model": spec.title,
              "mode": "demo" if settings.demo else "random weights" if settings.random_weights else "real weights",
              "device": environment.get("device_name") or environment.get("device", ""), "rank": RANK,
              "lora_mb": round(sum(p.stat().st_size for p in paths) / len(paths) / 1e6, 1),
              "shape": f"{request.width}x{request.height}, {request.frames} frames, {request.steps} steps",
              "jobs": rows, "model_loads": loads, **forwards}
    outputs.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (outputs / f"lora-switch-{stamp}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (outputs / f"lora-switch-{stamp}.md").write_text(markdown(report), encoding="utf-8")
    return report


def markdown(report: dict) -> str:
    lines = [f"LoRA switching on {report['model']} ({report['mode']}, {report['device']}; {report['created']}): two "
             f"rank-{report['rank']} LoRAs of {report['lora_mb']} MB, jobs at {report['shape']}; base model loads: "
             f"{report['model_loads']}.", "",
             "| job | LoRAs | switch s | loaded | reused | step s (median) | job s |", "|---|---|---:|---|---|---:|---:|"]
    for row in report["jobs"]:
        if "error" in row:
            lines.append(f"| {row['name']} | `{row['loras']}` | failed: {str(row['error'])[:80]} | | | | |")
            continue
        lines.append(f"| {row['name']} | `{row['loras'] or '-'}` | {row['switch_s']:.3f} | {', '.join(row['loaded']) or '-'} "
                     f"| {', '.join(row['reused']) or '-'} | {row['step_s'] if row['step_s'] is not None else '-'} "
                     f"| {row['job_s']} |")
    fused = f"fusing took {report['fuse_s']} s" if report.get("fuse_s") is not None else "no LoRAs to fuse"
    lines += ["", f"One transformer forward at the job's shapes (median; {fused}):", "",
              "| variant | forward s |", "|---|---:|"]
    lines += [f"| {name} | {seconds} |" for name, seconds in report["forward_s"].items()]
    return "\n".join(lines) + "\n"

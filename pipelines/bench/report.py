"""The benchmark report: written as JSON and as a Markdown table (``outputs/benchmarks/<time>_benchmark.*``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def write_report(report: dict, folder: Path) -> tuple[Path, Path]:
    from ..studio.outputs import write_atomic, write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}_benchmark"
    json_path = write_json_atomic(stem.with_suffix(".json"), report)
    markdown = render_markdown(report)
    md_path = write_atomic(json_path.with_suffix(".md"), lambda temp: temp.write_text(markdown, encoding="utf-8"))
    return md_path, json_path


def _cell(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    p = report["platform"]
    lines = [
        f"# Cinescribe benchmark, {report['created']}",
        "",
        f"- Mode: **{report['mode']}**" + (" (real architectures, random weights: timings are real, output is noise)"
                                          if report["mode"] == "random-weights" else
                                          " (tiny random models: app overhead only)" if report["mode"] == "demo" else ""),
        f"- Machine: {p.get('gpu') or p.get('cpu')} · {p['os']}{' (WSL)' if p.get('wsl') else ''} · "
        f"driver {p.get('driver') or '–'} · CUDA {p.get('cuda') or '–'}",
        f"- Software: Python {p['python']} · torch {p['torch']} · diffusers {p['diffusers']} · "
        f"transformers {p['transformers']} · dtype {p['dtype']}",
        f"- Runs: {report['repeat']} timed after one warm-up · app cold start to first page "
        f"{_cell(report.get('cold_start_s'))} s · CUDA init {_cell(p.get('cuda_init_s'))} s",
        f"- Command: `{report['command']}`",
        *(["- Fast path: " + ", ".join(f"{k} {v}" for k, v in report["fast_path_settings"].items())]
          if report.get("fast_path_settings") else []),
        *([f"- GPU bf16 peak: {report['gpu_peak']['bf16_tflops'] or '–'} TFLOP/s published ({report['gpu_peak']['gpu'] or 'unknown GPU'}), "
           f"{report['gpu_peak']['measured_matmul_tflops'] or '–'} TFLOP/s measured here (8192² bf16 matmul)"]
          if report.get("gpu_peak") and str(p.get("device", "")).startswith("cuda") else []),
        *([f"- Speech: {report['asr_tokens']}"] if report.get("asr_tokens") else []),
        "",
        "| workload | mean s | min s | max s | s/step | load s | text enc s | denoise s | decode s | mp4 s "
        "| peak VRAM alloc / NVML GiB | GPU util mean / min % | host RSS GiB | baseline mean s | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if not str(p.get("device", "")).startswith("cuda"):  # on the CPU the "allocator" figure is the process RSS
        lines = [line.replace("peak VRAM alloc / NVML GiB", "peak RSS / NVML GiB") for line in lines]
    video = [w for w in report["workloads"] if w["task"] != "asr"]
    speech = [w for w in report["workloads"] if w["task"] == "asr"]
    for w in video:
        if w.get("error") and not w.get("wall_s"):
            lines.append(f"| {w['name']} | failed: {w['error'][:80]} |" + " |" * 14)
            continue
        stages = w.get("stages_s", {})
        base, ratio = _baseline_cells(w)
        lines.append(
            "| " + " | ".join([
                w["name"], _cell(w["wall_s"]["mean"]), _cell(w["wall_s"]["min"]), _cell(w["wall_s"]["max"]),
                _cell(w.get("s_per_step"), 3), _cell(w.get("load_s")),
                *(_cell(stages.get(name, {}).get("mean")) for name in ("text_encode", "denoise", "decode", "encode")),
                f"{_cell(w.get('peak_alloc_gib'))} / {_cell(w.get('nvml_peak_gib'))}",
                f"{_cell(w.get('gpu_util_mean'), 0)} / {_cell(w.get('gpu_util_min'), 0)}",
                _cell(w.get("rss_peak_gib")), base, ratio,
            ]) + " |"
        )
    lines += _efficiency_table(report, video)
    if speech:
        lines += ["", "| workload | audio s | mean s | min s | max s | real-time factor | audio decode s | features s "
                  "| generate s | peak VRAM alloc / NVML GiB | GPU util mean / min % | host RSS GiB | baseline mean s | speed-up |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        if not str(p.get("device", "")).startswith("cuda"):
            lines[-2] = lines[-2].replace("peak VRAM alloc / NVML GiB", "peak RSS / NVML GiB")
        for w in speech:
            if w.get("error") and not w.get("wall_s"):
                lines.append(f"| {w['name']} | failed: {w['error'][:80]} |" + " |" * 12)
                continue
            stages = w.get("stages_s", {})
            lines.append("| " + " | ".join([
                w["name"], _cell(w.get("audio_s"), 0), _cell(w["wall_s"]["mean"]), _cell(w["wall_s"]["min"]),
                _cell(w["wall_s"]["max"]), f"{_cell(w.get('real_time_factor'), 1)}x",
                *(_cell(stages.get(name, {}).get("mean")) for name in ("decode", "features", "generate")),
                f"{_cell(w.get('peak_alloc_gib'))} / {_cell(w.get('nvml_peak_gib'))}",
                f"{_cell(w.get('gpu_util_mean'), 0)} / {_cell(w.get('gpu_util_min'), 0)}", _cell(w.get("rss_peak_gib")),
                *_baseline_cells(w),
            ]) + " |")
    if report.get("soak"):
        s = report["soak"]
        lines += ["", f"Soak: {s['jobs']} jobs: {s['succeeded']} succeeded, {s['failed']} failed "
                      f"({s['out_of_memory']} out of memory), {s['recovered']} recovered; {s['memory_kind']} "
                      f"{s['memory_start_gib']} → {s['memory_end_gib']} GiB."]
    lines += ["", "Speed-up = baseline mean / our mean (the plain library call: `from_pretrained(...).to(device)`, "
              "one `pipe(...)` call and the mp4 write, in the same process; for speech, transformers' "
              "`pipeline(\"automatic-speech-recognition\")` with 30-second chunks, the app's batch size and the same "
              "tokens per window)." if report.get("baseline") else ""]
    return "\n".join(lines).rstrip() + "\n"


def _percent(value) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _efficiency_table(report: dict, video: list[dict]) -> list[str]:
    """Per video workload: the denoising FLOPs counted from the model's shapes, the TFLOP/s reached and the fraction
    of the GPU's bf16 peak; peak VRAM against the plain call's; the first compiled job's extra seconds; the memory
    level; and what makes the output differ from the plain call's, if anything."""
    rows = [w for w in video if w.get("wall_s")]
    if not rows:
        return []
    peak = report.get("gpu_peak") or {}
    vendor = f"{peak['gpu']} {peak['bf16_tflops']:g}" if peak.get("bf16_tflops") else "vendor"
    measured = f"{peak['measured_matmul_tflops']:g}" if peak.get("measured_matmul_tflops") else "measured"
    memory = "VRAM" if str(report["platform"].get("device", "")).startswith("cuda") else "RSS"
    lines = ["", f"| workload | denoise TFLOP | denoise s | TFLOP/s | % of bf16 peak ({vendor}) | % of bf16 matmul "
                 f"measured here ({measured}) | peak {memory} ours / plain GiB | first-job compile extra s "
                 "| memory level | output vs plain call |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in rows:
        flops = (w.get("flops") or {}).get("total")
        fast = w.get("fast_path") or {}
        plain_peak = (w.get("baseline") or {}).get("peak_alloc_gib")
        output = w.get("changes_output") or "; ".join(fast.get("changes_output") or []) or "same (within rounding)"
        lines.append("| " + " | ".join([
            w["name"], _cell(flops / 1e12 if flops else None, 0),
            _cell((w.get("stages_s") or {}).get("denoise", {}).get("mean")), _cell(w.get("denoise_tflops"), 1),
            _percent(w.get("mfu_vendor")), _percent(w.get("mfu_measured")),
            f"{_cell(w.get('peak_alloc_gib'))} / {_cell(plain_peak)}", _cell(w.get("compile_extra_s")),
            str(fast.get("memory_level") or "–"), output.replace("|", "/"),
        ]) + " |")
    if report["mode"] == "demo":
        lines.append("")
        lines.append("FLOPs are counted for the real model sizes only; the demo's tiny models have none here.")
    return lines


def _baseline_cells(workload: dict) -> tuple[str, str]:
    """The baseline's mean (or why it failed) and the speed-up, as table cells."""
    baseline = workload.get("baseline")
    if not baseline:
        return "–", "–"
    if baseline.get("error"):
        return f"failed: {baseline['error'][:60].replace('|', '/')}", "–"
    base = baseline.get("wall_s", {}).get("mean")
    ours = (workload.get("wall_s") or {}).get("mean")
    ratio = round(base / ours, 2) if base and ours else None
    return _cell(base), f"{_cell(ratio)}x" if ratio else "–"

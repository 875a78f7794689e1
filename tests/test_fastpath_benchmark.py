"""What the benchmark reports about the fast path: FLOPs counted from the models' shapes (a meta-device forward
and the closed form agree), the fraction of the GPU's bf16 peak, peak VRAM against the plain call's, and the
workloads that change the output (step cache, Turbo) marked as such."""

from __future__ import annotations

import pytest
import torch

from pipelines.bench import benchmark

from pipelines.bench import flops
from pipelines.families import wan
from pipelines.families.base import meta_component
from pipelines.families.demo import build_wan_t2v


def test_flop_counter_and_closed_form_agree_on_the_tiny_wan():
    """On the meta device (nothing computed) at a long sequence, where the blocks are nearly all the work."""
    transformer = build_wan_t2v().transformer
    with torch.device("meta"):
        meta = type(transformer).from_config(transformer.config)
    counted = wan.forward_flops(meta, frames=81, height=256, width=256, text_tokens=32)
    tokens = 21 * (256 // 16) * (256 // 16)
    closed = wan.forward_flops_closed_form(transformer.config, tokens, text_tokens=32)
    assert counted == pytest.approx(closed, rel=0.02)  # the closed form leaves out embeddings and the head


def test_wan_1_3b_at_480p_is_the_published_size_of_work():
    """2.8e14 FLOPs per forward at 480p / 81 frames (32,760 tokens), as docs/benchmarks.md and REFERENCE state."""
    counted = flops.denoise_flops("wan2.1-t2v-1.3b", 81, 480, 832, steps=50, guidance=True)
    assert counted["per_forward"] == pytest.approx(2.83e14, rel=0.01)
    transformer = meta_component("wan2.1-t2v-1.3b", "transformer")
    closed = wan.forward_flops_closed_form(transformer.config, 32760, text_tokens=512)
    assert counted["per_forward"] == pytest.approx(closed, rel=0.01)
    assert counted["forwards_per_step"] == 2 and counted["total"] == pytest.approx(2.83e16, rel=0.01)
    turbo = flops.denoise_flops("wan2.1-t2v-1.3b", 81, 480, 832, steps=4, guidance=False)
    assert turbo["total"] == pytest.approx(1.13e15, rel=0.01)


def test_i2vgen_xl_unet_is_counted_from_its_config():
    standard = flops.denoise_flops("i2vgen-xl", 16, 512, 512, steps=50, guidance=True)
    quick = flops.denoise_flops("i2vgen-xl", 8, 512, 512, steps=30, guidance=True)
    assert standard["forwards_per_step"] == 1  # both guidance passes in one batch, as its pipeline runs them
    assert 1e15 < standard["total"] < 5e15
    assert quick["total"] < standard["total"] / 2


def test_gpu_peaks_by_name():
    assert flops.gpu_peak_tflops("NVIDIA H200") == (989.5, "H200")
    assert flops.gpu_peak_tflops("NVIDIA H100 PCIe") == (756.0, "H100 PCIe")
    assert flops.gpu_peak_tflops("NVIDIA H100 80GB HBM3") == (989.5, "H100")
    assert flops.gpu_peak_tflops("NVIDIA GeForce RTX 4090") == (165.2, "RTX 4090")
    assert flops.gpu_peak_tflops("Tesla T4") == (None, None)
    assert set(flops.SOURCES) == set(flops.GPU_BF16_PEAK_TFLOPS)
    assert flops.mfu(2.83e16, 57.2, 989.5) == pytest.approx(0.5, rel=0.01)
    assert flops.mfu(None, 1.0, 989.5) is None


def test_step_cache_and_turbo_workloads_are_marked(tmp_path):
    workloads = benchmark.standard_workloads(False, ("t2v",), scratch=tmp_path, step_cache=0.1, turbo=True)
    names = [w.name for w in workloads]
    assert "t2v wan2.1-t2v-1.3b Turbo 4 steps" in names
    turbo = next(w for w in workloads if "Turbo" in w.name)
    assert (turbo.request.steps, turbo.request.guidance, turbo.request.frames) == (4, 1.0, 81)
    cached = [w for w in workloads if "step cache" in w.name]
    assert len(cached) == 3 and all(w.request.step_cache == 0.1 and w.changes_output for w in cached)
    assert not any("Turbo" in w.name and "step cache" in w.name for w in workloads)  # guidance 1: nothing to cache
    base = next(w for w in workloads if w.name == "t2v wan2.1-t2v-1.3b Standard")
    assert benchmark._plain_key(base) == benchmark._plain_key(next(w for w in cached if "Standard" in w.name))


def _report(workload: dict) -> dict:
    return {"created": "now", "mode": "random-weights", "repeat": 5, "baseline": True, "command": "python x",
            "platform": {"os": "Linux", "python": "3.11", "torch": "2.13", "diffusers": "0.42", "transformers": "5.23",
                         "dtype": "bf16", "device": "cuda:0", "gpu": "NVIDIA H200", "cuda": "12.8"},
            "gpu_peak": {"bf16_tflops": 989.5, "gpu": "H200", "measured_matmul_tflops": 790.0},
            "workloads": [workload]}


def test_report_shows_the_fraction_of_peak_and_memory_against_the_plain_call():
    workload = {"name": "t2v wan2.1-t2v-1.3b High quality", "task": "t2v", "wall_s": {"mean": 80.0, "min": 79.0, "max": 81.0},
                "stages_s": {"denoise": {"mean": 57.2}}, "flops": {"total": 2.83e16}, "peak_alloc_gib": 20.5,
                "compile_extra_s": 12.3, "fast_path": {"memory_level": "resident", "changes_output": []},
                "baseline": {"wall_s": {"mean": 160.0}, "peak_alloc_gib": 22.0}}
    benchmark._add_efficiency(workload, {"bf16_tflops": 989.5, "measured_matmul_tflops": 790.0})
    assert workload["denoise_tflops"] == pytest.approx(494.8, abs=0.1)
    assert workload["mfu_vendor"] == pytest.approx(0.5, abs=0.001)
    text = benchmark.render_markdown(_report(workload))
    assert "GPU bf16 peak: 989.5 TFLOP/s published (H200), 790.0 TFLOP/s measured here" in text
    row = next(line for line in text.splitlines() if line.startswith("| t2v") and "28300" in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3:] == ["494.8", "50%", "63%", "20.50 / 22.00", "12.30", "resident", "same (within rounding)"]
    assert "2.00x" in text  # 160 s plain / 80 s ours


def test_a_workload_that_changes_the_output_says_so_in_the_report():
    workload = {"name": "t2v x + step cache 0.1", "task": "t2v", "wall_s": {"mean": 1.0, "min": 1.0, "max": 1.0},
                "stages_s": {}, "changes_output": "step cache (first-block cache) at 0.1", "fast_path": {}}
    text = benchmark.render_markdown(_report(workload))
    assert "| step cache (first-block cache) at 0.1 |" in text

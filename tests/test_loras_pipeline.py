"""Creators' LoRAs on the real (tiny) WanPipeline: LoRAs made with peft on the demo transformer, written in
diffusers/peft, Wan original (ComfyUI), kohya and lightx2v layouts, loaded through the app as named
adapters. The layouts give the same output; a LoRA changes the clip and strength 0 does not; two compose;
switching keeps the base model resident; the sidecar and mp4 record each LoRA; bad files are refused at
submit and a LoRA that fails to load fails its job only."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from pipelines.families import wan
from pipelines.families.catalogue import get_spec
from pipelines.families.demo import ensure_demo_model
from pipelines.loras import adapters, check
from pipelines.studio.jobs import JobState, RequestError
from pipelines.studio.settings import Settings
from pipelines.tasks.t2v import T2VRequest
from tests import lora_files
from tests.conftest import wait_finished
from tests.test_fastpath import _read_frames

SMALL = dict(prompt="a cat walking", resolution="240p", aspect="1:1", frames=5, steps=2, seed=11)  # 320 x 320


@pytest.fixture(scope="module")
def loras(data_dir, tmp_path_factory) -> Path:
    """The LoRA folder: ``style`` in four layouts (same weights), ``other``, and a copy to fail with."""
    folder = tmp_path_factory.mktemp("loras")
    demo = ensure_demo_model("wan-t2v", data_dir / "demo_models", wan.DEMO_BUILDERS["wan-t2v"])
    style, other = lora_files.peft_weights(demo, seed=1), lora_files.peft_weights(demo, seed=2)
    lora_files.write_diffusers(style, folder / "style.safetensors")
    lora_files.write_original(style, folder / "comfy" / "style_wan.safetensors", metadata={"ss_output_name": "Style"})
    lora_files.write_original(style, folder / "style_kohya.safetensors", kohya=True)
    lora_files.write_original(style, folder / "style_lightx2v.safetensors", lightx2v=True)
    lora_files.write_diffusers(other, folder / "other.safetensors")
    lora_files.write_diffusers(other, folder / "fresh.safetensors")
    return folder


def _settings(tmp_path: Path, data_dir: Path, loras: Path) -> Settings:
    return Settings(outputs_dir=tmp_path / "outputs", data_dir=data_dir, demo=True, loras_dir=str(loras))


# --- on the pipeline itself: every layout, strengths, composition, experts ----------------------------------


def _loaded(kind: str, data_dir: Path, model_id: str):
    from diffusers import WanPipeline

    folder = ensure_demo_model(kind, data_dir / "demo_models", wan.DEMO_BUILDERS[kind])
    pipe = WanPipeline.from_pretrained(folder)
    return types.SimpleNamespace(pipe=pipe, spec=get_spec(model_id), loras={}, optimisations={})


def _forward(pipe):
    import torch

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 2, 8, 8, generator=generator)
    text = torch.randn(1, 6, 32, generator=generator)
    with torch.no_grad():
        return pipe.transformer(latents, torch.tensor([500.0]), text, return_dict=False)[0]


def test_layouts_strengths_and_composition_on_the_transformer(tmp_path, data_dir, loras):
    import torch

    settings = _settings(tmp_path, data_dir, loras)
    model = _loaded("wan-t2v", data_dir, "wan2.1-t2v-1.3b")
    spec = model.spec
    base = _forward(model.pipe)

    def run(text):
        adapters.use_loras(model, wan, check.check_loras(text, spec, settings), settings)
        return _forward(model.pipe)

    from pipelines.device.loading import parameter_bytes

    model.n_bytes = before = parameter_bytes(model.pipe)
    outputs = {name: run(name) for name in ("style", "comfy/style_wan", "style_kohya", "style_lightx2v")}
    assert model.n_bytes > before  # the memory budget counts the adapters
    for name, output in outputs.items():
        assert torch.allclose(output, outputs["style"], atol=1e-5), name
    assert (outputs["style"] - base).abs().mean() > 1e-3
    assert torch.equal(run("style:0"), base)
    assert torch.equal(run(""), base)  # no LoRAs: adapters off
    half, both, other = run("style:0.5"), run("style, other:-1"), run("other:-1")
    assert not torch.allclose(half, outputs["style"]) and not torch.allclose(half, base)
    assert not torch.allclose(both, outputs["style"], atol=1e-4) and not torch.allclose(both, other, atol=1e-4)
    # memory stays bounded: the active ones and at most MAX_IDLE idle adapters
    assert len(model.pipe.transformer.peft_config) <= 2 + adapters.MAX_IDLE
    assert not any("lora" in name for name, _ in model.pipe.text_encoder.named_modules())  # the prompt cache holds
    from pipelines.device import fastpath

    model.level = "resident"  # the fast path set up again (an out-of-memory retry) leaves q/k/v apart for the LoRAs
    fastpath.setup(model, settings, "cpu")
    assert model.optimisations["fused_qkv"] is False and not hasattr(model.pipe.transformer.blocks[0].attn1, "to_qkv")


def test_wan_2_2_experts_take_a_lora_by_its_name(tmp_path, data_dir, loras):
    import shutil

    shutil.copyfile(loras / "other.safetensors", loras / "other_low_noise.safetensors")
    settings = _settings(tmp_path, data_dir, loras)
    model = _loaded("wan-t2v-moe", data_dir, "wan2.2-t2v-a14b")
    adapters.use_loras(model, wan, check.check_loras("style, other_low_noise:0.5", model.spec, settings), settings)
    high, low = model.pipe.transformer.peft_config, model.pipe.transformer_2.peft_config
    assert len(high) == 1 and len(low) == 2  # style on both experts, the low-noise file on the second only
    (loras / "other_low_noise.safetensors").unlink()


# --- through the worker: clips, sidecars, switching, bad files ---------------------------------------------


@pytest.fixture(scope="module")
def lora_worker(tmp_path_factory, data_dir, loras):
    from pipelines.device.worker import GPUWorker

    worker = GPUWorker(_settings(tmp_path_factory.mktemp("run"), data_dir, loras))
    worker.start()
    assert worker.wait_ready(60)
    yield worker
    worker.stop()


def _clip(worker, loras_text: str):
    job = wait_finished(worker.submit("t2v", T2VRequest(loras=loras_text, **SMALL)), 300)
    assert job.state == JobState.DONE, job.error
    clip = job.result["clips"][0]
    sidecar = json.loads(Path(clip["sidecar"]).read_text(encoding="utf-8"))
    return _read_frames(Path(clip["video"]), 320, 320).astype(int), sidecar, Path(clip["video"])


def _resident(worker):
    spec = get_spec("wan2.1-t2v-1.3b")
    return worker.run_exclusive(lambda: worker.models.get(spec)[0], timeout=60)


def test_clips_with_loras(lora_worker, loras):
    plain, plain_sidecar, _ = _clip(lora_worker, "")
    assert plain_sidecar["settings"]["loras"] == [] and "loras" not in plain_sidecar
    styled, sidecar, video = _clip(lora_worker, "style")
    assert np.abs(styled - plain).mean() > 1.0  # the LoRA changes the clip
    assert sidecar["fast_path"]["prompt_cache_hit"] is True  # same prompt: its embeddings stay right
    assert plain_sidecar["fast_path"]["fused_qkv"] is True and sidecar["fast_path"]["fused_qkv"] is False
    digest = check.file_sha256(loras / "style.safetensors")
    entry = {"name": "style", "file": "style.safetensors", "strength": 1.0, "sha256": digest, "short_hash": digest[:10]}
    assert sidecar["settings"]["loras"] == [entry]
    assert sidecar["loras"]["adapters"] == [{**entry, "layout": "diffusers", "adapter": "loaded"}]
    assert sidecar["loras"]["loaded"] == ["style"] and sidecar["timings_s"]["loras"] >= 0
    assert digest[:10] in video.read_bytes().decode("latin-1")  # the mp4's comment tag
    comfy, comfy_sidecar, _ = _clip(lora_worker, "style_wan")  # the bare file name finds comfy/style_wan
    assert np.abs(comfy - styled).max() <= 1  # the two layouts of the same weights: the same clip
    assert comfy_sidecar["loras"]["adapters"][0]["layout"] == "wan-original"
    zero, zero_sidecar, _ = _clip(lora_worker, "style:0")
    assert np.abs(zero - plain).max() <= 1  # strength 0: as without
    assert zero_sidecar["loras"]["reused"] == ["style"] and zero_sidecar["loras"]["loaded"] == []
    both, both_sidecar, _ = _clip(lora_worker, "style:1, other:-1")
    assert np.abs(both - styled).mean() > 1.0
    assert [(a["name"], a["strength"], a["adapter"]) for a in both_sidecar["loras"]["adapters"]] == [
        ("style", 1.0, "reused"), ("other", -1.0, "loaded")]
    assert both_sidecar["settings"]["lora_hashes"].startswith(f"style: {digest[:10]}, other: ")
    assert lora_worker.models.load_counts == {"wan2.1-t2v-1.3b": 1}  # switching never reloaded the base model


def test_bad_files_are_refused_at_submit_and_a_failed_load_fails_its_job_only(lora_worker, loras, monkeypatch):
    lora_files.write_header(loras / "truncated.safetensors", {"diffusion_model.blocks.0.self_attn.q.lora_down.weight":
                                                               (4, 24)}, data=False)
    (loras / "garbage.safetensors").write_bytes(b"\xff" * 64)
    lora_files.write_header(loras / "for_14b.safetensors", {"diffusion_model.blocks.0.self_attn.q.lora_down.weight":
                                                            (4, 5120), "diffusion_model.blocks.0.self_attn.q.lora_up.weight": (5120, 4)})
    lora_files.write_header(loras / "for_i2v.safetensors", {"diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight":
                                                            (4, 24), "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight": (24, 4)})
    lora_files.write_header(loras / "sdxl.safetensors", {"lora_unet_down_blocks_0_attn1_to_q.lora_down.weight": (4, 320)})
    cases = {"truncated": "cut short", "garbage": "header says", "for_14b": "made for another size of Wan",
             "for_i2v": "image-to-video", "sdxl": "names no layer", "missing": "There is no LoRA missing.safetensors"}
    queued = len(lora_worker.queue)
    for name, why in cases.items():
        with pytest.raises(RequestError) as error:
            lora_worker.submit("t2v", T2VRequest(loras=f"style, {name}:0.5", **SMALL))
        assert f"{name}.safetensors" in str(error.value) and why in str(error.value), str(error.value)
    assert len(lora_worker.queue) == queued  # nothing queued

    from diffusers import WanPipeline

    def broken(self, *args, **kwargs):
        raise RuntimeError("simulated: out of host memory while reading")

    monkeypatch.setattr(WanPipeline, "load_lora_weights", broken)
    job = wait_finished(lora_worker.submit("t2v", T2VRequest(loras="fresh", **SMALL)), 300)
    assert job.state == JobState.FAILED and "The LoRA fresh.safetensors could not be loaded" in job.error
    monkeypatch.undo()
    model = _resident(lora_worker)
    assert "fresh" not in model.loras.values()
    _, sidecar, _ = _clip(lora_worker, "other:0.5")  # the next job succeeds, on the same resident model
    assert sidecar["settings"]["loras"][0]["strength"] == 0.5
    assert lora_worker.models.load_counts == {"wan2.1-t2v-1.3b": 1}


def test_the_benchmark_makes_loras_that_fit_and_reports_them(tmp_path):
    from pipelines.bench import lora_switch

    spec = get_spec("wan2.1-t2v-1.3b")
    paths = lora_switch.make_loras(tmp_path / "loras", spec, demo=True, rank=4)
    settings = Settings(data_dir=tmp_path, demo=True, loras_dir=str(tmp_path / "loras"))
    assert [c.info.layout for c in check.check_loras("bench_a, bench_b", spec, settings)] == ["wan-original"] * 2
    assert len(paths) == 2
    report = {"created": "now", "model": spec.title, "mode": "random weights", "device": "GPU", "rank": 64,
              "lora_mb": 176.0, "shape": "832x480", "model_loads": {spec.id: 1}, "fuse_s": 0.5,
              "jobs": [{"name": "A + B", "loras": "bench_a:1, bench_b:0.5", "switch_s": 0.01, "loaded": [],
                        "reused": ["bench_a", "bench_b"], "step_s": 0.2, "job_s": 3.0},
                       {"name": "B", "loras": "bench_b", "error": "boom"}],
              "forward_s": {"no LoRA": 0.1, "2 LoRAs fused": 0.1}}
    text = lora_switch.markdown(report)
    assert "| A + B | `bench_a:1, bench_b:0.5` | 0.010 | - | bench_a, bench_b | 0.2 | 3.0 |" in text
    assert "failed: boom" in text and "fusing took 0.5 s" in text


def test_out_of_memory_while_loading_a_lora_goes_to_the_memory_ladder(tmp_path, data_dir, loras, monkeypatch):
    import torch

    settings = _settings(tmp_path, data_dir, loras)
    model = _loaded("wan-t2v", data_dir, "wan2.1-t2v-1.3b")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(model.pipe, "load_lora_weights", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):  # not a RequestError: the ladder retries one level lower
        adapters.use_loras(model, wan, check.check_loras("style", model.spec, settings), settings)
    assert model.loras == {} and not getattr(model.pipe.transformer, "peft_config", None)

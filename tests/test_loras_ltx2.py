"""Creators' LoRAs on the real (tiny) LTX2Pipeline: LoRAs made with peft on the demo transformer and text
connectors, written in diffusers/peft, the LTX-2 trainer's (``diffusion_model.`` + lora_A/B) and ComfyUI's
(lora_down/lora_up + alpha) layouts, loaded through the app as named adapters. The layouts give the same output;
a LoRA changes the clip and strength 0 does not; two compose; switching keeps the base model resident; bad files
are refused at submit with the file named; the library lists LTX-2 LoRAs under LTX-2 only, Wan's under Wan only."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from pipelines.families import ltx2, ltx2_lora, wan
from pipelines.families.catalogue import CATALOGUE, get_spec
from pipelines.families.demo import ensure_demo_model
from pipelines.loras import adapters, check
from pipelines.loras.library import loras_for_model, scan_library
from pipelines.studio.jobs import JobState, RequestError
from pipelines.studio.settings import Settings
from pipelines.tasks.t2v import T2VRequest
from tests import lora_files
from tests.conftest import wait_finished
from tests.test_fastpath import _read_frames

RANK, ALPHA = 4, 8.0
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2", "proj_in", "audio_proj_in"]
LTX2_IDS = {spec.id for spec in CATALOGUE.values() if spec.family == "ltx2"}
WAN_IDS = {spec.id for spec in CATALOGUE.values() if spec.family == "wan"}
SMALL = dict(prompt="a dog running on the beach", model="ltx2-t2v", resolution="240p", aspect="16:9", frames=9, steps=2,
             guidance=3.0, fps=24, seed=11)  # 416 x 224


def peft_weights(model, targets: list[str], seed: int, scale: float = 0.3) -> dict:
    """``{"transformer_blocks.N.attn1.to_q.lora_A.weight": tensor, ...}``: a rank-4 LoRA made by peft on ``model``
    (a copy of a demo component), with seeded random A and B."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    model = inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets,
                                               init_lora_weights=False), model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}


_ORIGINAL = {"proj_in.": "patchify_proj.", "audio_proj_in.": "audio_patchify_proj.", "text_proj_in.": "aggregate_embed."}


def write_original(weights: dict, path: Path, comfy: bool, prefix: str = "diffusion_model.") -> Path:
    """Lightricks' names: the LTX-2 trainer's lora_A/B (alpha folded in: it writes none), or ComfyUI's
    lora_down/lora_up with an ``alpha`` per layer."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for key, value in weights.items():
        for new, old in _ORIGINAL.items():
            key = old + key.removeprefix(new) if key.startswith(new) else key
        if comfy:
            module = key.rsplit(".lora_", 1)[0]
            tensors[f"{prefix}{key}".replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up.")] = value
            tensors[f"{prefix}{module}.alpha"] = torch.tensor(ALPHA)
        else:
            tensors[prefix + key] = value * (ALPHA / RANK) if ".lora_A." in key else value
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_diffusers(weights: dict, path: Path) -> Path:
    """diffusers' own file (``LTX2Pipeline.save_lora_weights``), with peft's alpha in its metadata."""
    from diffusers import LTX2Pipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    LTX2Pipeline.save_lora_weights(path.parent, transformer_lora_layers=weights, weight_name=path.name,
                                   transformer_lora_adapter_metadata={"r": RANK, "lora_alpha": ALPHA,
                                                                      "target_modules": TARGETS})
    return path


def write_peft_with_alphas(components: dict, path: Path) -> Path:
    """peft keys under ``transformer.`` and ``connectors.`` with an ``alpha`` per layer, no metadata."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for component, weights in components.items():
        for key, value in weights.items():
            tensors[f"{component}.{key}"] = value
            tensors[f"{component}.{key.rsplit('.lora_', 1)[0]}.alpha"] = torch.tensor(ALPHA)
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def demo_folder(data_dir) -> Path:
    return ensure_demo_model("ltx2-t2v", data_dir / "demo_models", ltx2.DEMO_BUILDERS["ltx2-t2v"])


@pytest.fixture(scope="module")
def loras(demo_folder, data_dir, tmp_path_factory) -> Path:
    """The LoRA folder: ``style`` in three layouts (same weights), ``other``, ``words`` (connectors only), a Wan one."""
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    folder = tmp_path_factory.mktemp("loras")

    def transformer():
        return LTX2VideoTransformer3DModel.from_pretrained(demo_folder / "transformer")

    style, other = peft_weights(transformer(), TARGETS, 1), peft_weights(transformer(), TARGETS, 2)
    words = peft_weights(LTX2TextConnectors.from_pretrained(demo_folder / "connectors"), ["text_proj_in"], 3)
    write_diffusers(style, folder / "style.safetensors")
    write_original(style, folder / "comfy" / "style_comfy.safetensors", comfy=True)
    write_original(style, folder / "style_trainer.safetensors", comfy=False)
    write_diffusers(other, folder / "other.safetensors")
    write_original(words, folder / "words.safetensors", comfy=True, prefix="text_embedding_projection.")
    write_peft_with_alphas({"transformer": style, "connectors": words}, folder / "style_words.safetensors")
    wan_demo = ensure_demo_model("wan-t2v", data_dir / "demo_models", wan.DEMO_BUILDERS["wan-t2v"])
    lora_files.write_diffusers(lora_files.peft_weights(wan_demo, seed=1), folder / "wan_style.safetensors")
    return folder


def _settings(tmp_path: Path, data_dir: Path, loras: Path, demo: bool = True) -> Settings:
    return Settings(outputs_dir=tmp_path / "outputs", data_dir=data_dir, demo=demo, loras_dir=str(loras))


# --- the rules without torch: layouts, layers, reasons --------------------------------------------------------


def test_layer_sizes_are_the_models_own():
    """``layers`` from config numbers: the demo build's and the shipped real-size configs' (meta device)."""
    import torch

    from pipelines.families.base import meta_component

    def linear(model, prefix):
        return {f"{prefix}.{n}": tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}

    tiny = ltx2.tiny_components()
    assert ltx2_lora.layers(get_spec("ltx2-t2v"), True) == {**linear(tiny["transformer"], "transformer"),
                                                            **linear(tiny["connectors"], "connectors")}
    real = {**linear(meta_component("ltx2-t2v", "transformer"), "transformer"),
            **linear(meta_component("ltx2-t2v", "connectors"), "connectors")}
    assert ltx2_lora.layers(get_spec("ltx2-i2v-distilled"), False) == real and len(real) > 1000


def test_layouts_and_renames():
    assert ltx2_lora.layout_of(["diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight"]) == "ltx2-original"
    assert ltx2_lora.layout_of(["transformer_blocks.0.attn1.to_q.lora_down.weight"]) == "ltx2-original"
    assert ltx2_lora.layout_of(["base_model.model.transformer_blocks.0.attn1.to_q.lora_A.weight"]) == "diffusers"
    assert ltx2_lora.layout_of(["transformer.proj_in.lora_A.weight", "connectors.text_proj_in.lora_B.weight"]) == "diffusers"
    assert ltx2_lora.layout_of(["diffusion_model.x.weight"]) == ""
    rename = ltx2_lora.renamed
    assert rename("base_model.model.transformer_blocks.0.ff.net.2.lora_B.weight", "diffusers") == (
        "transformer.transformer_blocks.0.ff.net.2.lora_B.weight")
    assert rename("patchify_proj.lora_down.weight", "ltx2-original") == "diffusion_model.patchify_proj.lora_A.weight"
    assert rename("text_embedding_projection.aggregate_embed.lora_up.weight", "ltx2-original") == (
        "text_embedding_projection.aggregate_embed.lora_B.weight")
    assert ltx2_lora.diffusers_layer("diffusion_model.adaln_single.linear.lora_A.weight") == ("transformer.time_embed.linear", "A")
    assert ltx2_lora.diffusers_layer("text_embedding_projection.aggregate_embed.alpha") == ("connectors.text_proj_in", "alpha")


def test_reasons_name_what_is_wrong():
    spec = get_spec("ltx2-t2v")
    q = "diffusion_model.transformer_blocks.{}.attn1.to_q.lora_{}.weight"

    def why(shapes, demo=True):
        return ltx2_lora.check(spec, shapes, demo)[1]

    assert why({q.format(0, "A"): (4, 16), q.format(0, "B"): (16, 4)}) == ""
    assert why({q.format(0, "A"): (4, 4096), q.format(0, "B"): (4096, 4)}, demo=False) == ""
    assert "is 4096 x 4096, but LTX-2 19B (video + audio) (demo size)'s is 16 x 16 (made for another LTX" in why(
        {q.format(0, "A"): (4, 4096), q.format(0, "B"): (4096, 4)})
    assert "3 transformer blocks; LTX-2 19B (video + audio) (demo size) has 2" in why({q.format(2, "A"): (4, 16),
                                                                                      q.format(2, "B"): (16, 4)})
    assert "only half a LoRA" in why({q.format(0, "A"): (4, 16)})
    assert "the ranks differ" in why({q.format(0, "A"): (4, 16), q.format(0, "B"): (16, 8)})
    assert "text-encoder layers" in why({q.format(0, "A"): (4, 16), q.format(0, "B"): (16, 4),
                                         "text_encoder.layers.0.q_proj.lora_A.weight": (4, 32)})
    assert "it is a Wan LoRA" in why({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": (4, 24),
                                      "diffusion_model.blocks.0.self_attn.q.lora_up.weight": (24, 4)})
    assert "it is a Wan LoRA" in why({"transformer.blocks.0.attn1.to_q.lora_A.weight": (4, 24)})
    assert "no LoRA layout LTX-2 reads" in why({"lora_unet_down_blocks_0_attn1_to_q.lora_down.weight": (4, 320)})
    assert "is not in" in why({"transformer.transformer_blocks.0.attn1.to_gate_logits.lora_A.weight": (4, 16),
                               "transformer.transformer_blocks.0.attn1.to_gate_logits.lora_B.weight": (2, 4)})
    # and Wan refuses an LTX-2 file, saying it is one for LTX-2
    _, wan_why = wan.lora_check(get_spec("wan2.1-t2v-1.3b"), {q.format(0, "A"): (4, 16), q.format(0, "B"): (16, 4)}, True)
    assert "transformer_blocks.N (a LoRA for LTX-2" in wan_why


def test_the_library_lists_ltx2_loras_under_ltx2_only_and_the_page_shows_them(loras, tmp_path, data_dir):
    from ui.lora_picker import Library

    settings = _settings(tmp_path, data_dir, loras)
    found = {info.name: info for info in scan_library(settings)}
    for name in ("style", "comfy/style_comfy", "style_trainer", "other", "words", "style_words"):
        assert set(found[name].fits) == LTX2_IDS, (name, found[name].reason)
    assert found["style"].layout == "diffusers" and found["comfy/style_comfy"].layout == "ltx2-original"
    assert set(found["wan_style"].fits) == WAN_IDS
    assert "it is a Wan LoRA" in found["wan_style"].why_not["ltx2-t2v"]
    assert "a LoRA for LTX-2" in found["style"].why_not["wan2.1-t2v-1.3b"]
    fitting, other = loras_for_model(settings, "ltx2-i2v")
    assert "wan_style" in {i.name for i in other} and "style" in {i.name for i in fitting}
    page = Library.read(settings, "ltx2-t2v")  # what the T2V tab's picker lists for LTX-2
    assert "comfy/style_comfy" in [value for _, value in page.choices()] and not page.support
    assert "wan_style" not in [value for _, value in page.choices()]
    assert "style" not in [value for _, value in Library.read(settings, "wan2.1-t2v-1.3b").choices()]


# --- on the pipeline itself: every layout, strengths, composition, connectors ---------------------------------


def _forward(pipe):
    import torch

    generator = torch.Generator().manual_seed(0)
    video, audio, text = torch.randn(1, 8, 4, generator=generator), torch.randn(1, 4, 4, generator=generator), torch.randn(
        1, 6, 32, generator=generator)
    with torch.no_grad():
        out = pipe.transformer(hidden_states=video, audio_hidden_states=audio, encoder_hidden_states=text,
                               audio_encoder_hidden_states=text, timestep=torch.tensor([500.0]),
                               encoder_attention_mask=torch.ones(1, 6), audio_encoder_attention_mask=torch.ones(1, 6),
                               num_frames=2, height=2, width=2, fps=24.0, audio_num_frames=4, return_dict=False)
        words = pipe.connectors.text_proj_in(torch.randn(1, 6, 96, generator=generator))
    return torch.cat([out[0].flatten(), out[1].flatten()]), words


def test_layouts_strengths_composition_and_connectors(tmp_path, data_dir, demo_folder, loras):
    import torch
    from diffusers import LTX2Pipeline

    settings = _settings(tmp_path, data_dir, loras)
    model = types.SimpleNamespace(pipe=LTX2Pipeline.from_pretrained(demo_folder), spec=get_spec("ltx2-t2v"), loras={},
                                  optimisations={})
    base, base_words = _forward(model.pipe)

    def run(text):
        adapters.use_loras(model, ltx2, check.check_loras(text, model.spec, settings), settings)
        return _forward(model.pipe)

    outputs = {name: run(name)[0] for name in ("style", "style_comfy", "style_trainer")}
    for name, output in outputs.items():
        assert torch.allclose(output, outputs["style"], atol=1e-5), name
    assert (outputs["style"] - base).abs().mean() > 1e-3
    assert torch.equal(run("style:0")[0], base) and torch.equal(run("")[0], base)
    half, both, other = run("style:0.5")[0], run("style, other:-1")[0], run("other:-1")[0]
    assert not torch.allclose(half, outputs["style"]) and not torch.allclose(half, base)
    assert not torch.allclose(both, outputs["style"], atol=1e-4) and not torch.allclose(both, other, atol=1e-4)
    output, words = run("words")  # the text connectors only
    assert torch.equal(output, base) and (words - base_words).abs().mean() > 1e-3
    output, words_too = run("style_words")  # one file for both components: peft keys, alphas
    assert torch.allclose(output, outputs["style"], atol=1e-5) and torch.allclose(words_too, words, atol=1e-5)
    assert torch.equal(run("")[1], base_words)
    assert len(model.pipe.transformer.peft_config) <= 2 + adapters.MAX_IDLE
    assert not any("lora" in name for name, _ in model.pipe.text_encoder.named_modules())  # the prompt cache holds


# --- through the worker: clips, switching, bad files ---------------------------------------------------------


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
    return _read_frames(Path(clip["video"]), 416, 224).astype(int), sidecar


def test_clips_with_loras_and_bad_files_refused_at_submit(lora_worker, loras):
    plain, _ = _clip(lora_worker, "")
    styled, sidecar = _clip(lora_worker, "style")
    assert np.abs(styled - plain).mean() > 1.0  # the LoRA changes the clip
    assert sidecar["output"]["has_audio"] is True and sidecar["loras"]["adapters"][0]["layout"] == "diffusers"
    comfy, comfy_sidecar = _clip(lora_worker, "style_comfy")  # the bare file name finds comfy/style_comfy
    assert np.abs(comfy - styled).max() <= 1  # the two layouts of the same weights: the same clip
    assert comfy_sidecar["loras"]["adapters"][0]["layout"] == "ltx2-original"
    zero, zero_sidecar = _clip(lora_worker, "style:0")
    assert np.abs(zero - plain).max() <= 1 and zero_sidecar["loras"]["loaded"] == []  # strength 0: as without
    both, _ = _clip(lora_worker, "style:1, other:-1")
    assert np.abs(both - styled).mean() > 1.0

    lora_files.write_header(loras / "truncated.safetensors", {
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": (4, 16)}, data=False)
    lora_files.write_header(loras / "for_19b.safetensors", {
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": (4, 4096),
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": (4096, 4)})
    cases = {"truncated": "cut short", "for_19b": "made for another LTX model or size", "wan_style": "it is a Wan LoRA",
             "missing": "There is no LoRA missing.safetensors"}
    queued = len(lora_worker.queue)
    for name, why in cases.items():
        with pytest.raises(RequestError) as error:
            lora_worker.submit("t2v", T2VRequest(loras=f"style, {name}:0.5", **SMALL))
        assert f"{name}.safetensors" in str(error.value) and why in str(error.value), str(error.value)
    assert len(lora_worker.queue) == queued  # nothing queued
    _, sidecar = _clip(lora_worker, "other:0.5")  # the next job succeeds, on the same resident model
    assert sidecar["settings"]["loras"][0]["strength"] == 0.5
    assert lora_worker.models.load_counts == {"ltx2-t2v": 1}  # switching never reloaded the base model

"""LTX-2's reasons a LoRA does not fit, in Chinese: a real bad file for each reason ``ltx2_lora.check`` gives,
read by the real scan against the demo LTX-2 entry; each reason must come out in Chinese with its numbers, names
and keys carried over, and a reason added to ``ltx2_lora.py`` without a file here (they are counted in its source)
or without a Chinese pattern fails. The helpers are ``tests/test_lora_reasons.py``'s."""

from __future__ import annotations

from pathlib import Path

from tests.lora_files import write_header
from tests.test_lora_reasons import assert_chinese, lora, lora_settings, pattern_of, source_reasons  # noqa: F401

D = 16  # the demo LTX-2 transformer's video width (2 heads of 8); its audio stream is 8 wide, 2 blocks
T2V = "ltx2-t2v"
TITLE = "LTX-2 19B (video + audio)"
ORIGINAL = "diffusion_model.transformer_blocks.0.attn1.to_q"


def ltx2_files(folder: Path) -> dict[str, Path]:
    """One file per reason of ``ltx2_lora.check`` (each fails on the demo LTX-2 19B's layers), in every layout
    it reads: diffusers/peft, the LTX-2 trainer's (``diffusion_model.`` + lora_A/B), ComfyUI's (lora_down/up +
    alpha) and the text connectors' (``text_embedding_projection.``)."""
    good = lora("transformer.", "transformer_blocks.0.attn1.to_q", width=D, out=D)
    cases = {
        "text encoder": {**good, "text_encoder.layers.0.self_attn.q_proj.lora_A.weight": (4, 32)},
        "wan": {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": (4, 24),
                "diffusion_model.blocks.0.self_attn.q.lora_up.weight": (24, 4)},
        "no layout": {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)},  # SD's kohya keys
        "blocks": lora("diffusion_model.", "transformer_blocks.2.audio_attn1.to_k", width=8, out=8),
        "not in model": lora("transformer.", "transformer_blocks.0.attn1.to_gate_logits", width=D, out=2),  # not gated
        "alpha only": {f"{ORIGINAL}.alpha": (),
                       "diffusion_model.transformer_blocks.0.attn1.to_k.lora_down.weight": (4, D),
                       "diffusion_model.transformer_blocks.0.attn1.to_k.lora_up.weight": (D, 4)},
        "half": {"text_embedding_projection.aggregate_embed.lora_down.weight": (4, 96)},
        "no weights": {"transformer.transformer_blocks.0.ff.net.2.lora_B.bias": (D,)},
        "ranks": {"connectors.text_proj_in.lora_A.weight": (4, 96), "connectors.text_proj_in.lora_B.weight": (32, 8)},
        "size": lora("diffusion_model.", "transformer_blocks.0.attn1.to_q", width=4096, out=4096),
        "bias": {**lora("transformer.", "proj_in", width=4, out=D), "transformer.proj_in.lora_B.bias": (7,)},
    }
    return {name: write_header(folder / f"ltx2_{i}.safetensors", shapes) for i, (name, shapes) in enumerate(cases.items())}


def test_every_reason_ltx2_gives_is_in_chinese(lora_settings):  # noqa: F811 (the fixture)
    from pipelines.families.catalogue import CATALOGUE
    from pipelines.loras.library import loras_for_model

    files = ltx2_files(Path(lora_settings.loras_dir))
    unusable = {info.path: info for info in loras_for_model(lora_settings, T2V)[1]}
    reasons, patterns = {}, set()
    for name, path in files.items():
        reasons[name] = reason = unusable[path].why_not[T2V]
        assert reason.startswith(f"Not for {TITLE}: it"), (name, reason)
        assert assert_chinese(reason).startswith(f"不适用于 {TITLE}："), reason
        patterns.add(pattern_of(reason))
        for model_id in [spec.id for spec in CATALOGUE.values() if spec.task in ("t2v", "i2v")]:
            for info in loras_for_model(lora_settings, model_id)[1]:  # Wan's rules on LTX-2 files, too
                if info.path == path:
                    assert_chinese(info.why_not[model_id])
    assert len(patterns) == source_reasons("pipelines/families/ltx2_lora.py"), "a reason of LTX-2's without a file here"
    block = "transformer.transformer_blocks.0."
    layers = {"not in model": block + "attn1.to_gate_logits", "alpha only": block + "attn1.to_q",
              "half": "connectors.text_proj_in", "no weights": block + "ff.net.2", "ranks": "connectors.text_proj_in",
              "bias": "transformer.proj_in"}
    for name, layer in layers.items():  # the layer as diffusers names it, whatever the file's layout
        assert layer in reasons[name] and layer in assert_chinese(reasons[name]), (name, reasons[name])
    zh = {name: assert_chinese(reason) for name, reason in reasons.items()}
    demo = "LTX-2 19B (video + audio)（演示尺寸）"
    assert f"为 4096 x 4096，而 {demo}的是 16 x 16（为另一个 LTX 模型或规模制作？）" in zh["size"]
    assert f"它有 3 个 transformer 块；{demo}只有 2 个。" in zh["blocks"]
    assert "text_encoder.layers.0.self_attn.q_proj" in zh["text encoder"] and "transformer 和文本连接器" in zh["text encoder"]
    assert "diffusion_model.blocks.0.self_attn.q.lora_down.weight" in zh["wan"] and "LTX-2" in zh["no layout"]
    assert f"的偏置形状为 [7]，而 {demo}的该层有 16 个值" in zh["bias"]
    assert "的 down 为 [4, 96]、up 为 [32, 8]：秩不一致" in zh["ranks"]


def test_the_reasons_are_the_real_sizes_reasons_too(lora_settings):  # noqa: F811 (the fixture)
    """Out of --demo the same files are checked against the shipped 19B config: other numbers, the same patterns."""
    from dataclasses import replace

    from pipelines.loras.library import loras_for_model

    real = replace(lora_settings, demo=False)
    files = ltx2_files(Path(real.loras_dir))
    unusable = {info.path: info for info in loras_for_model(real, T2V)[1]}
    for name, path in files.items():
        if name == "size":  # 4096 wide: the real 19B's width, so it fits there
            assert path not in unusable
            continue
        reason = unusable[path].why_not[T2V]
        assert "(demo size)" not in reason and assert_chinese(reason).startswith(f"不适用于 {TITLE}："), reason
    sizes = assert_chinese(unusable[files["bias"]].why_not[T2V])
    assert f"它的层 transformer.proj_in 为 16 x 4，而 {TITLE} 的是 4096 x 128" in sizes

"""The LoRA folder without torch: headers read by hand, what fits which model and why not, the page's
details (title, triggers, tags, thumbnail, speed-up), the request's ``loras`` text, checks at submit,
hashes, and the Batch CSV column. Files are written header-first by ``tests/lora_files.write_header``."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.families import wan_lora
from pipelines.families.catalogue import CATALOGUE, get_spec
from pipelines.loras import check, library
from pipelines.loras.library import LoraFileError, loras_for_model, parse_loras, read_header, scan_library
from pipelines.studio.jobs import RequestError
from pipelines.studio.settings import Settings
from pipelines.tasks.batch import read_batch
from pipelines.tasks.t2v import T2VRequest, validate_t2v
from tests.lora_files import write_header

ROOT = Path(__file__).resolve().parents[1]
WAN_IDS = {spec.id for spec in CATALOGUE.values() if spec.family == "wan"}


def wan_shapes(width: int, blocks: int = 2, rank: int = 4, i2v: bool = False, prefix="diffusion_model.") -> dict:
    """Original-layout keys of a rank-``rank`` LoRA on the attention of ``blocks`` blocks of a Wan ``width`` wide."""
    shapes = {}
    names = [f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"] + (["cross_attn.k_img"] if i2v else [])
    for n in range(blocks):
        for name in names:
            shapes[f"{prefix}blocks.{n}.{name}.lora_down.weight"] = (rank, width)
            shapes[f"{prefix}blocks.{n}.{name}.lora_up.weight"] = (width, rank)
            shapes[f"{prefix}blocks.{n}.{name}.alpha"] = ()
    return shapes


@pytest.fixture()
def folder(tmp_path):
    return tmp_path / "loras"


def settings_for(folder: Path, tmp_path: Path, demo: bool = True, **extra) -> Settings:
    return Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data", demo=demo, loras_dir=str(folder),
                    **extra)


def test_the_library_imports_without_torch():
    code = ("import sys; import pipelines.loras.library, pipelines.loras.check, pipelines.families.wan_lora; "
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_default_folder_is_loras_in_the_app_folder(tmp_path):
    assert library.loras_dir(Settings()) == ROOT / "loras"
    assert library.loras_dir(Settings(loras_dir=str(tmp_path))) == tmp_path


@pytest.mark.parametrize("content, why", [
    (b"1234", "too short"),
    (struct.pack("<Q", 10**9) + b"{}", "header says"),
    (struct.pack("<Q", 5) + b"nope!", "not the JSON"),
    (struct.pack("<Q", 2) + b"{}", "no tensors"),
])
def test_damaged_headers_say_why(tmp_path, content, why):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(LoraFileError, match=why):
        read_header(path)


def test_a_cut_short_file_is_found_from_its_header(tmp_path):
    path = write_header(tmp_path / "cut.safetensors", wan_shapes(24))
    shapes, _ = read_header(path)
    assert shapes["diffusion_model.blocks.0.self_attn.q.lora_down.weight"] == (4, 24)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(LoraFileError, match="cut short"):
        read_header(path)


def test_what_the_page_shows(folder, tmp_path):
    frequency = {"set1": {"red hat": 3, "smile": 9}, "set2": {"red hat": 8}}
    write_header(folder / "people" / "hat_style.safetensors", wan_shapes(24),
                 {"ss_output_name": "Red Hat", "ss_tag_frequency": json.dumps(frequency),
                  "modelspec.trigger_phrase": "redhat, wearing a red hat"})
    (folder / "people" / "hat_style.preview.png").write_bytes(b"png")
    write_header(folder / "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors", wan_shapes(24))
    write_header(folder / "causvid_8_steps.safetensors", wan_shapes(24))
    (folder / "causvid_8_steps.jpg").write_bytes(b"jpg")
    found = {info.name: info for info in scan_library(settings_for(folder, tmp_path))}
    hat = found["people/hat_style"]
    assert (hat.title, hat.triggers, hat.tags) == ("Red Hat", ["redhat", "wearing a red hat"], ["red hat", "smile"])
    assert hat.thumbnail == folder / "people" / "hat_style.preview.png"
    assert hat.speed is None and hat.layout == "wan-original" and hat.reason == ""
    assert found["Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32"].speed == {"steps": 4, "guidance": 1.0}
    assert found["causvid_8_steps"].speed == {"steps": 8, "guidance": 1.0}
    assert found["causvid_8_steps"].thumbnail == folder / "causvid_8_steps.jpg"


def test_demo_size_lora_fits_every_wan_in_demo_mode_and_only_wan(folder, tmp_path):
    write_header(folder / "tiny.safetensors", wan_shapes(24))
    info = scan_library(settings_for(folder, tmp_path))[0]
    assert set(info.fits) == WAN_IDS
    fitting, other = loras_for_model(settings_for(folder, tmp_path), "i2vgen-xl")
    assert not fitting and "I2VGen-XL cannot take LoRAs here" in other[0].reason
    _, other = loras_for_model(settings_for(folder, tmp_path), "ltx2-t2v")
    assert "LTX-2" in other[0].reason
    real = scan_library(settings_for(folder, tmp_path, demo=False))[0]
    assert real.fits == () and "is 24 x 24, but Wan 2.1 T2V 1.3B's is 1536 x 1536" in real.reason


def test_real_sizes_pick_their_models(folder, tmp_path):
    write_header(folder / "small.safetensors", wan_shapes(1536), data=False)  # header-only: refused as cut short
    write_header(folder / "t2v_1_3b.safetensors", wan_shapes(1536))
    write_header(folder / "i2v_14b.safetensors", wan_shapes(5120, i2v=True))
    write_header(folder / "too_deep.safetensors", wan_shapes(1536, blocks=31))
    write_header(folder / "te.safetensors", {**wan_shapes(1536), "lora_te_text_model_q.lora_down.weight": (4, 8)})
    write_header(folder / "sdxl.safetensors", {"lora_unet_down_blocks_0_attn1_to_q.lora_down.weight": (4, 320)})
    found = {info.name: info for info in scan_library(settings_for(folder, tmp_path, demo=False))}
    assert "cut short" in found["small"].reason
    assert found["t2v_1_3b"].fits == ("wan2.1-t2v-1.3b",)
    assert set(found["i2v_14b"].fits) == {"wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p", "wan2.1-i2v-14b-480p-turbo"}
    assert "image-to-video" in found["i2v_14b"].why_not["wan2.1-t2v-14b"]
    assert "31 transformer blocks; Wan 2.1 T2V 1.3B has 30" in found["too_deep"].reason
    assert "text-encoder layers" in found["te"].reason
    assert found["sdxl"].fits == () and "names no layer of Wan's transformer" in found["sdxl"].reason


def test_layer_sizes_match_the_shipped_configs():
    for model_id in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b"):
        config = json.loads((ROOT / "assets" / "model_configs" / f"{model_id}.json").read_text())["transformer"]["config"]
        heads, ffn, blocks, in_ch, out_ch, image_dim, _ = wan_lora.SIZES[model_id]
        assert (config["num_attention_heads"], config["ffn_dim"], config["num_layers"], config["in_channels"],
                config["out_channels"], config["image_dim"]) == (heads, ffn, blocks, in_ch, out_ch, image_dim)
        layers = wan_lora.layers(get_spec(model_id), demo=False)
        width = config["num_attention_heads"] * config["attention_head_dim"]
        assert layers["blocks.0.ffn.net.0.proj"] == (config["ffn_dim"], width)
        assert layers["condition_embedder.text_embedder.linear_1"] == (width, config["text_dim"])


def test_key_layouts_are_renamed_for_diffusers():
    assert wan_lora.renamed("lora_unet_blocks_3_cross_attn_k_img.lora_down.weight", "kohya") == \
        "diffusion_model.blocks.3.cross_attn.k_img.lora_down.weight"
    assert wan_lora.renamed("lora_unet_blocks_0_ffn_2.alpha", "kohya") == "diffusion_model.blocks.0.ffn.2.alpha"
    assert wan_lora.renamed("lora_unet_head_head.lora_up.weight", "kohya") == "diffusion_model.head.head.lora_up.weight"
    assert wan_lora.renamed("blocks.0.attn1.to_q.lora_A.weight", "diffusers") == "transformer.blocks.0.attn1.to_q.lora_A.weight"
    assert wan_lora.renamed("blocks.0.self_attn.q.lora_down.weight", "wan-original") == \
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight"
    assert wan_lora.layout_of(["diffusion_model.blocks.0.self_attn.q.diff_b"]) == "lightx2v"


def test_experts_of_wan_2_2_a14b_by_file_name():
    moe, single = get_spec("wan2.2-t2v-a14b"), get_spec("wan2.1-t2v-14b")
    assert wan_lora.experts(single, "any") == ({},)
    assert wan_lora.experts(moe, "motion") == ({}, {"load_into_transformer_2": True})
    assert wan_lora.experts(moe, "wan22/lightx2v_HIGH_noise") == ({},)
    assert wan_lora.experts(moe, "style_low_noise_model") == ({"load_into_transformer_2": True},)


def test_scans_read_a_file_again_only_when_it_changes(folder, tmp_path, monkeypatch):
    path = write_header(folder / "a.safetensors", wan_shapes(24))
    reads = []
    original = library.read_header
    monkeypatch.setattr(library, "read_header", lambda p: reads.append(p) or original(p))
    settings = settings_for(folder, tmp_path)
    scan_library(settings)
    scan_library(settings)
    assert len(reads) == 1
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    scan_library(settings)
    assert len(reads) == 2


def test_parse_loras():
    assert parse_loras("") == [] and parse_loras(None) == [] and parse_loras(" , ") == []
    assert parse_loras("style.safetensors:0.8, motion ; sub\\b:-2") == [("style", 0.8), ("motion", 1.0), ("sub/b", -2.0)]
    for text, key in [("a:x", "lora_strength_type"), ("a:2.5", "lora_strength_range"), ("a:nan", "lora_strength_type"),
                      ("../a", "lora_name"), ("/etc/a", "lora_name"), (":1", "lora_name"), ("a, a.safetensors:1", "lora_twice"),
                      (["a"], "lora_text")]:
        with pytest.raises(RequestError) as error:
            parse_loras(text)
        assert error.value.key == key, text
    assert library.format_loras(parse_loras("a:0.50,b")) == "a:0.5, b:1"


def test_checks_at_submit_name_the_file_and_why(folder, tmp_path):
    write_header(folder / "good.safetensors", wan_shapes(24))
    write_header(folder / "x" / "twin.safetensors", wan_shapes(24))
    write_header(folder / "y" / "twin.safetensors", wan_shapes(24))
    write_header(folder / "big.safetensors", wan_shapes(5120))
    (folder / "broken.safetensors").write_bytes(b"\x00" * 3)
    settings = settings_for(folder, tmp_path)
    spec = get_spec("wan2.1-t2v-1.3b")
    chosen = check.check_loras("good:0.5, x/twin", spec, settings)
    assert [(c.name, c.strength) for c in chosen] == [("good", 0.5), ("x/twin", 1.0)]
    cases = [("nothere", "lora_missing", "no LoRA nothere.safetensors"), ("twin", "lora_ambiguous", "x/twin, y/twin"),
             ("big", "lora_wrong_model", "big.safetensors cannot be used with Wan 2.1 T2V 1.3B"),
             ("broken", "lora_damaged", "broken.safetensors cannot be used"),
             (", ".join(f"l{n}" for n in range(9)), "lora_too_many", "at most 8")]
    for text, key, words in cases:
        with pytest.raises(RequestError) as error:
            check.check_loras(text, spec, settings)
        assert error.value.key == key and words in str(error.value), (text, str(error.value))
    with pytest.raises(RequestError) as error:
        check.check_loras("good", get_spec("i2vgen-xl"), settings)
    assert error.value.key == "lora_unsupported"
    with pytest.raises(RequestError) as error:
        check.check_loras("good", spec, settings_for(folder, tmp_path, parallel=2))
    assert error.value.key == "lora_parallel"
    with pytest.raises(RequestError, match="--fp8") as error:
        check.check_loras("good", spec, settings_for(folder, tmp_path, fp8=True))
    assert error.value.key == "lora_unsupported"


def test_validation_writes_the_text_one_way_and_submit_checks_the_files(folder, tmp_path):
    write_header(folder / "good.safetensors", wan_shapes(24))
    request = T2VRequest(prompt="a cat", resolution="240p", frames=9, steps=2, loras=" good.safetensors:0.50 ")
    assert validate_t2v(request, demo=True).loras == "good:0.5"  # no folder known: the text alone
    assert validate_t2v(request, demo=True, settings=settings_for(folder, tmp_path)).loras == "good:0.5"
    gone = validate_t2v(T2VRequest(prompt="a cat", resolution="240p", loras="gone"), demo=True,
                        settings=settings_for(folder, tmp_path))  # the files: at submit (tests/test_loras_submit.py)
    with pytest.raises(RequestError, match="no LoRA gone.safetensors"):
        check.check_request(gone, settings_for(folder, tmp_path))


def test_batch_csv_takes_a_loras_column(folder, tmp_path):
    write_header(folder / "good.safetensors", wan_shapes(24))
    text = 'prompt,loras\na cat,"good:0.7; "\na dog,\na bird,missing:1\n'
    plan = read_batch(text, "t2v", settings_for(folder, tmp_path), defaults={"resolution": "240p"})
    rows = plan.rows
    assert rows[0].ok and rows[0].request.loras == "good:0.7"
    assert rows[1].ok and rows[1].request.loras == ""
    assert not rows[2].ok and "no LoRA missing.safetensors" in str(rows[2].error)


def test_hashes_are_computed_once_and_kept(folder, tmp_path, monkeypatch):
    path = write_header(folder / "good.safetensors", wan_shapes(24))
    settings = settings_for(folder, tmp_path)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(check.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    digest = check.file_sha256(path, settings)
    assert digest == real(path.read_bytes()).hexdigest()
    assert check.file_sha256(path, settings) == digest and len(calls) == 1
    check._hashes.clear()  # a restart: read back from <data>/lora_hashes.json
    assert check.file_sha256(path, settings) == digest and len(calls) == 1
    chosen = check.check_loras("good:0.25", get_spec("wan2.1-t2v-1.3b"), settings)
    records = check.record(chosen, settings)
    assert records == [{"name": "good", "file": "good.safetensors", "strength": 0.25, "sha256": digest,
                        "short_hash": digest[:10]}]
    assert check.hashes_text(records) == f"good: {digest[:10]}"


def test_image_to_video_requests_take_loras_where_the_family_does(folder, tmp_path):
    from PIL import Image

    from pipelines.tasks.i2v import I2VRequest, validate_i2v

    write_header(folder / "good.safetensors", wan_shapes(24))
    image = tmp_path / "in.png"
    Image.new("RGB", (64, 48), "red").save(image)
    settings = settings_for(folder, tmp_path)
    request = I2VRequest(image=str(image), prompt="a cat", model="wan2.1-i2v-14b-480p", loras="good:0.3")
    assert validate_i2v(request, demo=True, settings=settings).loras == "good:0.3"
    with pytest.raises(RequestError) as error:
        validate_i2v(I2VRequest(image=str(image), prompt="a cat", model="i2vgen-xl", loras="good"), demo=True,
                     settings=settings)
    assert error.value.key == "lora_unsupported" and "I2VGen-XL" in str(error.value)

"""The reasons a LoRA does not fit, in Chinese (``ui/strings_lora_reasons.py``): a real bad file for each reason
Wan's rules (``pipelines/families/wan_lora.py``) and the LoRA library (``pipelines/loras/library.py``) give,
read by the real scan; each reason must come out in Chinese with its numbers, names and keys carried over.
A reason added to those modules without a file here (they are counted in their source) or without a Chinese
pattern fails. LTX-2's rules: ``tests/test_lora_reasons_ltx2.py``, with these helpers."""

from __future__ import annotations

import ast
import re
import struct
from pathlib import Path

import pytest

from tests.lora_files import write_header

W = 24  # the demo Wan transformer's width (2 heads of 12)
T2V = "wan2.1-t2v-1.3b"
ROOT = Path(__file__).resolve().parents[1]


def lora(prefix: str, layer: str, rank: int = 4, width: int = W, out: int = W) -> dict:
    return {f"{prefix}{layer}.lora_A.weight": (rank, width), f"{prefix}{layer}.lora_B.weight": (out, rank)}


def header_file(path: Path, raw: bytes, tail: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + tail)
    return path


def wan_files(folder: Path) -> dict[str, Path]:
    """One file per reason of ``wan_lora.check`` (each fails on the demo Wan 2.1 T2V 1.3B's layers)."""
    good = lora("transformer.", "blocks.0.attn1.to_q")
    cases = {
        "text encoder": {**good, "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 32)},
        "no layout": {"some.weight": (4, 4)},
        "ltx blocks": lora("transformer.", "transformer_blocks.0.attn1.to_q"),  # LTX-2's names
        "no layer": {**good, "transformer.blocks.0.attn1.to_q.weird": (4,)},
        "blocks": lora("transformer.", "blocks.5.attn1.to_q"),
        "image layers": lora("transformer.", "blocks.0.attn2.add_k_proj"),
        "not in model": lora("transformer.", "blocks.0.attn1.to_z"),
        "alpha only": {"diffusion_model.blocks.0.self_attn.q.alpha": (),
                       "diffusion_model.blocks.0.self_attn.k.lora_down.weight": (4, W),
                       "diffusion_model.blocks.0.self_attn.k.lora_up.weight": (W, 4)},
        "half": {"transformer.blocks.0.attn1.to_q.lora_A.weight": (4, W)},
        "ranks": {"transformer.blocks.0.attn1.to_q.lora_A.weight": (4, W),
                  "transformer.blocks.0.attn1.to_q.lora_B.weight": (W, 8)},
        "size": lora("transformer.", "blocks.0.attn1.to_q", width=5120, out=5120),
        "bias": {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": (4, W),
                 "diffusion_model.blocks.0.self_attn.q.lora_up.weight": (W, 4),
                 "diffusion_model.blocks.0.self_attn.q.diff_b": (7,)},
        "no weights": {"diffusion_model.blocks.0.self_attn.q.diff_b": (W,)},
    }
    return {name: write_header(folder / f"wan_{i}.safetensors", shapes) for i, (name, shapes) in enumerate(cases.items())}


def library_files(folder: Path) -> dict[str, Path]:
    """One file per reason of ``library.read_header`` (the unreadable one is a folder named like a file)."""
    unreadable = folder / "unreadable.safetensors"
    unreadable.mkdir()
    entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    return {
        "short": _raw(folder / "short.safetensors", b"\x10\x00"),
        "header size": _raw(folder / "header_size.safetensors", struct.pack("<Q", 1000) + b"{}"),
        "unreadable": unreadable,
        "not json": header_file(folder / "not_json.safetensors", b"\xff\xfe{"),
        "not an object": header_file(folder / "list.safetensors", b"[]"),
        "entry": header_file(folder / "entry.safetensors", b'{"a": 5}'),
        "adds up": header_file(folder / "adds_up.safetensors", b'{"a": {"dtype": "F32", "shape": [2, 2], '
                                                                  b'"data_offsets": [0, 8]}}', b"\0" * 8),
        "cut short": write_header(folder / "cut_short.safetensors", {"a": (2, 2)}, data=False),
        "no tensors": header_file(folder / "empty.safetensors", b'{"__metadata__": {"a": "b"}}'),
        "entry ok": header_file(folder / "ok.safetensors", ('{"a": %s}' % str(entry).replace("'", '"')).encode(),
                                b"\0" * 16),
    }


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def source_reasons(module: str) -> int:
    """How many reasons a module's source can give: ``return layout, "..."`` in ``check``, or ``raise
    LoraFileError(...)`` in ``read_header``."""
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2:
            reason = node.value.elts[1]
            if not (isinstance(reason, ast.Constant) and reason.value == ""):
                count += isinstance(reason, (ast.JoinedStr, ast.Constant))
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                getattr(node.exc.func, "id", "") == "LoraFileError":
            count += 1
    return count


def carried(english: str) -> list[str]:
    """What a translation must keep: the numbers, keys and layer names of the English sentence."""
    return re.findall(r"\d+|[\w.]*[._][\w.]+", english.replace(" (demo size)", ""))


def pattern_of(english: str) -> int:
    """Which pattern of ``ui/strings_lora_reasons.py`` reads a reason (the one inside "Not for ...: ")."""
    from ui.strings_lora_reasons import PATTERNS

    english = english.split(": ", 1)[1] if english.startswith("Not for ") else english
    return next(i for i, (pattern, _) in enumerate(PATTERNS) if pattern.fullmatch(english))


def assert_chinese(english: str) -> str:
    from ui.strings_lora_reasons import reason_text, reason_zh

    chinese = reason_zh(english)
    assert chinese, f"no Chinese for {english!r}: add a pattern to ui/strings_lora_reasons.py"
    assert re.search(r"[\u4e00-\u9fff]", chinese) and chinese != english
    for part in carried(english):
        assert part.strip(".") in chinese, (part, english, chinese)
    assert reason_text("zh", english) == chinese and reason_text("en", english) == english
    return chinese


@pytest.fixture()
def lora_settings(tmp_path, data_dir):
    from pipelines.studio.settings import Settings

    folder = tmp_path / "loras"
    folder.mkdir()
    return Settings(outputs_dir=tmp_path / "outputs", data_dir=data_dir, demo=True, loras_dir=str(folder))


def test_every_reason_wan_gives_is_in_chinese(lora_settings):
    from pipelines.families.catalogue import CATALOGUE
    from pipelines.loras.library import loras_for_model

    files = wan_files(Path(lora_settings.loras_dir))
    unusable = {info.path: info for info in loras_for_model(lora_settings, T2V)[1]}
    patterns = set()
    for name, path in files.items():
        reason = unusable[path].reason
        assert reason.startswith("Not for Wan 2.1 T2V 1.3B: it"), (name, reason)
        chinese = assert_chinese(reason)
        assert chinese.startswith("不适用于 Wan 2.1 T2V 1.3B：它"), chinese
        patterns.add(pattern_of(reason))
        videos = [spec.id for spec in CATALOGUE.values() if spec.task in ("t2v", "i2v")]
        for model_id in videos:  # against every model the page lists (other sizes and families say other things)
            for info in loras_for_model(lora_settings, model_id)[1]:
                if info.path == path:
                    assert_chinese(info.reason)
    assert len(patterns) == source_reasons("pipelines/families/wan_lora.py"), "a reason of Wan's without a file here"
    sizes = assert_chinese(unusable[files["size"]].reason)
    assert "为 5120 x 5120，而 Wan 2.1 T2V 1.3B（演示尺寸）的是 24 x 24" in sizes


def test_every_reason_the_library_gives_is_in_chinese(lora_settings):
    from pipelines.loras.library import LoraFileError, loras_for_model, read_header

    files = library_files(Path(lora_settings.loras_dir))
    ok = files.pop("entry ok")
    assert read_header(ok)[0] == {"a": (2, 2)}  # the hand-made header the bad ones differ from is a good one
    unusable = {info.path: info for info in loras_for_model(lora_settings, T2V)[1]}
    reasons = {}
    for name, path in files.items():
        if path.is_dir():  # not scanned: read directly
            with pytest.raises(LoraFileError) as caught:
                read_header(path)
            reasons[name] = str(caught.value)
        else:
            reasons[name] = unusable[path].reason
    for reason in reasons.values():
        assert_chinese(reason)
    patterns = {pattern_of(reason) for reason in reasons.values()}
    assert len(patterns) == source_reasons("pipelines/loras/library.py"), "a library reason without a file here"
    assert assert_chinese(reasons["short"]) == "文件只有 2 字节：太短，不是 safetensors 文件。"
    assert "1000" in assert_chinese(reasons["header size"])


def test_models_that_take_no_loras_say_why_in_chinese(lora_settings):
    from pipelines.families.catalogue import CATALOGUE, family_of
    from pipelines.loras.library import loras_for_model

    write_header(Path(lora_settings.loras_dir) / "fits_wan.safetensors", lora("transformer.", "blocks.0.attn1.to_q"))
    none = [spec for spec in CATALOGUE.values() if spec.task in ("t2v", "i2v") and family_of(spec).LORA_SUPPORT]
    assert none, "every video family takes LoRAs now: drop this test's patterns' reason"
    for spec in none:
        (info,) = loras_for_model(lora_settings, spec.id)[1]
        assert_chinese(family_of(spec).LORA_SUPPORT)
        assert assert_chinese(info.reason).startswith(f"{spec.title} 在这里不能使用 LoRA：")
    assert_chinese("no model of the catalogue takes LoRAs.")  # only when no family takes any
    assert_chinese("it has no LoRA rules.")  # pipelines/loras/check.py, for a family without LORA_SUPPORT


def test_an_unknown_reason_stays_in_english_and_the_picker_uses_the_chinese():
    from types import SimpleNamespace

    from ui.lora_picker import unusable_reason
    from ui.strings_lora_reasons import reason_text, reason_zh

    assert reason_zh("its layer is purple.") is None and reason_text("zh", "its layer is purple.") == "its layer is purple."
    assert reason_zh("Not for Wan: its layer is purple.") is None  # an unknown reason inside: all English
    info = SimpleNamespace(reason="Not for Wan 2.1 T2V 1.3B: it holds no tensors.", fits=(T2V,))
    assert unusable_reason("zh", info) == "不适用于 Wan 2.1 T2V 1.3B：文件中没有张量。（适用于 Wan 2.1 T2V 1.3B）"
    assert unusable_reason("en", info) == "Not for Wan 2.1 T2V 1.3B: it holds no tensors. (made for Wan 2.1 T2V 1.3B)"


def test_the_jobs_refusal_says_why_in_chinese_too(lora_settings):
    """``pipelines/loras/check.py`` refuses at submit with the same reasons; the page shows its error in the page's
    language (``ui.i18n.error_text``), the reason inside too."""
    from pipelines.families.catalogue import get_spec
    from pipelines.loras.check import check_loras
    from pipelines.studio.jobs import RequestError
    from ui.i18n import error_text

    folder = Path(lora_settings.loras_dir)
    write_header(folder / "big.safetensors", lora("transformer.", "blocks.0.attn1.to_q", width=5120, out=5120))
    (folder / "short.safetensors").write_bytes(b"\x10\x00")
    for name, chinese in (("big", "LoRA big.safetensors 不能用于 Wan 2.1 T2V 1.3B：不适用于 Wan 2.1 T2V 1.3B：它的层"),
                          ("short", "LoRA short.safetensors 不能用于 Wan 2.1 T2V 1.3B：文件只有 2 字节")):
        with pytest.raises(RequestError) as caught:
            check_loras(f"{name}:1", get_spec(T2V), lora_settings)
        error = caught.value
        assert error_text("zh", error.key, error.params, str(error)).startswith(chinese), str(error)
        assert error_text("en", error.key, error.params, str(error)) == str(error)
    assert_chinese("not with --fp8 weight storage yet; start without --fp8 to use them.")  # check.py with --fp8

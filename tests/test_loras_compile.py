"""``--compile`` with creators' LoRAs (``pipelines/device/lora_compile.py``): on the tiny demo Wan transformer,
compiled on the CPU (inductor and the C++ compiler) as ``--compile`` does, a LoRA, a strength change, another
LoRA and none again give the eager output, with the blocks still compiled; past ``MAX_STATES`` new adapter
states a job's blocks run eager and the compiled code is back afterwards."""

from __future__ import annotations

import types

from pipelines.device import fastpath, lora_compile
from pipelines.families import wan
from tests.test_loras_pipeline import _forward, _loaded, _settings, loras  # noqa: F401 (the LoRA folder fixture)

MODEL = "wan2.1-t2v-1.3b"


def _use(model, text: str, settings) -> str | None:
    """A job's LoRAs set as the video tasks set them; returns the sidecar's ``loras.compile``."""
    from pipelines.tasks.t2v import T2VRequest
    from pipelines.tasks.video import use_request_loras

    request = T2VRequest(prompt="a cat", model=MODEL, loras=text)
    section = use_request_loras(types.SimpleNamespace(settings=settings), model, wan, model.spec, request)[2]
    return None if section is None else section["compile"]


def test_compiled_blocks_with_loras_give_the_eager_output(tmp_path, data_dir, loras):  # noqa: F811
    import torch
    from torch._dynamo.utils import counters

    settings = _settings(tmp_path, data_dir, loras)
    eager, compiled = _loaded("wan-t2v", data_dir, MODEL), _loaded("wan-t2v", data_dir, MODEL)
    compiled.optimisations["compile"] = fastpath.compile_denoisers(compiled.pipe, settings)
    compiled.level = "resident"
    graphs = []
    decisions = []
    for text in ("", "style", "style:0.5", "other:-0.7", ""):
        _use(eager, text, settings)
        decisions.append(_use(compiled, text, settings))
        expected = _forward(eager.pipe)
        with fastpath.denoise_context(compiled, settings, False, None, 0.0, wan):
            got = _forward(compiled.pipe)
        assert torch.allclose(got, expected, atol=1e-4), (text, (got - expected).abs().max())
        graphs.append(counters["stats"]["unique_graphs"])
    assert decisions == [None, "recompiled", "compiled", "recompiled", "recompiled"]
    assert (_forward(eager.pipe) - got).abs().max() < 1e-4
    assert graphs[1] > graphs[0] and graphs[3] > graphs[2]  # the blocks ran compiled, recompiled for new states
    assert all(block._compiled_call_impl is not None for block in compiled.pipe.transformer.blocks)
    assert compiled.optimisations["compile_loras_eager"] is False


def test_past_the_cap_a_new_lora_state_runs_eager_and_known_ones_compiled(tmp_path, data_dir, loras):  # noqa: F811
    """The decision and its effect, with compiled blocks that never run compiled (torch.compile is lazy)."""
    settings = _settings(tmp_path, data_dir, loras)
    model = _loaded("wan-t2v", data_dir, MODEL)
    model.pipe.transformer.compile_repeated_blocks(fullgraph=True)
    model.optimisations["compile"] = "blocks"
    model.level = "resident"
    blocks = model.pipe.transformer.blocks
    compiled = [block._compiled_call_impl for block in blocks]
    texts = ["style", "other", "style, other:0.5", "", "fresh"]  # five states: the fifth is past MAX_STATES
    assert lora_compile.MAX_STATES == 4
    assert [_use(model, text, settings) for text in texts] == ["recompiled"] * 4 + ["eager"]
    with fastpath.denoise_context(model, settings, False, None, 0.0, wan):
        assert all(block._compiled_call_impl is None for block in blocks)  # this job: eager blocks
    assert [block._compiled_call_impl for block in blocks] == compiled  # the compiled code is kept
    assert _use(model, "style, other:0.5", settings) == "eager"  # "fresh" loaded: a state not seen either
    assert len(model.optimisations["compile_lora_states"]) == lora_compile.MAX_STATES
    model.optimisations["compile"] = None  # not compiled (a compile failure fell back): nothing to decide
    assert _use(model, "style", settings) is None and model.optimisations["compile_loras_eager"] is False

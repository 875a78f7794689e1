"""The LoRA files are checked once, at submit, by whichever executor queues the job: the local GPU worker and
the Ray cluster's front process alike (``loras.check.check_request``). The tasks' validation checks only the
text; a page submit reads the folder once; a bad file reaches the page in the page's language, named, and
nothing is queued. No Ray needed: the cluster executor queues in this process before any worker is asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.loras import check
from pipelines.studio.jobs import RequestError
from pipelines.studio.settings import Settings
from pipelines.tasks.t2v import T2VRequest, validate_t2v
from tests.lora_files import write_header
from tests.test_loras import wan_shapes

MODEL = "wan2.1-t2v-1.3b"


@pytest.fixture()
def settings(tmp_path) -> Settings:
    folder = tmp_path / "loras"
    write_header(folder / "good.safetensors", wan_shapes(24))
    write_header(folder / "big.safetensors", wan_shapes(5120))  # a 14B LoRA: not for the demo's 1.3B
    return Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data", demo=True, loras_dir=str(folder))


@pytest.fixture()
def file_checks(monkeypatch) -> list[str]:
    """The texts the real ``check_loras`` checked against the folder (calls with settings), in order."""
    calls: list[str] = []
    real = check.check_loras

    def counting(text, spec, settings):
        if settings is not None:
            calls.append(str(text))
        return real(text, spec, settings)

    monkeypatch.setattr(check, "check_loras", counting)
    return calls


def test_validation_checks_the_text_and_the_executor_the_files(settings, file_checks):
    request = validate_t2v(T2VRequest(prompt="a cat", model=MODEL, resolution="240p", loras=" gone.safetensors:0.50"),
                           demo=True, settings=settings)
    assert request.loras == "gone:0.5" and file_checks == []  # written one way; the folder is not read
    with pytest.raises(RequestError) as error:
        check.check_request(request, settings)
    assert error.value.key == "lora_missing" and "gone.safetensors" in str(error.value)
    with pytest.raises(RequestError, match="at most 8"):  # the text's own errors stay in validation
        validate_t2v(T2VRequest(prompt="a cat", model=MODEL, resolution="240p",
                                loras=", ".join(f"l{n}" for n in range(9))), demo=True, settings=settings)
    with pytest.raises(RequestError) as error:  # and what the app allows (here --fp8)
        validate_t2v(T2VRequest(prompt="a cat", model=MODEL, resolution="240p", loras="good"), demo=True,
                     settings=Settings(data_dir=settings.data_dir, fp8=True, loras_dir=settings.loras_dir))
    assert error.value.key == "lora_unsupported" and file_checks == ["gone:0.5"]  # check_request's, above


def test_the_cluster_executor_refuses_a_bad_lora_at_submit(settings, file_checks):
    from pipelines.scale.cluster import RayExecutor

    executor = RayExecutor(settings)  # not started: no Ray, no worker; submit only queues here
    cases = [("gone", "lora_missing", "gone.safetensors"), ("big:0.5", "lora_wrong_model", "big.safetensors")]
    for text, key, file in cases:
        request = validate_t2v(T2VRequest(prompt="a cat", model=MODEL, resolution="240p", loras=text), demo=True,
                               settings=settings)
        with pytest.raises(RequestError) as error:
            executor.submit("t2v", request)
        assert error.value.key == key and file in str(error.value)
    assert len(executor.queue) == 0 and executor.queue.pending() == []
    job = executor.submit("t2v", T2VRequest(prompt="a cat", model=MODEL, resolution="240p", loras="good:0.7"))
    assert executor.queue.pending() == [job] and file_checks == ["gone:1", "big:0.5", "good:0.7"]


def _page_run(worker, settings, api_name: str):
    from ui.app import build_demo

    demo = build_demo(worker, settings, None)
    return next(block_fn.fn for block_fn in demo.fns.values() if block_fn.api_name == api_name)


def test_a_page_submit_reads_the_lora_folder_once(settings, file_checks):
    import gradio as gr

    from pipelines.device.worker import GPUWorker

    worker = GPUWorker(settings)  # not started: the job waits in the queue
    run = _page_run(worker, settings, "t2v")
    fields = dict(model_id=MODEL, preset_name="Preview", prompt_text="a cat", negative_text="", res="240p",
                  asp="16:9", n_frames=9, seconds=0, n_steps=2, cfg=5.0, flow_shift=3.0, seed_value=7, frame_rate=16,
                  n_clips=1, lang="en", step_cache_threshold=0.0)
    first = next(run(**fields, loras="good:0.5"))
    assert file_checks == ["good:0.5"] and len(worker.queue) == 1
    job = worker.job(first[1])
    assert job is not None and job.request.loras == "good:0.5"
    file_checks.clear()
    for lang, words in (("en", "big.safetensors cannot be used"), ("zh", "big.safetensors")):
        with pytest.raises(gr.Error) as error:
            next(run(**{**fields, "lang": lang}, loras="big"))
        assert words in str(error.value.message)
    assert "cannot be used" not in str(error.value.message)  # the Chinese text, not the English one
    assert file_checks == ["big:1", "big:1"] and len(worker.queue) == 1  # once per submit; nothing more queued


def test_batch_rows_name_a_bad_lora_and_queue_nothing(settings):
    from pipelines.tasks.batch import BatchError, parse_batch

    text = "prompt,loras\na cat,good:0.5\na dog,big\n"
    with pytest.raises(BatchError) as error:
        parse_batch(text, "t2v", settings, defaults={"model": MODEL, "resolution": "240p"})
    assert error.value.params["rows"] == "3" and "big.safetensors" in str(error.value)


def test_check_request_leaves_requests_without_loras_alone(settings, file_checks):
    from pipelines.tasks.asr import ASRRequest

    check.check_request(ASRRequest(files=[str(Path("x.wav"))]), settings)
    check.check_request(T2VRequest(prompt="a cat", model=MODEL), settings)
    assert file_checks == []

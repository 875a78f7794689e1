"""LTX-2 in the app: ``/t2v`` and ``/i2v`` with its demo models write an mp4 with a video and an AAC audio stream
(ffprobe) and a sidecar with the preset, the steps and ``has_audio``; its frame and size rules are checked
before a job is queued."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from pipelines.studio.jobs import RequestError

T2V = dict(model_id="ltx2-t2v-distilled", preset_name="Distilled", prompt_text="a dog running on the beach",
           negative_text="", res="240p", asp="16:9", n_frames=17, seconds=0, n_steps=8, cfg=1.0, flow_shift=1.0,
           seed_value=11, frame_rate=24, n_clips=1)
I2V = dict(last_path=None, model_id="ltx2-i2v", preset_name="Preview", prompt_text="a cat turns its head",
           negative_text="", res="128p", asp="image", fit_mode="crop", n_frames=9, seconds=0, n_steps=3, cfg=4.0,
           flow_shift=1.0, seed_value=12, frame_rate=24, n_clips=1)

needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")


@pytest.fixture(scope="module")
def client(served_app):
    return Client(served_app.url, verbose=False)


def streams(path: Path) -> dict[str, dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_type,codec_name,width,height,nb_frames,sample_rate,duration", "-of", "json",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def written(outputs: Path, task: str, seed: int) -> tuple[Path, dict]:
    clips = list(outputs.rglob(f"*_{task}_{seed}.mp4"))
    assert len(clips) == 1, clips
    return clips[0], json.loads(clips[0].with_suffix(".json").read_text(encoding="utf-8"))


@needs_ffprobe
def test_t2v_distilled_clip_has_video_and_sound(client, served_app):
    status, _preview, _video, files, seed, _recorded = client.predict(**T2V, api_name="/t2v")
    assert "Done" in status and seed == "11"
    mp4, sidecar = written(served_app.outputs, "t2v", 11)
    found = streams(mp4)
    assert found["video"]["codec_name"] == "h264" and found["audio"]["codec_name"] == "aac"
    assert (found["video"]["width"], found["video"]["height"]) == (416, 224)  # 240p 16:9 at multiples of 32
    assert abs(float(found["audio"]["duration"]) - 17 / 24) < 0.05
    assert sidecar["settings"]["preset"] == "Distilled" and sidecar["settings"]["steps"] == 8
    assert sidecar["settings"]["model"] == "ltx2-t2v-distilled" and sidecar["settings"]["frames"] == 17
    assert sidecar["output"]["has_audio"] is True and sidecar["output"]["fps"] == 24
    assert sidecar["model"]["pipeline"] == "LTX2Pipeline"
    assert sidecar["fast_path"]["changes_output"]  # the distilled entry changes the output, like Turbo
    assert {Path(f).suffix for f in files} == {".mp4", ".json"}


@needs_ffprobe
def test_i2v_clip_has_video_and_sound(client, served_app, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(photo)
    status, *_ = client.predict(image_path=handle_file(str(photo)), **I2V, api_name="/i2v")
    assert "Done" in status
    mp4, sidecar = written(served_app.outputs, "i2v", 12)
    found = streams(mp4)
    assert found["audio"]["codec_name"] == "aac" and int(found["video"]["nb_frames"]) == 9
    assert found["video"]["width"] % 32 == 0 and found["video"]["height"] % 32 == 0
    assert sidecar["task"] == "i2v" and sidecar["output"]["has_audio"] is True
    assert sidecar["settings"]["preset"] == "Preview" and sidecar["settings"]["steps"] == 3
    assert sidecar["model"]["pipeline"] == "LTX2ImageToVideoPipeline"
    assert mp4.with_name(f"{mp4.stem}_input.png").is_file()


def test_a_silent_family_records_no_audio(client, served_app):
    client.predict(**{**T2V, "model_id": "wan2.1-t2v-1.3b", "preset_name": "Preview", "n_frames": 9, "n_steps": 2,
                      "cfg": 5.0, "flow_shift": 3.0, "frame_rate": 16, "seed_value": 13}, api_name="/t2v")
    _, sidecar = written(served_app.outputs, "t2v", 13)
    assert sidecar["output"]["has_audio"] is False


def test_frame_count_is_snapped_to_8n_plus_1_with_a_note():
    from pipelines.tasks.t2v import T2VRequest, validate_t2v

    request = validate_t2v(T2VRequest(prompt="a cat", model="ltx2-t2v", resolution="240p", frames=50, fps=24,
                                      steps=4, guidance=4.0, shift=1.0), demo=True)
    assert request.frames == 49
    assert any("8n+1" in note and "50 became 49" in note for note in request.notes)
    assert validate_t2v(T2VRequest(prompt="a cat", model="ltx2-t2v", resolution="240p", frames=2, fps=24),
                        demo=True).frames == 9


@pytest.mark.parametrize("aspect", ["16:9", "9:16", "1:1", "4:3", "3:4"])
@pytest.mark.parametrize("resolution", ["240p", "480p", "720p"])
def test_every_frame_size_is_a_multiple_of_32(resolution, aspect):
    from pipelines.tasks.t2v import T2VRequest, validate_t2v

    request = validate_t2v(T2VRequest(prompt="a cat", model="ltx2-t2v", resolution=resolution, aspect=aspect,
                                      frames=9, fps=24), demo=True)
    assert request.width % 32 == 0 and request.height % 32 == 0 and request.width * request.height > 0


def test_too_many_frames_is_refused_naming_the_value():
    from pipelines.tasks.t2v import T2VRequest, validate_t2v

    with pytest.raises(RequestError, match="300"):
        validate_t2v(T2VRequest(prompt="a cat", model="ltx2-t2v", resolution="240p", frames=300, fps=24), demo=True)


def test_i2v_sizes_follow_the_image_at_multiples_of_32(tmp_path):
    from pipelines.tasks.i2v import I2VRequest, validate_i2v

    photo = tmp_path / "tall.png"
    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(photo)
    request = validate_i2v(I2VRequest(image=str(photo), prompt="a cat", model="ltx2-i2v", resolution="256p",
                                      frames=12, fps=24, steps=3, guidance=4.0), demo=True)
    assert request.width % 32 == 0 and request.height % 32 == 0 and request.height > request.width
    assert request.frames == 9 and any("12 became 9" in note for note in request.notes)


def test_batch_rows_take_the_distilled_preset_and_its_rules(tmp_path):
    from pipelines.studio.settings import Settings
    from pipelines.tasks.batch import read_batch

    settings = Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data")  # real presets, not --demo
    text = "prompt,model,preset,frames\na fox at dawn,ltx2-t2v-distilled,distilled,\na fox at dusk,ltx2-t2v,,50\n"
    plan = read_batch(text, "t2v", settings, fmt="csv")
    first, second = (row.request for row in plan.rows)
    assert (first.model, first.preset, first.steps, first.guidance, first.frames) == (
        "ltx2-t2v-distilled", "Distilled", 8, 1.0, 121)
    assert (first.width, first.height) == (832, 480)
    assert second.frames == 49 and any("50 became 49" in note for note in second.notes)


@needs_ffprobe
def test_history_reuse_puts_the_clip_settings_back(client, served_app):
    from pipelines.studio.history import History
    from ui.history_tab import reuse_values

    client.predict(**{**T2V, "seed_value": 14}, api_name="/t2v")
    [entry] = [e for e in History(served_app.outputs).entries() if e.settings.get("seed") == 14]
    fields = dict.fromkeys(["model", "preset", "frames", "steps", "guidance", "fps", "prompt"])
    values = reuse_values(entry, fields, demo=False)
    assert values["model"] == "ltx2-t2v-distilled" and values["steps"] == 8 and values["fps"] == 24
    assert values["preset"]["value"] == "Distilled"  # the model's real presets hold it

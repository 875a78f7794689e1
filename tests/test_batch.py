"""Batches: text and CSV rows parsed and checked whole, then queued through the real worker, one job per row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.tasks import batch as batches
from pipelines.tasks.batch import BatchError, parse_batch, read_batch, submit_batch
from pipelines.studio.jobs import JobState, RequestError
from pipelines.studio.settings import Settings
from tests.conftest import wait_finished

ROOT = Path(__file__).resolve().parents[1]
FAST = {"preset": "Preview", "frames": 5, "steps": 1}  # a --demo T2V clip in a few seconds on a CPU


@pytest.fixture()
def local(tmp_path) -> Settings:
    """Settings with a data folder of this test's own (parsing needs no model)."""
    settings = Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data", demo=True)
    (settings.data_dir / "inputs").mkdir(parents=True)
    return settings


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)).save(path)
    return path


# --- parsing -------------------------------------------------------------------------------------------


def test_text_batch_one_prompt_per_line_with_the_preset_and_one_seed(local):
    text = "# shots for Monday\nA cat on a beach\n\n   \nA lighthouse in a storm\n# done\nA fox, at night\n"
    plan = parse_batch(text, "t2v", local, defaults={"preset": "Preview", "seed": -1})
    assert plan.fmt == "text"
    assert [row.row for row in plan.rows] == [2, 5, 7]  # the lines' numbers in the file
    assert [row.request.prompt for row in plan.rows] == ["A cat on a beach", "A lighthouse in a storm", "A fox, at night"]
    first = plan.rows[0].request
    assert (first.resolution, first.frames, first.steps, first.width, first.height) == ("240p", 9, 4, 416, 240)
    seeds = {row.request.seed for row in plan.rows}
    assert len(seeds) == 1 and seeds != {-1}  # "fixed": one random seed for the whole batch

    random_plan = parse_batch(text, "t2v", local, defaults={"preset": "Preview", "seed": 5}, seed_policy="random")
    assert len({row.request.seed for row in random_plan.rows}) == 3


def test_csv_rows_carry_their_own_settings_over_the_defaults(local):
    text = (
        "Prompt,Seed,Steps,Resolution,Aspect,negative prompt\n"
        "A cat,7,2,,,\n"
        '"A beach, at dusk\nwide shot",8,,480p,1:1,blurry\n'
        "# a comment row\n"
        "A dog,9,3,240p,9:16,\n"
    )
    plan = parse_batch(text, "t2v", local, defaults={"preset": "Preview", "steps": 5})
    assert plan.fmt == "csv"  # found from the header, without a file name
    assert [row.row for row in plan.rows] == [2, 3, 6]  # the quoted prompt spans lines 3 and 4
    cat, beach, dog = (row.request for row in plan.rows)
    assert (cat.seed, cat.steps, cat.resolution) == (7, 2, "240p")
    assert (beach.prompt, beach.steps, beach.width, beach.height) == ("A beach, at dusk\nwide shot", 5, 624, 624)
    assert beach.negative_prompt == "blurry"
    assert (dog.steps, dog.width, dog.height) == (3, 240, 416)


def test_unknown_column_names_the_header_row_and_what_is_allowed(local):
    with pytest.raises(RequestError) as raised:
        read_batch("prompt,stpes\nA cat,2\n", "t2v", local, fmt="csv")
    assert raised.value.key == "batch_column_unknown"
    assert raised.value.params["row"] == 1 and raised.value.params["column"] == "stpes"
    assert "steps" in raised.value.params["allowed"]
    with pytest.raises(RequestError) as raised:
        read_batch("a cat", "t2v", local, defaults={"stpes": 2})
    assert raised.value.key == "batch_setting_unknown"


def test_bad_rows_are_reported_with_their_numbers_and_nothing_is_queued(local, worker):
    lines = ["prompt,steps,seed"] + [f"shot {n},1,{n}" for n in range(2, 40)]
    lines[36] = "shot 37,many,37"  # line 37 of the file
    lines[20] = ",1,21"  # line 21: no prompt
    plan = read_batch("\n".join(lines), "t2v", local, defaults={"preset": "Preview"})
    assert [row.row for row in plan.errors] == [21, 37]
    assert plan.errors[1].error.key == "steps_type"
    assert plan.errors[0].error.key == "prompt_empty"
    assert sum(1 for row in plan.rows if row.ok) == 36
    with pytest.raises(BatchError) as raised:
        submit_batch(worker, plan)
    assert raised.value.key == "batch_invalid" and raised.value.params["rows"] == "21, 37"
    assert "Row 37: Steps must be a whole number" in str(raised.value)
    assert worker.status()["queue"] == 0 and worker.status()["current"] is None


def test_image_and_audio_paths_stay_inside_the_apps_folders(local, tmp_path):
    inside = _photo(local.data_dir / "inputs" / "shots" / "cat.png")
    elsewhere = _photo(tmp_path / "private" / "cat.png")
    text = (
        "image,prompt\n"
        "shots/cat.png,relative to the inputs folder\n"
        f"{inside},absolute inside\n"
        f"{elsewhere},outside\n"
        "../../private/cat.png,climbs out\n"
        "shots/missing.png,missing\n"
    )
    plan = read_batch(text, "i2v", local, defaults={"preset": "Quick preview"})
    assert [row.ok for row in plan.rows] == [True, True, False, False, False]
    assert plan.rows[0].request.image == str(inside.resolve())
    assert [row.error.key for row in plan.errors] == ["batch_path_outside", "batch_path_outside", "batch_file_missing"]
    assert plan.errors[0].error.params["folder"] == str(local.data_dir / "inputs")

    audio = read_batch(f"{elsewhere}\n", "asr", local)
    assert audio.rows[0].error.key == "batch_path_outside"


def test_plain_text_i2v_rows_share_the_default_image(local):
    photo = _photo(local.data_dir / "inputs" / "one.png")
    plan = parse_batch("turns its head\nwalks away\n", "i2v", local,
                       defaults={"image": str(photo), "preset": "Quick preview", "seed": 3})
    assert [Path(row.request.image).name for row in plan.rows] == ["one.png", "one.png"]
    assert {row.request.seed for row in plan.rows} == {3}
    with pytest.raises(BatchError) as raised:
        parse_batch("no image anywhere\n", "i2v", local)
    assert raised.value.errors[0].error.key == "i2v_image_missing"


def test_asr_rows_files_and_settings(local):
    (local.data_dir / "inputs" / "a.wav").write_bytes(b"RIFF")
    (local.data_dir / "inputs" / "b.wav").write_bytes(b"RIFF")
    plan = parse_batch("files,language,word_timestamps,task\na.wav,en,yes,\nb.wav,,no,translate\na.wav;b.wav,zh,,\n",
                       "asr", local, defaults={"model": "whisper-small"})
    first, second, both = (row.request for row in plan.rows)
    assert (first.language, first.word_timestamps, first.task, first.model) == ("en", True, "transcribe", "whisper-small")
    assert (second.language, second.word_timestamps, second.task) == ("auto", False, "translate")
    assert [Path(f).name for f in both.files] == ["a.wav", "b.wav"]
    bad = read_batch("files,word_timestamps\na.wav,sometimes\n", "asr", local)
    assert bad.errors[0].error.key == "batch_bool"


def test_row_limit_empty_batches_and_unknown_presets(local):
    assert len(parse_batch("\n".join(f"shot {n}" for n in range(batches.MAX_ROWS)), "t2v", local).rows) == batches.MAX_ROWS
    with pytest.raises(RequestError) as raised:
        read_batch("\n".join(f"shot {n}" for n in range(batches.MAX_ROWS + 1)), "t2v", local)
    assert raised.value.key == "batch_too_many_rows" and raised.value.params["count"] == batches.MAX_ROWS + 1
    with pytest.raises(RequestError) as raised:
        read_batch("# only a comment\n\n", "t2v", local)
    assert raised.value.key == "batch_empty"
    plan = read_batch("prompt,preset\nA cat,Cinematic\n", "t2v", local)
    assert plan.errors[0].error.key == "batch_preset"
    too_long = read_batch("x" * 4001, "t2v", local)
    assert too_long.errors[0].error.key == "prompt_long"


def test_every_batch_error_key_has_english_and_chinese_text():
    from ui.i18n import STRINGS

    source = "".join(path.read_text(encoding="utf-8") for path in (ROOT / "pipelines" / "tasks").glob("batch*.py"))
    keys = set(re.findall(r'key="(batch_\w+)"', source)) | {"batch_path_outside", "batch_path_invalid", "batch_cancelled"}
    assert len(keys) > 10
    for lang in ("en", "zh"):
        missing = sorted(key for key in keys if f"err_{key}" not in STRINGS[lang])
        assert not missing, (lang, missing)


# --- through the worker --------------------------------------------------------------------------------


def test_a_batch_of_three_prompts_makes_three_clips_with_their_sidecars(worker, settings):
    plan = parse_batch("A cat on a beach\nA lighthouse\nA fox at night\n", "t2v", settings,
                       defaults={**FAST, "seed": 11})
    run = submit_batch(worker, plan, owner="tester")
    assert [job.owner for job in run.jobs] == ["tester"] * 3
    for job in run.jobs:
        wait_finished(job)
    assert run.finished and run.counts()["done"] == 3
    outcomes = run.outcomes()
    assert [o.ok for o in outcomes] == [True] * 3
    videos = [Path(o.outputs[0]) for o in outcomes]
    assert len(set(videos)) == 3 and all(v.suffix == ".mp4" and v.is_file() for v in videos)
    for row, video in zip((1, 2, 3), videos):
        sidecar = json.loads(video.with_suffix(".json").read_text(encoding="utf-8"))
        assert f"batch {run.id} row {row}" in sidecar["notes"]
        assert sidecar["settings"]["seed"] == 11 and sidecar["settings"]["steps"] == 1
    assert sorted(p.name for p in settings.outputs_dir.rglob("*.mp4")) == sorted(v.name for v in videos)


def test_stop_all_cancels_the_queued_rows(worker, settings):
    plan = parse_batch("one\ntwo\nthree\n", "t2v", settings, defaults=FAST)
    run = submit_batch(worker, plan)
    stopped = run.cancel(worker)  # at once: rows 2 and 3 cannot have started yet
    for job in run.jobs:
        wait_finished(job)
    assert stopped >= 2
    assert [job.state for job in run.jobs[1:]] == [JobState.CANCELLED, JobState.CANCELLED]
    assert [o.error_key for o in run.outcomes()[1:]] == ["batch_cancelled", "batch_cancelled"]
    assert len(list(settings.outputs_dir.rglob("*.mp4"))) <= 1  # at most the first row's clip


# --- the page's API ------------------------------------------------------------------------------------


def test_batch_check_and_queue_through_the_api(served_app):
    from gradio_client import Client

    client = Client(served_app.url, verbose=False)
    rows = "prompt,frames,steps,seed\nA cat,5,1,21\nA dog,5,1,22\n"
    common = dict(task_name="t2v", rows_text=rows, upload_path=None, model_id="wan2.1-t2v-1.3b",
                  preset_name="Preview", seed_value=-1, seed_policy="fixed", image_path=None)

    message, table = client.predict(**{**common, "rows_text": rows + ",5,1,23\n"}, api_name="/batch_check")
    assert "1 of 3" in message
    assert [r[0] for r in table["data"]] == [2, 3, 4] and "prompt" in table["data"][2][2].lower()

    with pytest.raises(Exception) as raised:
        client.predict(**{**common, "rows_text": rows + ",5,1,23\n"}, api_name="/batch_queue")
    assert "rows 4" in str(raised.value)
    assert not list(served_app.outputs.rglob("*.mp4"))  # nothing was queued

    message, table, batch_id, files = client.predict(**common, api_name="/batch_queue")
    assert "2 of 2" in message and batch_id
    assert [r[2] for r in table["data"]] == ["done", "done"]
    videos = sorted(Path(f).name for f in files if str(f).endswith(".mp4"))
    assert [name.endswith(("_t2v_21.mp4", "_t2v_22.mp4")) for name in videos] == [True, True]
    written = list(served_app.outputs.rglob("*_t2v_2[12].json"))
    assert len(written) == 2
    assert all(f"batch {batch_id} row" in " ".join(json.loads(p.read_text(encoding="utf-8"))["notes"]) for p in written)

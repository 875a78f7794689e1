"""``/i2v`` on the app launched with --demo, driven through gradio_client; the tab's size note."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from pipelines.media.ffmpeg import probe_video

GOOD = dict(
    last_path=None, model_id="i2vgen-xl", preset_name="Quick preview", prompt_text="a cat turns its head",
    negative_text="", res="128p", asp="image", fit_mode="crop", n_frames=8, seconds=0, n_steps=2, cfg=9.0,
    flow_shift=0, seed_value=42, frame_rate=16, n_clips=1,
)


@pytest.fixture(scope="module")
def client(served_app):
    return Client(served_app.url, verbose=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("i2v-inputs")
    rng = np.random.default_rng(2)
    good = folder / "photo.png"
    Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(good)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:200])
    return {"good": good, "corrupt": corrupt}


def i2v(client, image: Path, **changes):
    return client.predict(image_path=handle_file(str(image)), **{**GOOD, **changes}, api_name="/i2v")


def test_corrupt_file_gets_an_error_then_a_png_returns_a_clip(client, served_app, images):
    with pytest.raises(Exception) as raised:
        i2v(client, images["corrupt"])
    assert "corrupt.png" in str(raised.value) and "damaged or cut short" in str(raised.value)

    status, _preview, video, files, seed, recorded = i2v(client, images["good"])
    assert "Done" in status and seed == "42"
    info = probe_video(Path(video["video"] if isinstance(video, dict) else video))
    assert (info["frames"], info["width"], info["height"]) == (8, 224, 128)
    sidecar = json.loads(recorded)
    assert sidecar["task"] == "i2v" and sidecar["settings"]["seed"] == 42
    assert sidecar["input"]["width"] == 160 and sidecar["input"]["height"] == 90
    written = list(served_app.outputs.rglob("*_i2v_42.mp4"))
    assert written and written[0].with_suffix(".json").is_file()
    assert written[0].with_name(f"{written[0].stem}_input.png").is_file()
    assert sorted(Path(f).suffix for f in files) == [".json", ".mp4", ".png"]


def test_errors_follow_the_callers_language(served_app, images):
    chinese = Client(served_app.url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    with pytest.raises(Exception) as raised:
        i2v(chinese, images["corrupt"])
    assert "图片文件 corrupt.png 已损坏或不完整" in str(raised.value)


def test_size_note_shows_the_size_before_running(images):
    from ui.i2v_tab import size_note

    text, frame = size_note("en", str(images["good"]), "wan2.2-ti2v-5b-i2v", "256p", "1:1", "pad", 17, 24, demo=True)
    assert "**320 × 320** (padded from the 160 × 90 image)" in text
    assert frame.size == (320, 320)
    text, frame = size_note("zh", None, "i2vgen-xl", "256p", "image", "crop", 16, 16, demo=True)
    assert "请添加图片" in text and "448 × 256" in text and frame is None

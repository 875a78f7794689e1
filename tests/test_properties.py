"""Property tests (hypothesis): whatever parameters arrive, a request is either normalised or refused with a
message, and the GPU worker lives on.

- ``validate_t2v``, ``check_i2v`` (with generated images and broken files) and ``validate_asr`` get
  parameters of any type: None, negative, huge, NaN, strings, Unicode, lists, dicts. Each either returns
  a normalised request or raises ``RequestError`` with a message and a key; any other exception fails.
- ``resolve_user_path`` never lets a path out of the app's folders; ``safe_tag`` never lets a user's text
  become more than one plain file name.
- A real ``--demo`` ``GPUWorker`` gets generated requests (and things that are not requests at all):
  every job finishes, and a good job after them all still completes.

Example counts are small so the file runs in well under a minute on two CPU cores. The example database
is off (``database=None``: no failing example is replayed from an earlier run) and hypothesis keeps its
caches in the system's temporary folder, so a clean clone in CI runs just what runs here.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import re
import tempfile
import wave
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from pipelines.tasks.asr import MAX_FILES, ASRRequest, validate_asr
from pipelines.tasks.i2v import I2VRequest, check_i2v
from pipelines.studio.jobs import JobState, RequestError
from pipelines.studio.outputs import safe_tag
from pipelines.studio.paths import allowed_roots, is_inside, resolve_user_path
from pipelines.families.catalogue import get_spec
from pipelines.studio.settings import Settings
from pipelines.tasks.t2v import T2VRequest, validate_t2v
from tests.conftest import wait_finished

# Hypothesis keeps caches (its Unicode tables, constants read from our sources) in ``.hypothesis`` of the
# working directory, and fills them while pytest collects this module: point it at the temporary folder
# instead, before that happens. Nothing is written here; hypothesis creates the folder when it needs it.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cinescribe-hypothesis")
FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Values a caller may send for any parameter: right and wrong types, edge numbers, odd text.
ODD_TEXT = ["", " ", "nan", "-inf", "1e400", "0x10", "١٢", "²", "../../etc/passwd", "/etc/passwd", "C:\\Windows",
            "\x00", "a\nb", "你好", "🎬", "NUL", "480p", "16:9", "auto", "yue", "translate", "sequential"]
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**80, max_value=2**80)
           | st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 1e308, 2**32, 2**63])
           | st.text(max_size=40) | st.sampled_from(ODD_TEXT) | st.binary(max_size=8))
ANYTHING = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=2), max_leaves=5)
# The fields validation fills itself (width, height, notes) are not parameters anyone sends.
T2V_FIELDS = [f.name for f in dataclasses.fields(T2VRequest) if f.name not in ("width", "height", "notes")]
I2V_FIELDS = [f.name for f in dataclasses.fields(I2VRequest) if f.name not in ("width", "height", "notes", "image")]
ASR_FIELDS = [f.name for f in dataclasses.fields(ASRRequest) if f.name != "notes"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def refused_well(error: RequestError) -> None:
    assert str(error).strip(), "a refusal must say why"
    assert error.key, f"no translation key for {error}"


# --- text to video ------------------------------------------------------------------------------------


@FAST
@given(changes=st.dictionaries(st.sampled_from(T2V_FIELDS), ANYTHING, max_size=6))
def test_t2v_validation_normalises_or_refuses(changes):
    request = dataclasses.replace(T2VRequest(prompt="a cat", resolution="240p", frames=5, steps=2), **changes)
    for demo in (True, False):
        try:
            checked = validate_t2v(request, demo=demo)
        except RequestError as error:
            refused_well(error)
            continue
        spec = get_spec(checked.model)
        assert checked.prompt and checked.prompt == checked.prompt.strip()
        assert checked.width > 0 and checked.height > 0 and checked.width % 16 == 0 and checked.height % 16 == 0
        assert type(checked.frames) is int and 1 <= checked.frames <= spec.max_frames and checked.frames % 4 == 1
        assert type(checked.steps) is int and 1 <= checked.steps <= 200
        assert type(checked.seed) is int and 0 <= checked.seed < 2**32
        assert type(checked.clips) is int and checked.clips >= 1
        assert math.isfinite(checked.guidance) and math.isfinite(checked.shift)
        assert validate_t2v(checked, demo=demo).frames == checked.frames  # validating again changes nothing


# --- image to video -----------------------------------------------------------------------------------

IMAGE_FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"]
IMAGE_MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK"]
_names = itertools.count()


@st.composite
def image_files(draw, folder: Path) -> str:
    """A path to a generated file: a good image of any common format and mode, or a broken one."""
    from PIL import Image

    kind = draw(st.sampled_from(["image", "image", "image", "truncated", "random bytes", "empty", "missing",
                                 "folder", "text as .png"]))
    file_format = draw(st.sampled_from(IMAGE_FORMATS))
    path = folder / f"input{next(_names)}.{file_format.lower()}"
    if kind == "missing":
        return str(path)
    if kind == "folder":
        return str(folder)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(draw(st.binary(min_size=1, max_size=64)))
    elif kind == "text as .png":
        path = path.with_suffix(".png")
        path.write_text("this is not a picture", encoding="utf-8")
    else:
        mode = draw(st.sampled_from(IMAGE_MODES))
        size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
        image = Image.new(mode, size, color=draw(st.integers(0, 255)) if mode in ("L", "P", "1") else None)
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=file_format)
        except (OSError, KeyError, ValueError):  # a mode this format cannot hold
            image.convert("RGB").save(buffer, format=file_format)
        data = buffer.getvalue()
        if kind == "truncated":
            data = data[: draw(st.integers(1, max(1, len(data) - 1)))]
        path.write_bytes(data)
    return str(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the broken EXIF of cut-short TIFFs
def test_i2v_check_normalises_or_refuses(scratch):
    @settings(FAST, max_examples=200)
    @given(image=image_files(scratch), changes=st.dictionaries(st.sampled_from(I2V_FIELDS), ANYTHING, max_size=5))
    def check(image, changes):
        request = dataclasses.replace(I2VRequest(image=image, prompt="a cat", frames=8, steps=2), **changes)
        try:
            checked, source, last = check_i2v(request, demo=True)
        except RequestError as error:
            refused_well(error)
            return
        multiple = get_spec(checked.model).extra.get("size_multiple", 16)
        assert checked.width % multiple == 0 and checked.height % multiple == 0 and checked.width > 0
        assert source.image.mode == "RGB" and source.width >= 1 and source.height >= 1
        assert len(source.sha256) == 64
        assert checked.fit in ("crop", "pad") and type(checked.frames) is int and type(checked.steps) is int
        assert last is None or last.image.mode == "RGB"

    check()


# --- speech to text -----------------------------------------------------------------------------------


@FAST
@given(changes=st.dictionaries(st.sampled_from(ASR_FIELDS), ANYTHING, max_size=6))
def test_asr_validation_normalises_or_refuses(changes):
    request = dataclasses.replace(ASRRequest(files=["/data/talk.wav"]), **changes)
    try:
        checked = validate_asr(request, demo=True)
    except RequestError as error:
        refused_well(error)
        return
    assert 1 <= len(checked.files) <= MAX_FILES and all(isinstance(f, str) and f for f in checked.files)
    assert len(checked.names) == len(checked.files) and all(isinstance(n, str) for n in checked.names)
    assert get_spec(checked.model).task == "asr"
    assert checked.task in ("transcribe", "translate") and checked.mode in ("chunked", "sequential")
    assert isinstance(checked.word_timestamps, bool)
    assert type(checked.batch_size) is int and type(checked.max_new_tokens) is int and checked.max_new_tokens >= 0
    assert 10 <= checked.max_line_chars <= 120 and 1 <= checked.max_lines <= 4
    assert math.isfinite(checked.max_cue_seconds) and checked.max_duration_s > 0
    assert validate_asr(checked, demo=True).files == checked.files  # validating again changes nothing


# --- paths and file names -----------------------------------------------------------------------------

PATH_PARTS = ["..", "../..", "/", "\\", "etc", "passwd", "inputs", "outputs", "~", ".", "%2e%2e", "\x00", "a b",
              "你好", "C:", "//server/share"]


@FAST
@given(parts=st.lists(st.sampled_from(PATH_PARTS) | st.text(max_size=8), max_size=6), join=st.sampled_from(["/", "", "\\"]))
def test_no_user_path_leaves_the_app_folders(tmp_path_factory, parts, join):
    root = tmp_path_factory.getbasetemp() / "paths"
    app_settings = Settings(outputs_dir=root / "outputs", data_dir=root / "data")
    text = join.join(parts)
    try:
        path = resolve_user_path(text, app_settings, "image")
    except RequestError as error:
        refused_well(error)
        return
    assert path.is_absolute() and is_inside(path, allowed_roots(app_settings)), (text, path)


@FAST
@given(text=st.text(max_size=200) | st.sampled_from(ODD_TEXT + ["..", ".", "../../x", "a/../../b", "CON.wav"]),
       limit=st.integers(1, 80))
def test_safe_tag_is_one_plain_file_name(text, limit):
    tag = safe_tag(text, limit)
    assert re.fullmatch(r"[\w.-]+", tag) and len(tag) <= max(limit, len("output"))
    assert "/" not in tag and "\\" not in tag and "\x00" not in tag
    assert tag not in (".", "..") and not tag.startswith((".", "-"))


# --- the worker ---------------------------------------------------------------------------------------

WRONG = [None, "", "nan", math.nan, math.inf, -1, 0, 10**30, "abc", "../../etc/passwd", [], {}, True, "你好", "\x00"]


def _wav(path: Path, seconds: float = 1.0) -> str:
    """A short, quiet 16 kHz WAV: the silence gate answers it without running the model."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * int(16000 * seconds))
    return str(path)


def _png(path: Path) -> str:
    from PIL import Image

    Image.new("RGB", (40, 24), (200, 80, 20)).save(path)
    return str(path)


def _requests(folder: Path):
    """Generated jobs: cheap good values (seconds on a CPU) mixed with wrong ones, and things that are not
    requests at all."""
    wav, png = _wav(folder / "talk.wav"), _png(folder / "photo.png")
    broken = folder / "broken.mp3"
    broken.write_bytes(b"ID3 but nothing else")
    values = {
        "t2v": {"prompt": ["a cat", "", "猫" * 10, "x" * 5000], "resolution": ["240p", "1080p"], "frames": [1, 5, "5"],
                "steps": [1, "2"], "fps": [8, 16], "clips": [1], "seed": [-1, 7], "duration_s": [None, 0.3],
                "aspect": ["16:9", "1:1", "21:9"]},
        "i2v": {"image": [png, str(broken), str(folder / "missing.png"), str(folder)], "prompt": ["a cat", ""],
                "frames": [2, 8], "steps": [1], "resolution": ["128p", "4k"], "aspect": ["image", "1:1"],
                "fit": ["crop", "pad"], "last_image": [None, png], "clips": [1]},
        "asr": {"files": [[wav], [str(broken)], [wav, str(broken)], wav, [str(folder / "missing.wav")]],
                "language": ["auto", "en", "yue", "klingon"], "mode": ["chunked", "sequential"],
                "task": ["transcribe", "translate"], "batch_size": [0, 1], "max_new_tokens": [0, 4]},
    }
    cheap = {
        "t2v": T2VRequest(prompt="a cat", resolution="240p", frames=5, steps=1, fps=8),
        "i2v": I2VRequest(image=png, prompt="a cat", resolution="128p", frames=2, steps=1, fps=8),
        "asr": ASRRequest(files=[wav]),
    }

    def one(task: str):
        fields = values[task]
        return st.dictionaries(st.sampled_from(sorted(fields)), st.none(), max_size=4).flatmap(
            lambda chosen: st.fixed_dictionaries(
                {name: st.sampled_from(fields[name] + WRONG) for name in chosen}
            ).map(lambda changes: (task, dataclasses.replace(cheap[task], **changes)))
        )

    not_requests = st.tuples(st.sampled_from(["t2v", "i2v", "asr"]), st.sampled_from([None, {}, "a cat", 42, [png]]))
    return one("t2v") | one("i2v") | one("asr") | not_requests, cheap


def test_the_worker_survives_any_request(worker, tmp_path):
    generated, cheap = _requests(tmp_path)
    outcomes = {state: 0 for state in JobState}

    @settings(FAST, max_examples=8)
    @given(jobs=st.lists(generated, min_size=1, max_size=2))
    def submit_all(jobs):
        submitted = []
        for task, request in jobs:
            try:
                submitted.append(worker.submit(task, request, owner="property"))
            except RequestError as error:  # refused at the door is fine, with a message
                refused_well(error)
        for job in submitted:
            wait_finished(job, timeout=120)  # every job ends: no hang, however bad the request
            outcomes[job.state] += 1
            if job.state == JobState.FAILED:
                assert job.error.strip(), f"job {job.id} failed without saying why"
            assert job.state in (JobState.DONE, JobState.FAILED)
        assert worker.status()["queue"] == 0

    submit_all()
    assert outcomes[JobState.FAILED] > 0  # the generated requests did include bad ones
    job = wait_finished(worker.submit("t2v", cheap["t2v"], owner="property"), timeout=120)
    assert job.state == JobState.DONE, job.error  # and the worker still does good work afterwards
    assert Path(job.result["clips"][0]["video"]).is_file()

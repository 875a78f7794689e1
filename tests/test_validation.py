"""T2V request validation: fail fast with a message naming the value; soft fixes come with a note."""

from __future__ import annotations

import pytest

from pipelines.studio.jobs import RequestError
from pipelines.families.spec import frame_size, snap_frames
from pipelines.tasks.t2v import T2VRequest, validate_t2v


def check(**changes):
    return validate_t2v(T2VRequest(**{"prompt": "a cat", **changes}))


@pytest.mark.parametrize(
    "changes, key, text",
    [
        (dict(prompt=""), "prompt_empty", "prompt"),
        (dict(prompt="   \n"), "prompt_empty", "prompt"),
        (dict(prompt="x" * 5000), "prompt_long", "4000"),
        (dict(frames=0), "frames_range", "Number of frames must be between 1 and 161, not 0"),
        (dict(frames=100000), "frames_range", "not 100000"),
        (dict(frames="many"), "frames_type", "whole number"),
        (dict(frames=8.5), "frames_type", "whole number"),
        (dict(seed="abc"), "seed_type", "Seed must be a whole number"),
        (dict(seed=-2), "seed_range", "Seed"),
        (dict(steps=0), "steps_range", "Steps"),
        (dict(guidance=float("nan")), "guidance_type", "Guidance"),
        (dict(fps=0), "fps_range", "Frames per second"),
        (dict(clips=100), "clips_range", "Number of clips"),
        (dict(model="nope"), "model_unknown", "Unknown model"),
        (dict(resolution="720p"), "resolution", "offers 480p"),
        (dict(aspect="2:1"), "aspect", "Aspect ratio"),
        (dict(duration_s=100), "duration_range", "Duration"),
    ],
)
def test_bad_values_are_refused_with_a_message(changes, key, text):
    with pytest.raises(RequestError) as raised:
        check(**changes)
    assert raised.value.key == key
    assert text in str(raised.value)


def test_frames_snap_to_4n_plus_1_with_a_note():
    request = check(frames=80)
    assert request.frames == 81
    assert request.notes == ["Wan makes 4n+1 frames: 80 became 81."]
    assert check(frames=81).notes == []


def test_notes_survive_a_second_validation():
    """The page validates before queueing and the worker again: the rounding note must reach the user."""
    once = check(frames=80)
    twice = validate_t2v(once)
    assert twice.notes == ["Wan makes 4n+1 frames: 80 became 81."]


def test_duration_sets_frames_from_fps():
    assert check(duration_s=5, fps=16).frames == 81
    assert check(duration_s=2, fps=16).frames == 33


def test_random_seed_is_drawn_and_numbers_are_coerced():
    request = check(seed=-1, steps="12", guidance="4.5", frames=" 33 ")
    assert 0 <= request.seed < 2**31
    assert (request.steps, request.guidance, request.frames) == (12, 4.5, 33)
    assert (request.width, request.height) == (832, 480)


def test_demo_mode_offers_small_sizes():
    assert validate_t2v(T2VRequest(prompt="x", resolution="240p"), demo=True).width == 416
    with pytest.raises(RequestError):
        validate_t2v(T2VRequest(prompt="x", resolution="240p"), demo=False)


def test_frame_sizes_follow_the_models_multiple():
    assert frame_size("480p", "16:9") == (832, 480)
    assert frame_size("720p", "16:9", 32) == (1280, 704)
    for resolution in ("480p", "720p"):
        for aspect in ("16:9", "9:16", "1:1", "4:3", "3:4"):
            width, height = frame_size(resolution, aspect)
            assert width % 16 == 0 and height % 16 == 0
    assert [snap_frames(n) for n in (1, 2, 3, 4, 79, 81, 83)] == [1, 1, 5, 5, 81, 81, 85]

"""Output files: never overwritten, written atomically, names safe."""

from __future__ import annotations

import datetime as dt
import errno

import numpy as np
import pytest

from pipelines.media.ffmpeg import probe_video, write_mp4
from pipelines.studio.outputs import output_stem, safe_tag, write_atomic, write_json_atomic


def test_same_name_twice_gets_a_suffix_and_keeps_both(tmp_path):
    stem = output_stem(tmp_path, "t2v", "42", dt.datetime(2026, 1, 2, 3, 4, 5))
    assert stem == tmp_path / "2026-01-02" / "030405_t2v_42"
    first = write_json_atomic(stem.with_suffix(".json"), {"n": 1})
    second = write_json_atomic(stem.with_suffix(".json"), {"n": 2})
    assert (first.name, second.name) == ("030405_t2v_42.json", "030405_t2v_42_2.json")
    assert '"n": 1' in first.read_text(encoding="utf-8")
    assert '"n": 2' in second.read_text(encoding="utf-8")


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def broken(path):
        path.write_bytes(b"half a clip")
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "clip.mp4", broken)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_said_plainly(tmp_path):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="disk holding .* is full"):
        write_atomic(tmp_path / "clip.mp4", full)
    assert list(tmp_path.iterdir()) == []


def test_file_names_from_users_are_sanitised():
    assert safe_tag("../../etc/passwd") == "etc-passwd"
    assert safe_tag("日本語 采访.wav") == "日本語-采访.wav"
    assert safe_tag("..") == "output" and safe_tag('a<b>:"c|?*') == "a-b-c"
    assert safe_tag("a b?c") == "a-b-c"


def test_mp4_plays_with_the_frames_given(tmp_path):
    frames = (np.random.default_rng(0).random((5, 32, 48, 3)) * 255).astype(np.uint8)
    path = write_atomic(tmp_path / "x.mp4", lambda temp: write_mp4(frames, temp, fps=8, comment='{"seed":1}'))
    info = probe_video(path)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (5, 48, 32, 8.0)

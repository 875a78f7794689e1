"""The subtitle formatter on its own: known segments in, SRT / WebVTT / text out, every rule checked."""

from __future__ import annotations

import re

import pytest

from pipelines.media.subtitles import (
    ARTICLES,
    Segment,
    SubtitleRules,
    Word,
    segments_to_cues,
    tidy_segments,
    timestamp,
    timestamped_text,
    to_srt,
    to_txt,
    to_vtt,
    width,
    wrap_balanced,
)

SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"
LONG = ("Hello and welcome to the studio. Today we talk about video and speech, and how to make subtitles "
        "that read well on any screen, large or small, without hurrying the viewer.")


def _seconds(groups) -> float:
    h, m, s, ms = (int(g) for g in groups)
    return h * 3600 + m * 60 + s + ms / 1000


def parse_srt(text: str) -> list[tuple[float, float, list[str]]]:
    """A strict SRT reader: numbered blocks from 1, a time line, one or more text lines, blank separators."""
    cues = []
    blocks = [b for b in text.strip("\n").split("\n\n")] if text.strip() else []
    for number, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(number), f"block {number} is numbered {lines[0]!r}"
        match = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert match, f"bad time line {lines[1]!r}"
        start, end = _seconds(match.groups()[:4]), _seconds(match.groups()[4:])
        assert len(lines) >= 3 and all(line.strip() for line in lines[2:]), f"block {number} has no text: {block!r}"
        cues.append((start, end, lines[2:]))
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, list[str]]]:
    assert text.startswith("WEBVTT\n\n")
    cues = []
    body = text[len("WEBVTT\n\n"):].strip("\n")
    for block in body.split("\n\n") if body else []:
        lines = block.split("\n")
        match = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", lines[0])
        assert match, f"bad time line {lines[0]!r}"
        assert len(lines) >= 2 and all(line.strip() and "-->" not in line for line in lines[1:])
        cues.append((_seconds(match.groups()[:4]), _seconds(match.groups()[4:]), lines[1:]))
    return cues


def assert_well_formed(cues, rules: SubtitleRules, duration: float) -> None:
    previous_end = 0.0
    for start, end, lines in (tuple(c) if isinstance(c, tuple) else (c.start, c.end, c.lines) for c in cues):
        assert 0 <= start <= end <= duration + 1e-3
        assert start >= previous_end - 1e-3, "cues overlap or run backwards"
        assert end - start <= rules.max_cue_seconds + 1e-3
        assert 1 <= len(lines) <= rules.max_lines
        assert all(width(line) <= rules.max_line_chars for line in lines), lines
        previous_end = end


def test_a_long_segment_is_split_into_cues_that_keep_every_rule_and_every_word():
    rules = SubtitleRules()
    segments = tidy_segments([Segment(0.0, 12.0, LONG)], 12.0)
    cues = segments_to_cues(segments, rules)
    srt = parse_srt(to_srt(cues))
    assert len(srt) >= 2
    assert_well_formed(srt, rules, 12.0)
    assert " ".join(line for _, _, lines in srt for line in lines).split() == LONG.split()
    assert srt[0][0] == 0.0 and srt[-1][1] == 12.0  # the segment's span is shared out, not stretched


def test_lines_are_balanced_and_the_first_cue_ends_at_the_sentence():
    cues = segments_to_cues(tidy_segments([Segment(0.0, 12.0, LONG)], 12.0))
    assert cues[0].lines[-1].endswith("studio.")
    two_line = [c for c in cues if len(c.lines) == 2]
    assert two_line
    for cue in two_line:
        first, second = (len(line) for line in cue.lines)
        assert abs(first - second) <= 12, cue.lines  # greedy filling would give 42 and a stub
    assert wrap_balanced("one two three four five six", 20) == ["one two three", "four five six"]


@pytest.mark.parametrize("max_line_chars, max_lines", [(20, 1), (32, 2), (42, 3)])
def test_other_rules_are_respected(max_line_chars, max_lines):
    rules = SubtitleRules(max_line_chars=max_line_chars, max_lines=max_lines, max_cue_seconds=3.0)
    cues = segments_to_cues(tidy_segments([Segment(1.0, 20.0, LONG)], 20.0), rules)
    assert_well_formed(parse_vtt(to_vtt(cues)), rules, 20.0)


def test_a_slow_segment_is_cut_by_duration_even_when_the_text_would_fit():
    rules = SubtitleRules(max_cue_seconds=7.0)
    cues = segments_to_cues(tidy_segments([Segment(0.0, 20.0, "Slow words spoken over twenty seconds")], 20.0), rules)
    assert len(cues) >= 3
    assert all(c.end - c.start <= 7.0 + 1e-9 for c in cues)
    one_word = segments_to_cues([Segment(5.0, 25.0, "Hmm")], rules)
    assert (one_word[0].start, one_word[0].end) == (5.0, 12.0)  # held at most 7 s, not 20


def test_chinese_is_split_between_characters_and_counts_double_width():
    text = "大家好，我哋今日講吓廣東話，同埋點樣整好睇嘅字幕。今日天氣好好，我哋一齊出去行吓啦。"
    rules = SubtitleRules(max_line_chars=42, max_lines=2)
    cues = segments_to_cues(tidy_segments([Segment(0.0, 8.0, text)], 8.0), rules)
    assert len(cues) >= 2
    assert "".join(line for cue in cues for line in cue.lines) == text  # no spaces invented
    for cue in cues:
        assert all(len(line) <= 21 for line in cue.lines)  # 21 wide characters = 42 columns
    assert width("字幕ab") == 6


def test_word_timestamps_give_the_cue_times():
    words = [Word(0.5 + i, 1.3 + i, f" word{i}") for i in range(12)]
    segment = Segment(0.0, 13.0, "".join(w.text for w in words), words)
    rules = SubtitleRules(max_line_chars=20, max_lines=1)
    cues = segments_to_cues(tidy_segments([segment], 13.0), rules)
    assert [c.lines for c in cues][:2] == [["word0 word1 word2"], ["word3 word4 word5"]]
    assert (cues[0].start, cues[0].end) == (0.5, 3.3)
    assert cues[1].start == pytest.approx(3.5)


def test_tidy_fills_open_ends_removes_overlaps_and_clamps_to_the_audio():
    raw = [
        Segment(0.0, 3.0, "  first\tpart "),
        Segment(2.5, 6.0, "overlaps the first"),  # merged windows can overlap slightly
        Segment(6.0, None, "open end"),  # Whisper cut off mid-word
        Segment(8.0, 9.0, "   "),  # nothing to show
        Segment(9.0, 40.0, "runs past the end\x00"),
        Segment(10.0, None, "after the end"),
    ]
    tidy = tidy_segments(raw, 10.0)
    assert [s.text for s in tidy] == ["first part", "overlaps the first", "open end", "runs past the end after the end"]
    assert [(s.start, s.end) for s in tidy] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 10.0)]


def test_the_last_open_segment_ends_with_the_audio():
    tidy = tidy_segments([Segment(1.0, 2.0, "a"), Segment(2.0, None, "b")], 4.5)
    assert tidy[-1].end == 4.5


def test_short_cues_are_held_longer_but_never_into_the_next():
    cues = segments_to_cues([Segment(1.0, 1.1, "Hi"), Segment(1.5, 3.0, "there"), Segment(9.0, 9.2, "end")])
    assert (cues[0].start, cues[0].end) == (1.0, 1.5)  # held until the next cue, not the full 0.7 s
    assert cues[2].end == pytest.approx(9.7)


@pytest.mark.parametrize(
    "seconds, srt, vtt",
    [
        (0, "00:00:00,000", "00:00:00.000"),
        (1.0005, "00:00:01,001", "00:00:01.001"),
        (59.9996, "00:01:00,000", "00:01:00.000"),  # rounding carries into the minutes
        (3599.9994, "00:59:59,999", "00:59:59.999"),
        (3600, "01:00:00,000", "01:00:00.000"),
        (36000 + 62.25, "10:01:02,250", "10:01:02.250"),
        (-0.2, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps(seconds, srt, vtt):
    assert timestamp(seconds) == srt
    assert timestamp(seconds, ".") == vtt


def test_formats_escape_what_would_break_them():
    cues = segments_to_cues([Segment(0.0, 2.0, "a --> b <i>x</i> & y")])
    srt, vtt = to_srt(cues), to_vtt(cues)
    assert parse_srt(srt)[0][2] == ["a → b <i>x</i> & y"]
    assert parse_vtt(vtt)[0][2] == ["a → b &lt;i&gt;x&lt;/i&gt; &amp; y"]


def test_no_speech_gives_valid_empty_files():
    assert parse_srt(to_srt([])) == []
    assert parse_vtt(to_vtt([])) == []
    assert to_txt([]) == "\n"


def test_text_and_page_transcript():
    segments = tidy_segments([Segment(0.0, 61.25, "One."), Segment(3661.0, 3662.0, "Two.")], 4000)
    assert to_txt(segments) == "One.\nTwo.\n"
    assert timestamped_text(segments) == "[00:00.0 → 01:01.2] One.\n[1:01:01.0 → 1:01:02.0] Two."


ARTICLE_TEXT = ("We walked along the river and saw a heron standing in the water, then the rain began and we ran to "
                "the old mill where a man was selling the best apples of the season, so we bought a bag of them.")


@pytest.mark.parametrize("chars,lines,seconds", [(20, 1, 7.0), (30, 2, 7.0), (42, 2, 3.0), (16, 2, 2.0)])
def test_cues_and_lines_never_end_on_an_article_and_keep_the_limits(chars, lines, seconds):
    rules = SubtitleRules(chars, lines, seconds)
    cues = segments_to_cues([Segment(0.0, 24.0, ARTICLE_TEXT)], rules)
    assert_well_formed(cues, rules, 24.0)
    assert " ".join(" ".join(cue.lines) for cue in cues).split() == ARTICLE_TEXT.split()  # nothing lost or moved
    for cue in cues:
        assert len(cue.lines) <= lines and all(width(line) <= chars for line in cue.lines)
        for line in cue.lines:
            assert line.split()[-1].lower() not in ARTICLES, cue.lines


def test_a_full_cue_ends_at_a_clause_boundary_when_there_is_one():
    rules = SubtitleRules(42, 1, 7.0)
    cues = segments_to_cues([Segment(0.0, 10.0, "After a long day at work, we went home and cooked a simple dinner for two.")],
                            rules)
    assert cues[0].lines[-1].endswith(",")

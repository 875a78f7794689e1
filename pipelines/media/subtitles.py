"""Transcript segments to subtitles: SRT, WebVTT, plain text, and the page's timestamped transcript.

Pure Python, no model needed. The rules (``SubtitleRules``) are the usual broadcast ones: at most
``max_line_chars`` characters per line (42; Chinese, Japanese and Korean characters count as two, being
twice as wide), ``max_lines`` lines per cue (2), ``max_cue_seconds`` on screen
(7 s). A segment that breaks them is split into several cues, at sentence ends when one is near, else at
word boundaries (between characters for Chinese, Japanese and the like), and the lines of a cue are
balanced. With word timestamps a cue takes the times of its words; without them a segment's time is shared
out in proportion to the characters. Cues never overlap and never run backwards.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field

READING_SECONDS_PER_CHAR = 0.06  # used only to guess the end of a segment Whisper left open
SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
CLAUSE_END = (",", ";", ":", "，", "、", "；", "：", "—")
# Words a cue or a line never ends on (it would leave "the" hanging): articles of the common languages.
ARTICLES = frozenset({"the", "a", "an", "le", "la", "les", "un", "une", "des", "el", "los", "las", "der", "das",
                      "ein", "eine", "il", "lo", "gli", "uno"})
_CJK = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
)
_UNIT = re.compile(rf"\s*(?:[{_CJK}]|[^\s{_CJK}]+)")
_WIDE = re.compile(f"[{_CJK}]")


def width(text: str) -> int:
    """Columns ``text`` takes on screen: Chinese, Japanese and Korean characters count twice."""
    return len(text) + len(_WIDE.findall(text))


@dataclass
class Word:
    start: float
    end: float
    text: str  # as Whisper writes it: with its leading space, if any


@dataclass
class Segment:
    start: float | None
    end: float | None
    text: str
    words: list[Word] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = {"start": _seconds(self.start), "end": _seconds(self.end), "text": self.text}
        if self.words:
            data["words"] = [{"start": _seconds(w.start), "end": _seconds(w.end), "text": w.text} for w in self.words]
        return data


@dataclass(frozen=True)
class SubtitleRules:
    max_line_chars: int = 42
    max_lines: int = 2
    max_cue_seconds: float = 7.0
    min_cue_seconds: float = 0.7  # a short cue is held this long when the next one leaves room

    def __post_init__(self) -> None:
        if self.max_line_chars < 1 or self.max_lines < 1 or self.max_cue_seconds <= 0:
            raise ValueError(f"Subtitle rules must be positive: {self}")


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class _Unit:
    """A word (or one CJK character), with whether a space precedes it, and its time span."""

    text: str
    space: bool
    start: float = 0.0
    end: float = 0.0


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


# --- cleaning Whisper's segments -----------------------------------------------------------------------


def tidy_segments(segments: list[Segment], duration: float) -> list[Segment]:
    """Segments with text, times filled in, inside ``[0, duration]``, in order and without overlaps.

    Whisper may leave the end of the last segment open (audio cut mid-word), repeat a timestamp, or, when
    30-second windows are merged, start a segment slightly before the previous one ends.
    """
    duration = max(0.0, float(duration))
    kept = [Segment(s.start, s.end, clean_text(s.text), list(s.words)) for s in segments]
    kept = [s for s in kept if s.text]
    tidy: list[Segment] = []
    for index, segment in enumerate(kept):
        previous_end = tidy[-1].end if tidy else 0.0
        start = previous_end if segment.start is None else float(segment.start)
        start = min(max(start, previous_end, 0.0), duration)
        following = next((s.start for s in kept[index + 1 :] if s.start is not None), None)
        end = segment.end
        if end is None:
            if following is not None and following > start:
                end = following
            elif index + 1 < len(kept):  # more text follows without times: a reading-speed guess
                end = start + max(1.0, READING_SECONDS_PER_CHAR * len(segment.text))
            else:
                end = duration
        end = min(max(float(end), start), duration)
        if end <= start and tidy and start >= duration:  # no time left at the very end: join the previous one
            tidy[-1].text = f"{tidy[-1].text} {segment.text}"
            tidy[-1].words += _tidy_words(segment.words, tidy[-1].start, tidy[-1].end)
            continue
        tidy.append(Segment(start, end, segment.text, _tidy_words(segment.words, start, end)))
    return tidy


def clean_text(text: str) -> str:
    """One line of text: control characters dropped, runs of white space made one space."""
    return " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in str(text)).split())


def _tidy_words(words: list[Word], start: float, end: float) -> list[Word]:
    result: list[Word] = []
    for word in words:
        text = clean_text(word.text)
        if not text:
            continue
        text = (" " if word.text[:1].isspace() else "") + text
        previous = result[-1].end if result else start
        w_start = min(max(float(word.start), previous, start), end)
        w_end = min(max(float(word.end), w_start), end)
        result.append(Word(w_start, w_end, text))
    return result


# --- cues ----------------------------------------------------------------------------------------------


def _units_from_text(text: str) -> list[_Unit]:
    return [_Unit(match.group().strip(), match.group()[:1].isspace()) for match in _UNIT.finditer(text)]


def _units_for(segment: Segment) -> list[_Unit]:
    """The segment's words with times: Whisper's word timestamps, else its span shared by characters."""
    if segment.words:
        units = []
        for word in segment.words:
            pieces = _units_from_text(word.text) or []
            if not pieces:
                continue
            # a "word" of several CJK characters keeps its time on the whole; split it evenly
            span = (word.end - word.start) / len(pieces)
            for i, piece in enumerate(pieces):
                piece.start, piece.end = word.start + i * span, word.start + (i + 1) * span
                units.append(piece)
        if units:
            units[0].space = False
            return units
    units = _units_from_text(segment.text)
    if not units:
        return []
    units[0].space = False
    weights = [len(u.text) + (1 if u.space else 0) for u in units]
    total = sum(weights)
    clock = segment.start
    span = segment.end - segment.start
    for unit, weight in zip(units, weights):
        unit.start = clock
        clock += span * weight / total
        unit.end = clock
    units[-1].end = segment.end
    return units


def _split_long(units: list[_Unit], limit: int) -> list[_Unit]:
    """Units wider than a line are cut into line-sized pieces (their time shared out)."""
    result = []
    for unit in units:
        if width(unit.text) <= limit:
            result.append(unit)
            continue
        pieces, piece = [], ""
        for char in unit.text:
            if piece and width(piece + char) > limit:
                pieces.append(piece)
                piece = ""
            piece += char
        pieces.append(piece)
        span = (unit.end - unit.start) / len(pieces)
        for i, piece in enumerate(pieces):
            result.append(_Unit(piece, unit.space if i == 0 else False, unit.start + i * span, unit.start + (i + 1) * span))
    return result


def _join(units: list[_Unit]) -> str:
    return "".join((" " if unit.space and i else "") + unit.text for i, unit in enumerate(units))


def _is_article(unit: _Unit) -> bool:
    return unit.text.lower() in ARTICLES


def _wrap(units: list[_Unit], columns: int) -> list[list[_Unit]]:
    """Greedy wrap of units into lines at most ``columns`` wide; a line that would end on an article
    ("the", "a") hands it to the next line when that line still fits."""
    lines: list[list[_Unit]] = []
    current: list[_Unit] = []
    for unit in units:
        if current and width(_join(current + [unit])) > columns:
            if len(current) > 1 and _is_article(current[-1]) and width(_join([current[-1], unit])) <= columns:
                lines.append(current[:-1])
                current = [current[-1], unit]
            else:
                lines.append(current)
                current = [unit]
        else:
            current.append(unit)
    if current:
        lines.append(current)
    return lines


def _break_at(units: list[_Unit]) -> int:
    """How many of ``units`` a cue that must end takes: up to the last sentence end, else clause end, in
    its second half; else all but the articles it would end on."""
    n = len(units)
    for ends in (SENTENCE_END, CLAUSE_END):
        for i in range(n - 1, n // 2 - 1, -1):
            if units[i].text.endswith(ends):
                return i + 1
    keep = n
    while keep > 1 and _is_article(units[keep - 1]):
        keep -= 1
    return keep


def wrap_balanced(units_or_text, max_chars: int) -> list[str]:
    """Lines at most ``max_chars`` wide (see ``width``), as even as the word boundaries allow."""
    units = _units_from_text(units_or_text) if isinstance(units_or_text, str) else list(units_or_text)
    if not units:
        return []
    units = _split_long(units, max_chars)
    count = len(_wrap(units, max_chars))
    low, high = 1, max_chars
    while low < high:  # the narrowest width that still needs no more lines
        middle = (low + high) // 2
        if len(_wrap(units, middle)) <= count:
            high = middle
        else:
            low = middle + 1
    return [_join(line) for line in _wrap(units, low)]


def _fits(units: list[_Unit], rules: SubtitleRules) -> bool:
    return len(_wrap(units, rules.max_line_chars)) <= rules.max_lines


def segments_to_cues(segments: list[Segment], rules: SubtitleRules = SubtitleRules()) -> list[Cue]:
    """Cues that respect ``rules`` from tidy segments (see ``tidy_segments``)."""
    cues: list[Cue] = []
    for segment in segments:
        units = _split_long(_units_for(segment), rules.max_line_chars)
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        capacity = rules.max_line_chars * rules.max_lines
        for unit in units:
            candidate = current + [unit]
            too_long = not _fits(candidate, rules)
            too_slow = bool(current) and unit.end - current[0].start > rules.max_cue_seconds
            if current and (too_long or too_slow):
                keep = _break_at(current)
                groups.append(current[:keep])
                rest = current[keep:]
                if rest and (not _fits(rest + [unit], rules) or unit.end - rest[0].start > rules.max_cue_seconds):
                    groups.append(rest)
                    rest = []
                current = rest + [unit]
            else:
                current = candidate
            # close a cue at a sentence end once it is reasonably full
            if current and current[-1].text.endswith(SENTENCE_END) and width(_join(current)) >= 0.3 * capacity:
                groups.append(current)
                current = []
        if current:
            groups.append(current)
        for group in groups:
            if not _join(group).strip():
                continue
            start = group[0].start
            end = min(max(group[-1].end, start), start + rules.max_cue_seconds)
            cues.append(Cue(start, end, wrap_balanced(group, rules.max_line_chars)))
    return _settle(cues, rules)


def _settle(cues: list[Cue], rules: SubtitleRules) -> list[Cue]:
    """In order, no overlaps, and short cues held longer where the next cue leaves room."""
    cues = sorted(cues, key=lambda c: c.start)
    for i, cue in enumerate(cues):
        if i:
            cue.start = max(cue.start, cues[i - 1].end)
            cue.end = max(cue.end, cue.start)
        if cue.end - cue.start < rules.min_cue_seconds:
            room = cues[i + 1].start if i + 1 < len(cues) else cue.start + rules.min_cue_seconds
            cue.end = max(cue.end, min(cue.start + rules.min_cue_seconds, room))
    return cues


# --- formats -------------------------------------------------------------------------------------------


def timestamp(seconds: float, separator: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or, with ``separator="."``, ``HH:MM:SS.mmm`` (WebVTT)."""
    total_ms = max(0, int(math.floor(float(seconds) * 1000 + 0.5)))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_lines(cue: Cue) -> list[str]:
    # "-->" would end a cue's text early in both formats
    return [line.replace("-->", "→") for line in cue.lines if line.strip()]


def to_srt(cues: list[Cue]) -> str:
    blocks = [
        f"{index}\n{timestamp(cue.start)} --> {timestamp(cue.end)}\n" + "\n".join(_cue_lines(cue))
        for index, cue in enumerate(cues, 1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else "\n"


def to_vtt(cues: list[Cue]) -> str:
    def escape(line: str) -> str:
        return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    blocks = [
        f"{timestamp(cue.start, '.')} --> {timestamp(cue.end, '.')}\n" + "\n".join(escape(l) for l in _cue_lines(cue))
        for cue in cues
    ]
    return "WEBVTT\n\n" + "\n\n".join(blocks) + ("\n" if blocks else "")


def to_txt(segments: list[Segment]) -> str:
    """The plain transcript: one segment per line."""
    return "\n".join(segment.text for segment in segments) + "\n"


def short_time(seconds: float) -> str:
    """``MM:SS.s`` under an hour, else ``H:MM:SS.s``: for the page."""
    tenths = int(round(float(seconds) * 10))
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    text = f"{minutes:02d}:{rest / 10:04.1f}"
    return f"{hours}:{text}" if hours else text


def timestamped_text(segments: list[Segment]) -> str:
    """``[00:01.2 → 00:04.0] text`` lines, for reading in the page."""
    return "\n".join(f"[{short_time(s.start)} → {short_time(s.end)}] {s.text}" for s in segments)

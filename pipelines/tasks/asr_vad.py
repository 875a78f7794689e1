"""Voice detection for the transformers engine: the speech of a file, cut out before decoding, and every
time mapped back to the file's own clock afterwards.

The detector is the one the CTranslate2 engine uses: Silero VAD as faster-whisper ships it (its ONNX
model and ``get_speech_timestamps``), with the options of faster-whisper's ``WhisperModel.transcribe``
(a pause of 2 s or more ends a region, 0.4 s of padding each side). The regions are joined and the
engine decodes the joined audio (chunked or sequential, as without voice detection); segment and word
times are then moved back past the cut pauses (faster-whisper's ``SpeechTimestampsMap``, as its own
``restore_speech_timestamps``). So music and silence are never decoded, long pauses get no invented text,
and a subtitle starts where the voice starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

VAD_OPTIONS = {"min_silence_duration_ms": 2000, "speech_pad_ms": 400}


@dataclass
class SpeechCut:
    """The speech of one file: ``audio`` is its voice regions joined; ``regions`` in samples of the file."""

    audio: object
    regions: list[dict]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.audio.size / self.sample_rate

    def restore(self, segments: list) -> list:
        """``segments`` (times in the joined audio) with times in the file: each word moves by the pauses cut
        before the region its middle falls in and a segment spans its words; without words, its start and
        end move."""
        from faster_whisper.vad import SpeechTimestampsMap

        from ..media.subtitles import Word

        times = SpeechTimestampsMap(self.regions, self.sample_rate)

        def moved(value, is_end=False, chunk=None):
            return None if value is None else float(times.get_original_time(value, chunk, is_end))

        restored = []
        for segment in segments:
            if segment.words:
                words = []
                for word in segment.words:
                    chunk = times.get_chunk_index((word.start + word.end) / 2)
                    words.append(Word(moved(word.start, chunk=chunk), moved(word.end, chunk=chunk), word.text))
                restored.append(replace(segment, start=words[0].start, end=words[-1].end, words=words))
            else:
                restored.append(replace(segment, start=moved(segment.start), end=moved(segment.end, is_end=True)))
        return restored


def cut_to_speech(audio, sample_rate: int) -> SpeechCut:
    """The voice regions of ``audio`` (16 kHz mono float32) and their joined samples (empty: no voice)."""
    import numpy as np
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    regions = get_speech_timestamps(audio, VadOptions(**VAD_OPTIONS), sampling_rate=sample_rate)
    joined = np.concatenate([audio[r["start"] : r["end"]] for r in regions]) if regions else audio[:0]
    return SpeechCut(joined.astype(np.float32, copy=False), regions, sample_rate)

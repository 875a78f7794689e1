"""The transformers engine: Whisper's windows decoded chunked (batched, merged by transformers' own
chunk merging) or sequential (Whisper's long-form algorithm), with the out-of-memory fallback."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from ..studio.jobs import Job, JobCancelled, RequestError
from ..families.whisper import WhisperBundle
from .asr_outputs import TranscriberBase, _attach_words
from .asr_request import (CHUNK_SECONDS, CPU_BATCH_SIZE, DEMO_MAX_NEW_TOKENS, LANGUAGE_DETECT_WINDOWS, LONG_FORM,
                          MAX_AUTO_BATCH_SIZE, RANDOM_WEIGHTS_NEW_TOKENS, STRIDE_SECONDS, VRAM_RESERVE_BYTES, ASRRequest)

logger = logging.getLogger("pipelines.tasks.asr")

@dataclass
class _Window:
    """One 30-second window of a file, in samples, with the overlap shared with its neighbours."""

    start: int
    end: int
    stride_left: int
    stride_right: int
    silent: bool = False


def plan_windows(n_samples: int, sample_rate: int) -> list[_Window]:
    """Windows as transformers' ASR pipeline cuts them (``chunk_iter``): 30 s long, 5 s overlap each side."""
    chunk = CHUNK_SECONDS * sample_rate
    stride = int(STRIDE_SECONDS * sample_rate)
    step = chunk - 2 * stride
    windows = []
    for start in range(0, n_samples, step):
        end = min(start + chunk, n_samples)
        is_last = start + chunk >= n_samples
        left = 0 if start == 0 else stride
        if end - start > left:
            windows.append(_Window(start, end, left, 0 if is_last else stride))
        if is_last:
            break
    return windows


RETRY = object()  # what ``_Transcriber._attempt`` answers when the caller should redo the work, smaller


def is_english_only(model) -> bool:
    """An English-only (``.en``) Whisper: its generation config says it is not multilingual, or it has no
    language tokens (vocabulary of 51864). Its ``generate`` takes no ``language`` or ``task``."""
    config = model.generation_config
    if getattr(config, "is_multilingual", None) is not None:
        return not config.is_multilingual
    return not getattr(config, "lang_to_id", None) and model.config.vocab_size < 51865


class _Transcriber(TranscriberBase):
    """Runs the files of one job on the resident model, keeping the batch size and device state."""

    def __init__(self, job: Job, ctx, request: ASRRequest, loaded, loaded_now: bool):
        import torch

        self.job, self.ctx, self.request, self.loaded, self.loaded_now = job, ctx, request, loaded, loaded_now
        self.bundle: WhisperBundle = loaded.pipe
        self.model = self.bundle.model
        self.tokenizer = self.bundle.tokenizer
        self.feature_extractor = self.bundle.feature_extractor
        self.generation_config = self.model.generation_config
        self.device = ctx.device
        self.model_dtype = self.model.dtype
        self.torch = torch
        self.demo = ctx.settings.demo
        if request.batch_size:
            self.batch_size, self.batch_how = request.batch_size, "set in the request"
        else:
            self.batch_size, self.batch_how = self._auto_batch_size()
        self.first_batch_size = self.batch_size
        self.max_new_tokens = request.max_new_tokens or None
        if self.demo:
            self.max_new_tokens = min(self.max_new_tokens or DEMO_MAX_NEW_TOKENS, DEMO_MAX_NEW_TOKENS)
        self.random_weights = ctx.settings.random_weights and not self.demo
        if self.random_weights:  # never ends by itself: a fixed count (``min_new_tokens`` too, in ``_generate``)
            self.max_new_tokens = RANDOM_WEIGHTS_NEW_TOKENS
        self.time_precision = self.feature_extractor.chunk_length / self.model.config.max_source_positions
        self.first_file = True
        self.stuck_on_cpu = False
        self.english_only = is_english_only(self.model)

    # --- batch size and out-of-memory ------------------------------------------------------------------

    def _item_bytes(self) -> int:
        """A generous estimate of the memory one 30-second window takes while it is decoded."""
        config = self.model.config
        element = self.torch.finfo(self.model_dtype).bits // 8
        frames = config.max_source_positions
        cross_cache = 2 * config.decoder_layers * frames * config.d_model * element
        self_cache = 2 * config.decoder_layers * config.max_target_positions * config.d_model * element
        encoder = frames * (4 * config.d_model + config.encoder_ffn_dim) * element
        attention = config.encoder_attention_heads * frames * frames * element  # if SDPA falls back to math
        scores = config.max_target_positions * config.vocab_size * 4  # kept for the long-form thresholds
        return int(1.5 * (cross_cache + self_cache + encoder + attention + scores))

    def _auto_batch_size(self) -> tuple[int, str]:
        if not self.device.startswith("cuda"):
            return CPU_BATCH_SIZE, "default on the CPU"
        from ..device.memory import read_memory

        free = read_memory(self.device).free - VRAM_RESERVE_BYTES
        size = max(1, min(MAX_AUTO_BATCH_SIZE, free // self._item_bytes()))
        return int(size), f"from free VRAM ({free / 2**30:.1f} GiB after a 1 GiB reserve)"

    def _out_of_memory(self, name: str, record: list[dict], message: str, size: int) -> None:
        """After a CUDA out-of-memory with ``size`` windows at once: halve that, else move to the CPU, else give
        up on this file."""
        from ..device.memory import free_memory

        free_memory(self.device)
        if size > 1:
            self.batch_size = max(1, size // 2)
            record.append({"action": "halve batch size", "from": size, "to": self.batch_size, "error": message})
            self.ctx.note(f"{name}: out of GPU memory with batch size {size}; retrying with {self.batch_size}.")
            return
        if self.device.startswith("cuda"):
            record.append({"action": "retry on the CPU", "batch_size": size, "error": message})
            self.ctx.note(f"{name}: out of GPU memory even with batch size {size}; retrying on the CPU (much slower).")
            self.model.to("cpu", self.torch.float32)
            self.device = "cpu"
            free_memory(self.ctx.device)
            return
        raise RequestError(f"{name}: out of memory even on the CPU ({message}).", key="asr_out_of_memory", name=name)

    def _back_to_device(self) -> None:
        """After a file finished on the CPU: the resident model goes back to the GPU. If even that fails, it
        stays on the CPU for the rest of this job and leaves the resident set (the next job loads it afresh)."""
        if self.device == self.ctx.device or self.stuck_on_cpu:
            return
        try:
            self.model.to(self.ctx.device, self.model_dtype)
            self.device = self.ctx.device
        except Exception as error:
            self.model.to("cpu", self.torch.float32)
            self.stuck_on_cpu = True
            self.ctx.note(f"{self.loaded.spec.title} could not go back to {self.ctx.device} ({type(error).__name__}); "
                          "the rest of this job runs on the CPU and the model is released after it.")
            self.ctx.worker.models.evict(self.loaded.spec.id)

    def _attempt(self, name: str, record: list[dict], run, again: bool = True, size: int = 1):
        """``run()`` (on ``size`` windows at once), after out-of-memory retried (``again``) or answered with
        ``RETRY`` for the caller to redo with the smaller batch; ``_out_of_memory`` decides what changes."""
        from ..device.memory import is_out_of_memory

        while True:
            try:
                return run()
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                message = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            # outside the except block: the failed attempt's tensors are no longer referenced
            self._out_of_memory(name, record, message, size)
            size = 1
            if not again:
                return RETRY

    # --- model calls ------------------------------------------------------------------------------------

    def _features(self, arrays, long_form: bool = False):
        """Log-mel features (on the GPU when there is one) and their attention mask, on the model's device."""
        from ..media.audio import SAMPLE_RATE

        options = dict(sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True,
                       device="cuda" if self.device.startswith("cuda") else "cpu")
        if long_form:
            options.update(truncation=False, padding="longest")
        batch = self.feature_extractor(arrays, **options)
        features = batch["input_features"].to(self.device, self.model.dtype)
        return features, batch["attention_mask"].to(self.device)

    def _detect_language(self, features) -> tuple[str, float]:
        """Whisper's language detection (as ``WhisperForConditionalGeneration.detect_language``: the logits of
        the language tokens after ``<|startoftranscript|>``), averaged over the given windows."""
        torch = self.torch
        features = features.to(self.device, self.model.dtype)
        lang_to_id = self.generation_config.lang_to_id
        ids = list(lang_to_id.values())
        start = torch.full((features.shape[0], 1), self.generation_config.decoder_start_token_id, device=self.device)
        with torch.no_grad():
            logits = self.model(input_features=features, decoder_input_ids=start, use_cache=False).logits[:, -1]
        probabilities = logits[:, ids].float().softmax(-1).mean(0)
        best = int(probabilities.argmax())
        token = next(t for t, i in lang_to_id.items() if i == ids[best])
        return token[2:-2], float(probabilities[best])

    def _generate(self, features, attention_mask, language: str, **extra):
        """``model.generate`` with timestamps; returns its dict (sequences, segments, token timestamps)."""
        kwargs: dict[str, Any] = dict(attention_mask=attention_mask, return_timestamps=True, return_segments=True)
        if not self.english_only:  # an English-only model has no language or task token to force
            kwargs.update(task=self.request.task, language=language)
        if self.max_new_tokens:
            kwargs["max_new_tokens"] = self.max_new_tokens
        if self.random_weights:  # exactly this many tokens per window, in one pass
            from ..bench.random_whisper import fixed_token_count

            kwargs.update(fixed_token_count(self.generation_config, self.max_new_tokens))
        if self.request.word_timestamps:
            kwargs["return_token_timestamps"] = True
        kwargs.update(extra)
        config = self.model.config
        attention = config._attn_implementation
        try:
            with self.torch.no_grad():
                return self.model.generate(input_features=features, **kwargs)
        finally:
            # word timestamps switch the model to eager attention for good: switch back, it stays resident
            if config._attn_implementation != attention:
                config._attn_implementation = attention
                self.model.model.config._attn_implementation = attention

    # --- one file ---------------------------------------------------------------------------------------

    def _decode(self, audio, name, index, count, timings, language, decoding, retries) -> list:
        cut = self._voice(audio, name, timings, decoding)
        if cut is not None:
            if not cut.regions:
                return []
            audio = cut.audio
        decode = self._chunked if self.request.mode == "chunked" else self._sequential
        segments = decode(audio, name, index, count, timings, language, decoding, retries)
        return cut.restore(segments) if cut is not None else segments

    def _voice(self, audio, name, timings, decoding):
        """Voice detection (``asr_vad``), when the request asks for it: the speech to decode, or None to decode
        everything. Random-weight builds (``--demo``, ``--random-weights``) decode everything: their text is not
        speech, and a benchmark keeps its workload."""
        from ..media.audio import SAMPLE_RATE

        decoding["vad"] = bool(self.request.vad)
        if not self.request.vad:
            return None
        if self.demo or self.random_weights:
            decoding.update(vad=False, vad_skipped="random weights: every window is decoded")
            return None
        from .asr_vad import cut_to_speech

        clock = time.perf_counter()
        with self.ctx.stage("asr_vad"):
            cut = cut_to_speech(audio, SAMPLE_RATE)
        decoding.update(vad_s=round(time.perf_counter() - clock, 3), seconds_of_voice=round(cut.seconds, 3),
                        voice_regions=len(cut.regions))
        if not cut.regions:
            self.ctx.note(f"{name}: voice detection found no speech: empty transcript, the model was not run.")
        return cut

    def _language_for(self, windows_features, timings: dict, language: dict) -> str:
        if self.english_only:
            language.update(used="en", forced="English-only model")
            return "en"
        if self.request.language != "auto":
            language["used"] = self.request.language
            return self.request.language
        clock = time.perf_counter()
        with self.ctx.stage("asr_language"):
            code, probability = self._detect_language(windows_features)
        timings["language"] += time.perf_counter() - clock
        language.update(detected=code, probability=round(probability, 4), used=code)
        return code

    def _chunked(self, audio, name, index, count, timings, language, decoding, retries) -> list:
        from ..media.audio import SAMPLE_RATE, is_silent

        torch = self.torch
        windows = plan_windows(audio.size, SAMPLE_RATE)
        for window in windows:
            window.silent = is_silent(audio[window.start : window.end])
        active = [i for i, w in enumerate(windows) if not w.silent]
        decoding.update(windows=len(windows), silent_windows_skipped=len(windows) - len(active),
                        window_s=CHUNK_SECONDS, overlap_s=STRIDE_SECONDS)

        # Language: the first windows with sound.
        probe = [audio[windows[i].start : windows[i].end] for i in active[:LANGUAGE_DETECT_WINDOWS]]
        clock = time.perf_counter()
        with self.ctx.stage("asr_features"):
            probe_features, _ = self._attempt(name, retries, lambda: self._features(probe))
        timings["features"] += time.perf_counter() - clock
        code = self._attempt(name, retries, lambda: self._language_for(probe_features, timings, language))
        del probe_features

        outputs: list[dict | None] = [None] * len(windows)
        empty = torch.zeros((1, 0), dtype=torch.long)
        for i, window in enumerate(windows):
            if window.silent:
                outputs[i] = {"tokens": empty, "token_timestamps": torch.zeros((1, 0)), "stride": self._stride(window)}
        step_clock = self.ctx.start_steps(len(active), clip=index + 1, clips=count)
        position = 0
        while position < len(active):
            self.ctx.check_cancel()
            batch = active[position : position + self.batch_size]

            def run(batch=batch):
                clock = time.perf_counter()
                with self.ctx.stage("asr_features"):
                    features, mask = self._features([audio[windows[i].start : windows[i].end] for i in batch])
                timings["features"] += time.perf_counter() - clock
                clock = time.perf_counter()
                with self.ctx.stage("asr_generate"):
                    generated = self._generate(features, mask, code)
                timings["generate"] += time.perf_counter() - clock
                return generated

            generated = self._attempt(name, retries, run, again=False, size=len(batch))
            if generated is RETRY:  # smaller batch or on the CPU now: this part again
                continue
            for row, i in enumerate(batch):
                outputs[i] = self._window_output(generated, row, windows[i])
            position += len(batch)
            for _ in batch:
                self.ctx.step(step_clock)
        decoding.update(batch_size=self.batch_size)
        return self._segments_from_windows(outputs)

    def _stride(self, window: _Window) -> tuple[float, float, float]:
        from ..media.audio import SAMPLE_RATE

        return ((window.end - window.start) / SAMPLE_RATE, window.stride_left / SAMPLE_RATE,
                window.stride_right / SAMPLE_RATE)

    def _window_output(self, generated: dict, row: int, window: _Window) -> dict:
        """One window's tokens (and token times), as the ASR pipeline hands them to ``_decode_asr``."""
        torch = self.torch
        tokens = generated["sequences"][row].cpu()
        pad = self.generation_config.pad_token_id
        keep = len(tokens)
        while keep and int(tokens[keep - 1]) == pad:
            keep -= 1
        output = {"tokens": tokens[:keep][None], "stride": self._stride(window)}
        if self.request.word_timestamps:
            pieces = [s["token_timestamps"].cpu() for s in generated["segments"][row]]
            times = torch.cat(pieces) if pieces else torch.zeros(0)
            output["token_timestamps"] = times[None].float()
        return output

    def _segments_from_windows(self, outputs: list[dict]) -> list:
        from ..media.subtitles import Segment, Word

        decode = self.tokenizer._decode_asr  # the ASR pipeline's own merge of overlapping windows
        _, found = decode([dict(o) for o in outputs], return_timestamps=True, return_language=False,
                          time_precision=self.time_precision)
        segments = [Segment(c["timestamp"][0], c["timestamp"][1], c["text"]) for c in found.get("chunks", [])]
        if self.request.word_timestamps:
            _, found = decode([dict(o) for o in outputs], return_timestamps="word", return_language=False,
                              time_precision=self.time_precision)
            words = [Word(c["timestamp"][0], c["timestamp"][1] if c["timestamp"][1] is not None else c["timestamp"][0],
                          c["text"]) for c in found.get("chunks", []) if c["timestamp"][0] is not None]
            _attach_words(segments, words)
        return segments

    def _sequential(self, audio, name, index, count, timings, language, decoding, retries) -> list:
        from ..media.audio import SAMPLE_RATE, is_silent
        from ..media.subtitles import Segment, Word

        torch = self.torch
        window = CHUNK_SECONDS * SAMPLE_RATE
        long_form = audio.size > window
        clock = time.perf_counter()
        with self.ctx.stage("asr_features"):
            features, mask = self._attempt(name, retries, lambda: self._features(audio, long_form=long_form))
        timings["features"] += time.perf_counter() - clock
        frames_per_window = self.feature_extractor.nb_max_frames
        sounding = [k for k in range(math.ceil(audio.size / window)) if not is_silent(audio[k * window : (k + 1) * window])]
        probe = [features[..., k * frames_per_window : (k + 1) * frames_per_window] for k in sounding[:LANGUAGE_DETECT_WINDOWS]]
        probe = torch.cat([torch.nn.functional.pad(p, (0, frames_per_window - p.shape[-1])) for p in probe])
        code = self._attempt(name, retries, lambda: self._language_for(probe, timings, language))
        del probe

        total_windows = max(1, math.ceil(audio.size / window))
        step_clock = self.ctx.start_steps(total_windows, clip=index + 1, clips=count)
        job = self.job

        def progress(seek_and_total):  # called by generate before each window
            if job.cancelled:
                raise JobCancelled()
            seek, frames = (int(v) for v in seek_and_total[0])
            while step_clock.done < min(total_windows, int(seek * total_windows / max(frames, 1))):
                self.ctx.step(step_clock)

        extra = dict(LONG_FORM) if long_form else {}
        decoding.update(long_form=long_form, **({"long_form_settings": {k: v for k, v in LONG_FORM.items()}} if long_form else {}))
        if getattr(self.ctx.settings, "asr_static_cache", False):
            # --asr-static-cache: a fixed-size KV cache, which transformers' generate compiles on a CUDA GPU
            # (the decoder's forward, once per shape); the same tokens as the dynamic cache
            extra["cache_implementation"] = "static"
        decoding["static_cache"] = extra.get("cache_implementation") == "static"

        def run():
            clock = time.perf_counter()
            # the CPU fallback needs the features there too
            feats, attention = features.to(self.device, self.model.dtype), mask.to(self.device)
            with self.ctx.stage("asr_generate"):
                generated = self._generate(feats, attention, code, monitor_progress=progress, **extra)
            timings["generate"] += time.perf_counter() - clock
            return generated

        generated = self._attempt(name, retries, run)
        while step_clock.done < total_windows:
            self.ctx.step(step_clock)
        decoding.update(batch_size=1)
        segments = []
        for piece in generated["segments"][0]:
            text = self.tokenizer.decode(piece["tokens"], skip_special_tokens=True)
            segments.append(Segment(float(piece["start"]), float(piece["end"]), text))
        if self.request.word_timestamps and generated["segments"][0]:
            times = torch.cat([s["token_timestamps"].cpu() for s in generated["segments"][0]])
            tokens = torch.cat([s["tokens"].cpu() for s in generated["segments"][0]])
            _, found = self.tokenizer._decode_asr([{"tokens": tokens[None], "token_timestamps": times[None].float()}],
                                                  return_timestamps="word", return_language=False,
                                                  time_precision=self.time_precision)
            words = [Word(c["timestamp"][0], c["timestamp"][1] if c["timestamp"][1] is not None else c["timestamp"][0],
                          c["text"]) for c in found.get("chunks", []) if c["timestamp"][0] is not None]
            _attach_words(segments, words)
        return segments

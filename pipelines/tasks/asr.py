"""Speech to text: validate a request, transcribe a batch of files on one of two engines, write them out.

Engines (``--asr-engine``, the sidecar's ``model.engine`` and ``model.compute_type``): transformers
(``asr_decode``, voice detection through ``asr_vad``) and CTranslate2 / faster-whisper (``asr_ct2``); both
detect voice with Silero when the request's ``vad`` is on. The request and its checks are in ``asr_request``, the shared file stages and
outputs in ``asr_outputs``, loading in ``families.whisper_load``. What follows describes the
transformers engine; CTranslate2 has the same modes, fallbacks and outputs.

``run_asr`` takes each file through the same stages: decode (ffmpeg, to 16 kHz mono), a silence gate,
log-mel features, language detection (when asked), generation, subtitles. Two ways to decode long audio:

- ``chunked`` (default, fastest): 30-second windows overlapping by 5 s on each side, batched on the GPU,
  merged by transformers' own Whisper chunk-merging (the ASR pipeline's ``_decode_asr``). Windows that
  are silent are not sent to the model.
- ``sequential``: Whisper's long-form algorithm (``model.generate`` over the whole file, each window
  starting where the last segment ended), with temperature fallback, compression-ratio, log-prob and
  no-speech thresholds: slower, more faithful across window boundaries.

A file whose loudest 100 ms is below ``pipelines.media.audio.SILENCE_DBFS`` gets an empty transcript without
running the model (Whisper invents text on silence). Out of GPU memory, a file is retried with half the
batch size, down to 1, then on the CPU (each step is logged and kept in the sidecar); the job goes on.
A bad file (missing, empty, corrupt, no audio stream, too long) gets its message and the job goes on with
the others.

Outputs, per file, share one stem ``outputs/<date>/<time>_asr_<file name>``:

- ``.txt``  the plain transcript, one segment per line;
- ``.srt`` and ``.vtt``  subtitles, cut by ``pipelines.media.subtitles.SubtitleRules``;
- ``.json`` the transcript (text, language, segments, words when asked) **and** the sidecar: settings,
  model and revision, device/dtype/attention, batch size and every out-of-memory retry, chunking mode,
  timings (decode, features, language, generate, write), audio duration, real-time factor, peak memory.
  There is no separate ``.settings.json``: the ``.json`` is both.

A batch with two or more transcribed files also gets ``<time>_asr_batch-<n>-files.zip`` next to them,
holding all of them. In ``--demo`` mode the tiny random Whisper decodes at most ``DEMO_MAX_NEW_TOKENS``
tokens per 30-second window (it never stops by itself); the sidecar says so.
"""


from __future__ import annotations

import logging

from ..studio.jobs import Job, JobCancelled, RequestError
from ..families.whisper import WHISPER_LANGUAGES, WhisperBundle  # noqa: F401  (named here too, for the UI)
from ..families.whisper_load import load_transformers as load_asr_model  # noqa: F401
from .asr_ct2 import CT2Transcriber
from .asr_decode import RETRY, _Transcriber, _Window, plan_windows  # noqa: F401
from .asr_outputs import _transcribed_before, _write_zip
from .asr_request import *  # noqa: F401,F403  (the request, its limits and checks, as before the split)
from .asr_request import ASRRequest, asr_spec, validate_asr

logger = logging.getLogger(__name__)


def _transformers_transcriber(job, ctx, request, loaded, loaded_now, spec) -> _Transcriber:
    from .asr_decode import is_english_only

    if is_english_only(loaded.pipe.model):  # no language or task tokens: English, transcribed
        if request.language not in ("auto", "en"):
            raise RequestError(f"{spec.title} is an English-only model: it transcribes English only.",
                               key="asr_english_only", model=spec.title)
        if request.task == "translate":
            ctx.note(f"{spec.title} is an English-only model: it transcribes English (no translation).")
        return _Transcriber(job, ctx, request, loaded, loaded_now)
    lang_to_id = getattr(loaded.pipe.model.generation_config, "lang_to_id", {}) or {}
    if request.language != "auto" and f"<|{request.language}|>" not in lang_to_id:
        raise RequestError(
            f"{spec.title} does not know {WHISPER_LANGUAGES[request.language]} ({request.language}); "
            "use Whisper large-v3 or large-v3 turbo.",
            key="asr_language_model", model=spec.title, language=request.language,
        )
    return _Transcriber(job, ctx, request, loaded, loaded_now)


def run_asr(job: Job, ctx) -> dict:
    """Run a validated ``ASRRequest`` over its files; returns one entry per file (done or failed) and the zip."""
    models_dir = getattr(ctx.settings, "asr_models_dir", "")
    request: ASRRequest = validate_asr(job.request, demo=ctx.settings.demo, models_dir=models_dir)
    for text in request.notes:
        ctx.note(text)
    spec = asr_spec(request.model, models_dir)

    # 1. Model: resident after the first job.
    loaded, loaded_now = ctx.model(spec)
    if loaded.optimisations.get("engine") == "ctranslate2":
        transcriber = CT2Transcriber(job, ctx, request, loaded, loaded_now)
        transcriber.check_language()
    else:
        transcriber = _transformers_transcriber(job, ctx, request, loaded, loaded_now, spec)
    ctx.note(f"{len(request.files)} file(s), {request.mode} decoding on {loaded.optimisations.get('engine', 'transformers')}, "
             f"batch size {transcriber.batch_size} ({transcriber.batch_how}).")


    # 2. Each file; a bad one is reported and the others go on. After a restart, files this job had
    # already transcribed are kept, not transcribed again.
    done_before = _transcribed_before(ctx, job)
    results: list[dict] = []
    for index, (path, name) in enumerate(zip(request.files, request.names)):
        ctx.check_cancel()
        if name in done_before:
            results.append(done_before.pop(name))
            continue
        try:
            results.append(transcriber.transcribe(path, name, index, len(request.files)))
        except (JobCancelled, KeyboardInterrupt):
            raise
        except RequestError as error:
            ctx.note(str(error))
            results.append({"name": name, "ok": False, "error": str(error), "error_key": error.key,
                            "error_params": dict(error.params)})
        except Exception as error:  # an unexpected failure on one file must not end the batch
            logger.exception("Job %s: %s failed", job.id, name)
            message = f"{name}: {type(error).__name__}: {error}"
            ctx.note(message)
            results.append({"name": name, "ok": False, "error": message, "error_key": "asr_file_failed",
                            "error_params": {"name": name, "detail": f"{type(error).__name__}: {error}"}})

    # 3. One zip for a batch.
    zip_path = None
    if sum(1 for r in results if r["ok"]) >= 2:
        zip_path = str(_write_zip(ctx.settings.outputs_dir, results))
    return {"files": results, "zip": zip_path, "model": spec.id, "notes": list(request.notes),
            "batch_size": transcriber.batch_size}


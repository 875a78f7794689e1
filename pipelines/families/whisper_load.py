"""Loading a Whisper on either engine: transformers' ``WhisperForConditionalGeneration`` or CTranslate2
(faster-whisper's ``WhisperModel``), from the catalogue, the Hugging Face cache, or a creator's folder.

``--asr-engine auto`` picks CTranslate2 int8 on a CPU (measured: docs/benchmarks.md) and CTranslate2
float16 on a CUDA GPU (faster-whisper's fused kernels and batched decoding beat transformers' eager loop
on small and mid-size GPUs; on a large GPU the two are close). ``--demo`` and ``--random-weights`` builds
are transformers models, so they always run on transformers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from .whisper_data import WhisperBundle

logger = logging.getLogger("pipelines.tasks.asr")

ENGINES = ("auto", "transformers", "ctranslate2")


def is_ct2_folder(folder: Path) -> bool:
    """A faster-whisper (CTranslate2) conversion: ``model.bin`` next to ``config.json``."""
    return (Path(folder) / "model.bin").is_file()


def is_transformers_folder(folder: Path) -> bool:
    import json

    config = Path(folder) / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (OSError, ValueError, AttributeError):
        return False


def weights_hash(folder: Path) -> str | None:
    """sha256 of the weight files of a folder (model.bin or *.safetensors / *.bin), in name order."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".bin", ".safetensors") and p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def choose_engine(requested: str, device: str, settings) -> str:
    """The engine a job runs on: the demo and random-weight builds are transformers models."""
    if settings.demo or settings.random_weights:
        return "transformers"
    if requested in ("transformers", "ctranslate2"):
        return requested
    return "ctranslate2"  # auto: int8 on a CPU, float16 on CUDA (see the module docstring)


def ct2_compute_type(device: str, dtype: str) -> str:
    if not device.startswith("cuda"):
        return "int8"
    return {"bf16": "bfloat16", "fp32": "float32"}.get(dtype, "float16")


def load(spec, settings, device: str, dtype: str):
    """The family's ``load``: the engine from ``--asr-engine`` and the folder found."""
    from ..device.loading import resolve_source

    engine = choose_engine(getattr(settings, "asr_engine", "auto"), device, settings)
    if spec.extra.get("custom"):  # a creator's folder: the engine its layout is for
        folder, revision = resolve_source(spec, settings) if not settings.demo else (Path(spec.repo_id), "local")
        if spec.extra.get("hub_repo"):
            revision = folder.name
        if is_ct2_folder(folder):
            return load_ct2(spec, folder, revision, device, dtype, settings)
        return _recorded(load_transformers(spec, settings, device, dtype, folder, revision), folder, revision)
    if engine == "transformers":
        return load_transformers(spec, settings, device, dtype)
    ct2_repo = spec.extra.get("ct2_repo")
    if ct2_repo and not Path(spec.repo_id).expanduser().is_dir():
        import dataclasses

        try:
            folder, revision = resolve_source(dataclasses.replace(spec, repo_id=ct2_repo), settings)
        except Exception as error:  # not in the cache: the transformers checkpoint, if it is there
            logger.info("Whisper: %s is not in the cache (%s); trying %s on transformers.", ct2_repo, error, spec.repo_id)
            return load_transformers(spec, settings, device, dtype)
    else:
        folder, revision = resolve_source(spec, settings)
    if not is_ct2_folder(folder):  # a transformers checkpoint asked for on CTranslate2: transformers runs it
        logger.info("Whisper: %s has no model.bin (CTranslate2); running it on transformers.", folder)
        return _recorded(load_transformers(spec, settings, device, dtype, folder, revision), folder, revision)
    return load_ct2(spec, folder, revision, device, dtype, settings)


def _recorded(loaded, folder: Path, revision: str):
    """A creator's model: the sidecar records its folder, and for a folder of their own (not a Hugging Face
    snapshot, which its commit names) a hash of its weights."""
    loaded.optimisations["folder"] = str(folder)
    if revision == "local":
        loaded.optimisations["weights_sha256"] = weights_hash(Path(folder))
    return loaded


def load_ct2(spec, folder: Path, revision: str, device: str, dtype: str, settings=None):
    """faster-whisper's ``WhisperModel`` on ``device`` (CPU: int8 on the machine's cores)."""
    import os

    from faster_whisper import WhisperModel

    from ..device.loading import LoadedModel

    started = time.perf_counter()
    compute_type = ct2_compute_type(device, dtype)
    kind, _, index = device.partition(":")
    threads = 0 if kind == "cuda" else max(1, os.cpu_count() or 1)
    model = WhisperModel(str(folder), device="cuda" if kind == "cuda" else "cpu", device_index=int(index or 0),
                         compute_type=compute_type, cpu_threads=threads)
    n_bytes = sum(p.stat().st_size for p in Path(folder).glob("*.bin"))
    seconds = time.perf_counter() - started
    logger.info("Loaded %s from %s in %.1f s (CTranslate2 %s on %s)", spec.title, folder, seconds, compute_type, device)
    return LoadedModel(spec=spec, pipe=model, source=str(folder), revision=revision, n_bytes=n_bytes,
                       load_seconds=seconds, attention="ctranslate2", device=device, dtype=compute_type,
                       optimisations={"engine": "ctranslate2", "compute_type": compute_type, "folder": str(folder),
                                      "weights_sha256": weights_hash(folder) if revision == "local" else None})


def load_transformers(spec, settings, device: str, dtype: str, folder=None, revision=None):
    """Load a Whisper checkpoint (HF cache, local folder, or the tiny demo build) ready to run on ``device``.

    fp16/bf16 on a GPU (``--dtype``), fp32 on the CPU; flash attention when installed and asked for (or
    ``auto``), else PyTorch SDPA.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from ..device.attention import choose_backend
    from ..device.loading import LoadedModel, resolve_source

    random_weights = settings.random_weights and not settings.demo
    if folder is None:
        folder, revision = ("random weights", "random weights (real architecture)") if random_weights \
            else resolve_source(spec, settings)
    started = time.perf_counter()
    on_gpu = device.startswith("cuda")
    dtype = dtype if on_gpu else "fp32"
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    backend = choose_backend(settings.attention, device)
    if backend == "flash3":  # flash-attn 3 for diffusers' dispatcher; transformers takes flash-attn 2
        backend = "flash"
    if backend not in ("flash", "sdpa"):
        if backend != "cudnn":  # PyTorch's SDPA chooses cuDNN itself where it is fastest
            logger.info("Attention: %s is not available for Whisper in transformers; using PyTorch SDPA.", backend)
        backend = "sdpa"

    def load(attention: str) -> WhisperBundle:
        if random_weights:  # benchmarks: the real architecture, created on the device (assets/model_configs)
            from ..bench.random_whisper import build_random_whisper

            return build_random_whisper(spec.id, device, torch_dtype, attention)
        model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch_dtype, attn_implementation=attention)
        return WhisperBundle(model=model, feature_extractor=WhisperFeatureExtractor.from_pretrained(folder),
                             tokenizer=WhisperTokenizer.from_pretrained(folder))

    try:
        bundle = load("flash_attention_2" if backend == "flash" else "sdpa")
    except (ImportError, ValueError) as error:
        if backend != "flash":
            raise
        logger.warning("Attention: flash attention could not be used for Whisper (%s); using PyTorch SDPA.", error)
        backend = "sdpa"
        bundle = load("sdpa")
    model = bundle.model
    model.to(device).eval()
    n_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    seconds = time.perf_counter() - started
    logger.info("Loaded %s from %s in %.1f s (%s, %s, attention %s)", spec.title, folder, seconds, device, dtype, backend)
    return LoadedModel(spec=spec, pipe=bundle, source=str(folder), revision=revision, n_bytes=n_bytes,
                       load_seconds=seconds, attention=backend, device=device, dtype=dtype,
                       optimisations={"engine": "transformers", "compute_type": dtype})

"""One Wan clip across several GPUs of this machine: diffusers' context parallelism, driven by the worker.

With ``--parallel N`` a Wan model (text or image to video) is loaded once in each of N rank processes
(``pipelines.scale.parallel_group``, ``pipelines.scale.parallel_rank``), one per GPU, and kept resident like any other
model: the model manager holds it, evicts it least-recently-used and drops it on Release VRAM, which
ends the processes. Each job still runs in the one GPU worker, as one job on the page:

    worker (tasks.video_parallel)           rank 0                         ranks 1..N-1
    1. text encode  --- prompt --------->   encode_prompt -> embeddings
    2. denoise      --- same inputs ---->   pipe(...)  <- collectives ->   pipe(...)
                    <-- step, preview ---   (each step: go on or stop?  -> broadcast)
    3. decode       --------------------->  VAE decode -> uint8 frames
    4. mp4 + sidecar, as for a local job

The split: Ulysses (all-to-all over heads) when the transformer's head count divides by N, ring attention
otherwise (it needs an attention kernel that returns the log-sum-exp: flash, sage or PyTorch's flash on
a CUDA GPU in bf16/fp16); where neither fits, Ulysses with padded heads (diffusers' "ulysses anything").
A clip whose token count does not divide by N uses diffusers' uneven ("anything") split on NCCL; gloo
(CPU processes) cannot gather uneven pieces, so there such a clip is refused with the sizes that work.

The ranks load through the app's own loader, so what it does at load (memory level, attention kernel,
fused projections, compilation) applies on every rank. The fast path's per-job parts (prompt-embedding
cache, batched guidance, step cache, the out-of-memory ladder) belong to the local path and do not run
across ranks yet; a job that asks for the step cache gets a note.

Other models, a machine with fewer GPUs than N, and benchmark runs with random weights run on one GPU as
before, with a line in the log and a note on the job. On a machine without a GPU, ``--parallel N`` runs N
CPU processes over gloo: that checks the machinery end to end (the tests do), it is not faster.

No torch import here at module level; nothing starts until a job needs it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from ..studio.jobs import RequestError

logger = logging.getLogger(__name__)

from .parallel_mode import _APP_KERNELS, CPMode, sequence_tokens
from .parallel_mode import choose_mode, cp_backend, ring_available  # noqa: F401  (here too, for callers)


def plan(settings, spec, device: str) -> tuple[int, str]:
    """How many ranks a job of ``spec`` runs on, and, when that is 1 although ``--parallel`` asked for more,
    why (for the log and the job's notes)."""
    wanted = int(getattr(settings, "parallel", 1) or 1)
    if wanted <= 1:
        return 1, ""
    from ..families.catalogue import family_of

    if not getattr(family_of(spec), "CONTEXT_PARALLEL", False):
        return 1, f"--parallel {wanted} is for Wan models; {spec.title} runs on one GPU."
    if getattr(settings, "random_weights", False):
        return 1, f"--parallel {wanted} is off for random weights (each process would draw its own); one GPU."
    if device.startswith("cuda"):
        import torch

        if not torch.distributed.is_available() or not torch.distributed.is_nccl_available():
            return 1, (f"--parallel {wanted} needs NCCL, which this PyTorch build lacks (Windows builds have none); "
                       f"{spec.title} runs on one GPU.")
        count = torch.cuda.device_count()
        if count < wanted:
            return 1, f"--parallel {wanted} asks for {wanted} GPUs but this machine has {count}; {spec.title} runs on one GPU."
    return wanted, ""


# --- the resident model -------------------------------------------------------------------------------


class ParallelPipeline:
    """What the model manager keeps for a Wan model loaded across N ranks (``LoadedModel.pipe``)."""

    def __init__(self, spec, group, infos: list[dict]):
        self.spec = spec
        self.group = group
        self.infos = infos
        first = infos[0]
        self.world = len(infos)
        self.mode = CPMode(**first["mode"])
        self.backend = first["backend"]

    @property
    def components(self) -> dict:
        """No module of this model lives in the worker's process (``loading.parameter_bytes`` counts none)."""
        return {}

    def split(self, frames: int, height: int, width: int) -> tuple[int, bool]:
        """The clip's token count and whether it splits unevenly; refuses what this group cannot run."""
        first = self.infos[0]
        tokens = sequence_tokens(frames, height, width, first["vae_scale_temporal"], first["vae_scale_spatial"],
                                 first["patch_size"])
        uneven = tokens % self.world != 0
        if uneven and self.backend == "gloo":
            def fits(count):
                return sequence_tokens(count, height, width, first["vae_scale_temporal"], first["vae_scale_spatial"],
                                       first["patch_size"]) % self.world == 0

            nearest = sorted((f for f in range(max(1, frames - 32), frames + 33) if (f - 1) % 4 == 0 and fits(f)),
                             key=lambda f: abs(f - frames))[:2]
            hint = (f"{' or '.join(str(f) for f in sorted(nearest))} frames work at this size"
                    if nearest else "no frame count near it works at this size: choose another aspect ratio")
            raise RequestError(
                f"On CPU processes (gloo) a clip's tokens must divide by --parallel {self.world}, and {frames} frames "
                f"at {width}x{height} make {tokens}: gloo cannot gather uneven pieces. {hint[0].upper()}{hint[1:]}.",
                key="parallel_uneven", tokens=tokens, world=self.world,
            )
        return tokens, uneven

    def encode(self, **kwargs) -> tuple:
        """``encode_prompt`` on rank 0; the embeddings come back here, on the CPU."""
        return self.group.request("encode", kwargs, ranks=[0], breaks_group=False)[0]

    def denoise(self, kwargs: dict, seed: int, shift, uneven: bool, preview_every: int, on_step,
                preview_upscale: int = 1) -> dict:
        """The same ``pipe(**kwargs)`` on every rank; ``on_step(step, preview) -> stop`` at each step."""
        payload = {"kwargs": kwargs, "seed": seed, "shift": shift, "uneven": uneven, "preview_every": preview_every,
                   "preview_upscale": preview_upscale}
        return self.group.request("denoise", payload, on_step=on_step)[0]

    def decode(self):
        """The latents rank 0 kept from the last ``denoise``, decoded there: uint8 frames (F, H, W, 3)."""
        return self.group.request("decode", None, ranks=[0], breaks_group=False)[0]

    def latents(self):
        """A CPU copy of the latents rank 0 kept from the last ``denoise`` (None after ``decode``)."""
        return self.group.request("latents", None, ranks=[0], breaks_group=False)[0]

    def record(self, tokens: int, uneven: bool) -> dict:
        """For the sidecar."""
        first = self.infos[0]
        return {
            "ranks": self.world,
            "mode": self.mode.kind,
            "degree": self.mode.degree,
            "heads": first["heads"],
            "heads_padded": self.mode.padded_heads,
            "tokens": tokens,
            "uneven_split": uneven,
            "backend": self.backend,
            "attention": first["cp_attention"],
            "devices": [info["device"] for info in self.infos],
        }

    def remove_all_hooks(self) -> None:
        """Called by the model manager when it drops this model (eviction, Release VRAM): end the ranks, which
        is what gives their GPU memory back."""
        self.close()

    def close(self) -> None:
        self.group.close()


def load_parallel_model(spec, settings, device: str, dtype: str):
    """Start the ranks for ``spec`` and wait until each holds the model; returns a ``LoadedModel``."""
    from ..device.loading import LoadedModel, resolve_source
    from .parallel_group import RankGroup

    world, _ = plan(settings, spec, device)
    started = time.perf_counter()
    # Here, once: builds the tiny demo model (never N processes at once) and reports a model missing from
    # the cache before any process starts.
    resolve_source(spec, settings)
    device_kind = "cuda" if device.startswith("cuda") else "cpu"
    if device_kind == "cpu":
        logger.info("--parallel %d without a GPU: %d CPU processes over gloo. This checks the machinery; it is not "
                    "faster than one process.", world, world)
    setup = {
        "spec_id": spec.id,
        "settings": dataclasses.replace(settings, parallel=1),
        "device_kind": device_kind,
        "dtype": dtype,
        "log_level": logging.WARNING,
    }
    group = RankGroup(world, setup)
    infos = group.start()
    pipe = ParallelPipeline(spec, group, infos)
    seconds = time.perf_counter() - started
    first = infos[0]
    logger.info("Loaded %s on %d ranks (%s) in %.1f s: context parallel %s, %s, attention %s, %.2f GiB per rank",
                spec.title, world, ", ".join(info["device"] for info in infos), seconds, pipe.mode.label,
                first["backend"], first["cp_attention"], first["n_bytes"] / 2**30)
    # The kernel the ranks really use, in the app's words where it has one (sidecar, status strip).
    attention = _APP_KERNELS.get(first["cp_attention"], first["cp_attention"])
    return LoadedModel(spec=spec, pipe=pipe, source=first["source"], revision=first["revision"],
                       n_bytes=first["n_bytes"], load_seconds=seconds, attention=attention, device=device, dtype=dtype)

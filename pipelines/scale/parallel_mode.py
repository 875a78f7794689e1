"""The choice of context-parallel split (Ulysses or ring) and the attention backend it runs with; shared by
the worker's side (``scale.parallel``) and the ranks (``scale.parallel_rank``). No torch import."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..studio.jobs import RequestError


# --- the choice of split ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CPMode:
    """How the sequence is shared: ``ulysses`` or ``ring`` over ``degree`` ranks."""

    kind: str  # "ulysses" or "ring"
    degree: int
    padded_heads: bool = False  # Ulysses with the head count padded up to a multiple of the degree

    @property
    def ulysses_degree(self) -> int:
        return self.degree if self.kind == "ulysses" else 1

    @property
    def ring_degree(self) -> int:
        return self.degree if self.kind == "ring" else 1

    @property
    def label(self) -> str:
        return f"{self.kind} x{self.degree}" + (" (heads padded)" if self.padded_heads else "")

    def config_kwargs(self, uneven: bool) -> dict:
        """Arguments of diffusers' ``ContextParallelConfig`` for this mode."""
        if self.kind == "ulysses":
            return {"ulysses_degree": self.degree, "ulysses_anything": self.padded_heads or uneven}
        return {"ring_degree": self.degree, "ring_anything": uneven}

    def set_flags(self, config, uneven: bool) -> None:
        """Switch a live ``ContextParallelConfig`` between the even and the uneven ("anything") split.

        diffusers reads these flags at every forward (the sharding hooks and the templated attention), so
        one model serves clips of any size; ``enable_parallelism`` itself runs once per model.
        """
        for name, value in self.config_kwargs(uneven).items():
            if name.endswith("_anything"):
                setattr(config, name, value)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def choose_mode(heads: int, world: int, ring_ok: bool) -> CPMode:
    """Ulysses when ``heads`` divides by ``world``; ring otherwise when ``ring_ok``; else padded Ulysses
    when diffusers allows the padding (fewer padded heads than heads per rank); else a ``RequestError``."""
    if world < 2:
        raise ValueError(f"context parallelism needs 2 or more ranks, not {world}")
    if heads % world == 0:
        return CPMode("ulysses", world)
    if ring_ok:
        return CPMode("ring", world)
    pad = world - heads % world
    if pad < (heads + pad) // world:
        return CPMode("ulysses", world, padded_heads=True)
    fits = ", ".join(str(n) for n in range(2, heads + 1) if heads % n == 0 and n <= 16)
    raise RequestError(
        f"--parallel {world}: the model's {heads} attention heads cannot be shared by {world} ranks. Ulysses needs "
        f"the head count to divide by {world} (it does for {fits}); ring attention needs a CUDA GPU in bf16 or fp16.",
        key="parallel_heads", heads=heads, world=world,
    )


def ring_available(device_kind: str, dtype: str) -> bool:
    """Ring attention merges partial results with the log-sum-exp, which PyTorch's SDPA does not return:
    it needs a kernel that does (flash-attn, SageAttention, cuDNN or PyTorch's own flash kernel), and
    all of them run on a CUDA GPU in bf16/fp16. Not on a CPU."""
    return device_kind == "cuda" and dtype in ("bf16", "fp16")


# The app's attention kernels (``--attention``) that diffusers can run context-parallel; all of them also
# return the log-sum-exp that ring attention needs. flash-attn 3 and xformers cannot (diffusers 0.42).
_CP_KERNELS = {"flash": "flash", "sage": "sage", "cudnn": "_native_cudnn"}


_APP_KERNELS = {"native": "sdpa", **{backend: name for name, backend in _CP_KERNELS.items()}}


def cp_backend(kind: str, attention: str) -> str:
    """diffusers' attention backend for a context-parallel run: the app's kernel where diffusers supports
    context parallelism with it, else PyTorch SDPA for Ulysses and PyTorch's flash kernel for ring."""
    if attention in _CP_KERNELS:
        return _CP_KERNELS[attention]
    return "_native_flash" if kind == "ring" else "native"


def sequence_tokens(frames: int, height: int, width: int, vae_temporal: int, vae_spatial: int, patch) -> int:
    """The transformer's sequence length for a clip (what context parallelism splits), with the frame count
    rounded to 4n+1 as ``WanPipeline`` does."""
    if (frames - 1) % vae_temporal:
        frames = frames // vae_temporal * vae_temporal + 1
    latent_frames = (frames - 1) // vae_temporal + 1
    return (latent_frames // patch[0]) * (height // vae_spatial // patch[1]) * (width // vae_spatial // patch[2])

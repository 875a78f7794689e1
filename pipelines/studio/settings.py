"""Run-time settings of the app, filled from the command line (see ``app.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Exit code with which the app asks its launcher (start.sh / start.bat) to start it again.
RESTART_EXIT_CODE = 42
# Set by the launchers, so the app knows someone will restart it.
LAUNCHER_ENV = "CINESCRIBE_LAUNCHER"

DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("auto", "bf16", "fp16", "fp32")
ATTENTION_BACKENDS = ("auto", "sdpa", "cudnn", "xformers", "flash", "sage")
OFFLOAD_MODES = ("none", "model", "sequential", "group")
TASKS = ("t2v", "i2v", "asr")
# The fast path (pipelines/fastpath.py, pipelines/memory_levels.py).
MEMORY_LEVELS = ("auto", "resident", "text_offload", "vae_tiling", "model_offload", "group_offload", "sequential_offload")
BATCH_GUIDANCE = ("auto", "on", "off")


@dataclass
class Settings:
    """Everything the pipelines need to know about how the app was started."""

    outputs_dir: Path = Path("outputs")
    data_dir: Path = Path("data")
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "auto"
    offload: str = "none"
    vae_tiling: bool = False
    gpu_memory_gb: float | None = None
    preload: tuple[str, ...] = ()
    demo: bool = False
    random_weights: bool = False  # benchmarks: real architectures, random weights (pipelines/random_weights.py)
    # The fast path: see pipelines/fastpath.py and pipelines/memory_levels.py.
    memory_level: str = "auto"  # --offload, when not none, takes precedence
    compile: bool = False  # regional torch.compile of the transformer / UNet blocks
    fuse_qkv: bool = True
    batch_guidance: str = "auto"
    prompt_cache: int = 8  # prompt embeddings kept for repeated prompts; 0 = off
    fp8: bool = False  # fp8 weight storage (layer-wise casting): changes the output
    asr_static_cache: bool = False  # Whisper sequential decoding with a static KV cache (compiled on CUDA)
    asr_engine: str = "auto"  # auto | transformers | ctranslate2 (families/whisper_load.py)
    asr_models_dir: str = ""  # the creator's Whisper folders, besides models/whisper/ (families/whisper_custom.py)
    loras_dir: str = ""  # the creators' LoRA folder; "" = loras/ in the app folder (pipelines/loras/library.py)
    parallel: int = 1  # one Wan clip across this many GPUs (context parallelism, pipelines/parallel.py)
    # Run jobs on a Ray cluster instead of this machine's GPU: "auto" or a Ray address (pipelines/cluster.py).
    cluster: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outputs_dir = Path(self.outputs_dir)
        self.data_dir = Path(self.data_dir)
        self.cluster = (self.cluster or "").strip()
        for name, value, allowed in (
            ("device", self.device, DEVICES),
            ("dtype", self.dtype, DTYPES),
            ("attention", self.attention, ATTENTION_BACKENDS),
            ("offload", self.offload, OFFLOAD_MODES),
            ("memory_level", self.memory_level, MEMORY_LEVELS),
            ("batch_guidance", self.batch_guidance, BATCH_GUIDANCE),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {', '.join(allowed)}, not {value!r}.")
        unknown = [task for task in self.preload if task not in TASKS]
        if unknown:
            raise ValueError(f"`preload` takes {', '.join(TASKS)}; unknown: {', '.join(unknown)}.")
        if not isinstance(self.prompt_cache, int) or self.prompt_cache < 0:
            raise ValueError(f"`prompt_cache` must be a whole number of entries (0 = off), not {self.prompt_cache!r}.")
        if isinstance(self.parallel, bool) or not isinstance(self.parallel, int) or not 1 <= self.parallel <= 64:
            raise ValueError(f"`parallel` must be a whole number of GPUs from 1 to 64, not {self.parallel!r}.")
        if self.gpu_memory_gb is not None and self.gpu_memory_gb <= 0:
            raise ValueError(f"`gpu_memory` must be a positive number of GB, not {self.gpu_memory_gb}.")

    @property
    def demo_models_dir(self) -> Path:
        return self.data_dir / "demo_models"

    @property
    def jobs_db(self) -> Path:
        """The queue and history of jobs (SQLite)."""
        return self.data_dir / "jobs.sqlite3"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

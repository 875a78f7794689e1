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
ATTENTION_BACKENDS = ("auto", "sdpa", "xformers", "flash", "sage")
OFFLOAD_MODES = ("none", "model", "sequential", "group")
TASKS = ("t2v", "i2v", "asr")


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
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outputs_dir = Path(self.outputs_dir)
        self.data_dir = Path(self.data_dir)
        for name, value, allowed in (
            ("device", self.device, DEVICES),
            ("dtype", self.dtype, DTYPES),
            ("attention", self.attention, ATTENTION_BACKENDS),
            ("offload", self.offload, OFFLOAD_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {', '.join(allowed)}, not {value!r}.")
        unknown = [task for task in self.preload if task not in TASKS]
        if unknown:
            raise ValueError(f"`preload` takes {', '.join(TASKS)}; unknown: {', '.join(unknown)}.")
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

"""One rank of a context-parallel group: a process of its own, started by ``pipelines.scale.parallel_group``.

It loads the Wan pipeline on its device through the app's own loader, turns on diffusers' context
parallelism on the transformer(s) (``enable_parallelism`` with a ``ContextParallelConfig``), tells the GPU
worker it is ready, then serves the worker's requests until told to stop (or until the worker's end of the
pipe closes, so a killed app leaves no rank behind):

- ``encode`` (rank 0 only): the prompt through the text encoder; the embeddings go back to the worker,
  which hands the very same tensors to every rank for ``denoise``.
- ``denoise`` (every rank, same inputs): ``pipe(...)`` to latents. At each step rank 0 tells the worker
  (progress, a preview now and then) and waits for its answer, go on or stop; rank 0 then broadcasts that
  answer, so every rank sets the pipeline's interrupt flag at the same step and no rank is left waiting in
  a collective.
- ``decode`` (rank 0 only): the latents it kept to uint8 frames, sent back for the mp4.

Nothing here runs at import: the module is imported in the rank process, after spawn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def cpu_counts_as_one_device():
    """While inside, ``torch.accelerator.device_count()`` is at least 1.

    diffusers 0.42's ``ModelMixin._resolve_parallel_config`` places each rank on
    ``rank % torch.accelerator.device_count()``, a division by zero on a machine without an accelerator,
    so ``enable_parallelism`` cannot run on CPU ranks as shipped. CPU ranks count the CPU as one device
    while it runs; with a GPU the count is real and nothing is changed.
    """
    import torch

    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def denoisers(pipe) -> list:
    """The pipeline's transformer(s): Wan 2.2 A14B has two experts, both run in parallel."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def enable_context_parallel(models: list, mode, attention: str, device_kind: str) -> list:
    """Turn on context parallelism in ``mode`` on each of ``models`` (a pipeline's ``denoisers``); returns
    their configs.

    The models share one device mesh (``ring`` x ``ulysses``). The attention backend is the one
    ``parallel.cp_backend`` picks for the mode (ring needs one that returns the log-sum-exp).
    """
    from diffusers import ContextParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    from .parallel_mode import cp_backend

    backend = cp_backend(mode.kind, attention)
    mesh = init_device_mesh(device_kind, (mode.ring_degree, mode.ulysses_degree), mesh_dim_names=("ring", "ulysses"))
    configs = []
    for model in models:
        model.set_attention_backend(backend)
        config = ContextParallelConfig(mesh=mesh, **mode.config_kwargs(uneven=False))
        with cpu_counts_as_one_device():
            model.enable_parallelism(config=config)
        configs.append(config)
    return configs


def _describe(error: BaseException) -> dict:
    from ..device.memory import is_out_of_memory

    params = getattr(error, "params", {}) or {}
    return {
        "type": type(error).__name__,
        "message": str(error),
        "key": getattr(error, "key", ""),
        "params": {name: value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
                   for name, value in params.items()},
        "oom": is_out_of_memory(error),
        "traceback": traceback.format_exc(),
    }


def _to(value, device):
    """Tensors in ``value`` (a dict, list or tuple of them, or one) moved to ``device``."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {name: _to(item, device) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(item, device) for item in value)
    return value


def _cpu(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(item) for item in value)
    return value


class Rank:
    """The state of this rank between requests: the pipeline, the CP configs, rank 0's last latents."""

    def __init__(self, rank: int, world: int, setup: dict, conn):
        self.rank, self.world, self.setup, self.conn = rank, world, setup, conn
        self.device_kind = setup["device_kind"]
        self.device = f"cuda:{rank}" if self.device_kind == "cuda" else "cpu"
        self.latents = None

    # --- start ------------------------------------------------------------------------------------

    def start(self, port: int) -> dict:
        import datetime

        import torch
        import torch.distributed as dist

        from ..device.loading import load_video_pipeline
        from ..families.catalogue import family_of, get_spec
        from .parallel_mode import choose_mode, cp_backend, ring_available

        backend = "nccl" if self.device_kind == "cuda" else "gloo"
        if self.device_kind == "cuda":
            torch.cuda.set_device(self.rank)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world))
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=self.rank, world_size=self.world,
                                timeout=datetime.timedelta(minutes=self.setup.get("timeout_min", 30)))
        # Control messages (stop at this step?) go over gloo even when the tensors go over NCCL.
        self.control = dist.new_group(backend="gloo") if backend != "gloo" else None

        spec = get_spec(self.setup["spec_id"])
        started = time.perf_counter()
        # Only rank 0 encodes prompts: the others never load the text encoder (UMT5-XXL: 11 GB).
        without = () if self.rank == 0 else ("text_encoder", "tokenizer")
        self.family = family_of(spec)
        self.model = load_video_pipeline(spec, self.setup["settings"], self.device, self.setup["dtype"], self.family,
                                         without=without)
        self.pipe = self.model.pipe
        first = denoisers(self.pipe)[0]
        heads = int(first.config.num_attention_heads)
        self.mode = choose_mode(heads, self.world, ring_available(self.device_kind, self.setup["dtype"]))
        self.configs = enable_context_parallel(denoisers(self.pipe), self.mode, self.model.attention, self.device_kind)
        return {
            "rank": self.rank,
            "device": self.device,
            "backend": backend,
            "heads": heads,
            "mode": self.mode.as_dict(),
            "attention": self.model.attention,
            "cp_attention": cp_backend(self.mode.kind, self.model.attention),
            "patch_size": list(first.config.patch_size),
            "vae_scale_spatial": int(self.pipe.vae_scale_factor_spatial),
            "vae_scale_temporal": int(self.pipe.vae_scale_factor_temporal),
            "n_bytes": int(self.model.n_bytes),
            "load_seconds": round(time.perf_counter() - started, 3),
            "source": self.model.source,
            "revision": self.model.revision,
        }

    # --- requests ---------------------------------------------------------------------------------

    def encode(self, kwargs: dict):
        import torch

        with torch.no_grad():
            return _cpu(self.pipe.encode_prompt(**kwargs, device=self.pipe._execution_device))

    def denoise(self, payload: dict) -> dict:
        import torch
        import torch.distributed as dist

        from ..families.wan import set_flow_shift  # context parallelism is Wan's (``CONTEXT_PARALLEL``)
        from ..media.preview import latents_to_rgb

        for config in self.configs:
            self.mode.set_flags(config, uneven=payload["uneven"])
        if payload.get("shift") is not None:
            set_flow_shift(self.pipe, payload["shift"])
        kwargs = _to(payload["kwargs"], self.device)
        steps = kwargs["num_inference_steps"]
        every = payload["preview_every"]
        flag = torch.zeros(1, dtype=torch.int32)
        self.latents = None

        def on_step(pipeline, step, timestep, tensors):
            if self.rank == 0:
                preview = None
                if every and ((step + 1) % every == 0 or step + 1 == steps):
                    preview = latents_to_rgb(tensors["latents"][0].float().cpu().numpy(), upscale=payload.get("preview_upscale", 1),
                                             factors=self.family.PREVIEW_RGB)
                self.conn.send(("step", step, preview))
                kind, stop = self.conn.recv()
                flag[0] = int(bool(stop))
            dist.broadcast(flag, src=0, group=self.control)
            if flag.item():
                pipeline._interrupt = True  # every rank at the same step
            return {}

        started = time.perf_counter()
        latents = self.pipe(
            **kwargs,
            generator=torch.Generator("cpu").manual_seed(payload["seed"]),
            output_type="latent",
            callback_on_step_end=on_step,
            callback_on_step_end_tensor_inputs=["latents"],
        ).frames
        seconds = time.perf_counter() - started
        if self.rank == 0:
            self.latents = latents
        return {"interrupted": bool(flag.item()), "seconds": round(seconds, 3)}

    def decode(self):
        if self.latents is None:
            raise RuntimeError("decode asked for before a denoise finished")
        latents, self.latents = self.latents, None
        return self.family.decode(self.pipe, latents, False)

    def latents_copy(self):
        return None if self.latents is None else self.latents.detach().cpu()

    def serve(self) -> None:
        handlers = {"encode": self.encode, "denoise": self.denoise, "decode": self.decode, "latents": self.latents_copy}
        while True:
            try:
                kind, payload = self.conn.recv()
            except (EOFError, OSError):  # the worker is gone
                return
            if kind == "stop":
                return
            try:
                handler = handlers[kind]
                result = handler() if payload is None else handler(payload)
            except Exception as error:  # reported to the worker, which decides whether the group goes on
                logger.error("rank %d: %s failed: %s", self.rank, kind, error)
                self.conn.send(("error", _describe(error)))
            else:
                self.conn.send(("result", result))


def rank_main(rank: int, world: int, port: int, setup: dict, conn) -> None:
    """Entry point of a rank process (``multiprocessing`` spawn target)."""
    logging.basicConfig(level=setup.get("log_level", logging.WARNING),
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.set_verbosity_error()  # "experimental feature" and per-call shape notes, once per rank
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        state = Rank(rank, world, setup, conn)
        info = state.start(port)
    except BaseException as error:
        try:
            conn.send(("error", _describe(error)))
        finally:
            conn.close()
        return
    conn.send(("ready", info))
    try:
        state.serve()
    finally:
        import torch.distributed as dist

        conn.close()
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

"""The rank processes of one context-parallel model, seen from the GPU worker thread.

``RankGroup`` spawns N processes (``multiprocessing`` spawn: CUDA cannot be forked), one per GPU (or N CPU
processes for checks without a GPU), each running ``pipelines.scale.parallel_rank.rank_main``, and talks to each
over its own pipe. A request goes to some or all ranks; the worker waits for every answer while watching
each process, so a rank that fails or dies is seen at once instead of leaving the others blocked in a
collective: the group is then shut down and the next request starts it again.

The processes end on ``close()``; also when the object is collected (the model manager dropping the
model on eviction or Release VRAM), at interpreter exit, and by themselves when the worker's end of their
pipe closes.
"""

from __future__ import annotations

import logging
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..studio.jobs import RequestError

logger = logging.getLogger(__name__)


class RankFailed(RuntimeError):
    """A rank raised, died or stopped answering; the message names the rank and what happened."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shutdown(processes: list, conns: list, timeout: float) -> None:
    """Ask every rank to stop, then make sure: terminate, then kill what is left."""
    for conn in conns:
        try:
            conn.send(("stop", None))
        except (OSError, ValueError, BrokenPipeError):
            pass
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
    for conn in conns:
        try:
            conn.close()
        except OSError:
            pass


def error_from(rank: int, world: int, info: dict) -> Exception:
    """The exception a rank's error report stands for in the worker: a ``RequestError`` stays one (the page
    shows its message and translation key as for a local job); anything else is a ``RankFailed`` whose
    text keeps "out of memory" when it was, so the worker's out-of-memory handling still applies."""
    if info.get("key") or info.get("type") in ("RequestError", "ModelNotAvailable"):
        if info.get("type") == "ModelNotAvailable":
            from ..device.loading import ModelNotAvailable

            return ModelNotAvailable(info["message"], key=info.get("key", ""), **info.get("params", {}))
        return RequestError(info["message"], key=info.get("key", ""), **info.get("params", {}))
    text = f"rank {rank} of {world}: {info.get('type')}: {info.get('message')}"
    if info.get("oom") and "out of memory" not in text.lower():
        text += " (out of memory)"
    return RankFailed(text)


class RankGroup:
    def __init__(self, world: int, setup: dict):
        self.world = world
        self.setup = setup
        self.infos: list[dict] = []
        self._processes: list = []
        self._conns: list = []
        self._finalizer = None

    @property
    def alive(self) -> bool:
        return bool(self._processes) and all(process.is_alive() for process in self._processes)

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def start(self) -> list[dict]:
        """Spawn the ranks and wait until each has loaded its model; returns what each reported."""
        import multiprocessing

        from .parallel_rank import rank_main

        self.close()
        context = multiprocessing.get_context("spawn")
        port = free_port()
        for rank in range(self.world):
            ours, theirs = context.Pipe()
            process = context.Process(target=rank_main, args=(rank, self.world, port, self.setup, theirs),
                                      name=f"cinescribe-rank{rank}", daemon=True)
            process.start()
            theirs.close()
            self._processes.append(process)
            self._conns.append(ours)
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._conns, 30.0)
        try:
            infos = self._collect(range(self.world), expect="ready")
        except BaseException:
            self.close()
            raise
        self.infos = [infos[rank] for rank in range(self.world)]
        return self.infos

    def request(self, kind: str, payload: Any = None, ranks: list[int] | None = None,
                on_step: Callable[[int, Any], bool] | None = None, breaks_group: bool = True) -> dict[int, Any]:
        """Send ``kind`` to ``ranks`` (all by default) and return each one's result by rank.

        ``on_step(step, preview)`` answers rank 0's step messages: True stops every rank at that step.
        A failure closes the group when ``breaks_group`` (the ranks may be stuck in a collective) and is
        raised here; ``encode`` and ``decode`` run on rank 0 alone and leave the group as it is.
        """
        if not self.alive:
            logger.info("Starting the %d ranks again", self.world)
            self.start()
        ranks = list(range(self.world)) if ranks is None else list(ranks)
        for rank in ranks:
            self._conns[rank].send((kind, payload))
        try:
            return self._collect(ranks, expect="result", on_step=on_step)
        except BaseException:
            if breaks_group:
                self.close()
            raise

    def _collect(self, ranks, expect: str, on_step=None) -> dict[int, Any]:
        from multiprocessing.connection import wait

        waiting = set(ranks)
        results: dict[int, Any] = {}
        by_object = {}
        for rank in range(self.world):
            by_object[self._conns[rank]] = ("conn", rank)
            by_object[self._processes[rank].sentinel] = ("died", rank)
        while waiting:
            for ready in wait(list(by_object)):
                what, rank = by_object[ready]
                if what == "died":
                    code = self._processes[rank].exitcode
                    raise RankFailed(f"rank {rank} of {self.world} exited (exit code {code}) during {expect}")
                try:
                    message = ready.recv()
                except (EOFError, OSError):
                    raise RankFailed(f"rank {rank} of {self.world} closed its pipe during {expect}") from None
                kind = message[0]
                if kind == "step" and on_step is not None:
                    _, step, preview = message
                    stop = bool(on_step(step, preview))
                    ready.send(("reply", stop))
                elif kind == "error":
                    info = message[1]
                    logger.error("Rank %d of %d failed:\n%s", rank, self.world, info.get("traceback", ""))
                    raise error_from(rank, self.world, info)
                elif kind == expect:
                    results[rank] = message[1]
                    waiting.discard(rank)
                else:
                    raise RankFailed(f"rank {rank} sent {kind!r} while the worker waited for {expect!r}")
        return results

    def close(self) -> None:
        """Stop every rank (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown once
        self._finalizer = None
        self._processes, self._conns = [], []

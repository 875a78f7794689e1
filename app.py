"""Cinescribe: start the studio. ``python app.py --help`` lists the flags.

Parses the command line into ``Settings``, starts the GPU worker, builds the page and serves it until
the page asks for a restart (exit code 42 to the launcher, or a fresh process without one) or Ctrl+C.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from pipelines.studio.settings import (
    ATTENTION_BACKENDS,
    BATCH_GUIDANCE,
    MEMORY_LEVELS,
    DEVICES,
    DTYPES,
    LAUNCHER_ENV,
    OFFLOAD_MODES,
    RESTART_EXIT_CODE,
    TASKS,
    Settings,
)

APP_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("cinescribe")
# Largest upload: 2 GB holds a 3-hour WAV at 44.1 kHz stereo (1.9 GB; 3 h is the longest file speech to text
# takes), any compressed audio of that length, and about half an hour of phone video (extract the sound with
# ``ffmpeg -i in.mp4 -vn -c:a copy out.m4a`` for longer ones). Images stop at 40 megapixels, far below it.
# Each upload is written to the data folder's tmp/ while it arrives, so the limit also bounds the disk one
# request can fill.
DEFAULT_MAX_UPLOAD_MB = 2048


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="Cinescribe: local video and speech studio.")
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    net.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    net.add_argument("--listen", action="store_true", help="bind 0.0.0.0 so other machines on the network can connect")
    net.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    net.add_argument("--auth", help="for quick local use: require a login, user:password on the command line "
                                    "(several: user1:pw1,user2:pw2); to share the studio use --auth-file")
    net.add_argument("--auth-file", type=Path, metavar="FILE",
                     help="users with hashed passwords and roles, written by scripts/users.py (old user:password "
                          "lines still work, with a warning)")
    net.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                     help="a reverse proxy's address whose X-Forwarded-For is believed (repeatable; default: none)")
    net.add_argument("--login-failures", type=int, default=5, metavar="N",
                     help="wrong passwords in a row for one user from one address before a lockout (default 5)")
    net.add_argument("--login-address-failures", type=int, default=30, metavar="N",
                     help="wrong passwords in a row from one address, any user, before a lockout (default 30)")
    net.add_argument("--login-lockout", type=float, default=30.0, metavar="S",
                     help="the first lockout in seconds; each next one doubles (default 30)")
    net.add_argument("--login-max-lockout", type=float, default=900.0, metavar="S",
                     help="the longest lockout in seconds (default 900)")
    net.add_argument("--ssl-certfile", type=Path, metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    net.add_argument("--ssl-keyfile", type=Path, metavar="FILE", help="the certificate's private key (PEM)")
    net.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                     help=f"largest file one upload may be, in MB (default {DEFAULT_MAX_UPLOAD_MB}; 0: no limit)")
    files = parser.add_argument_group("files")
    files.add_argument("--outputs", type=Path, default=APP_DIR / "outputs", help="where clips and transcripts go")
    files.add_argument("--data-dir", type=Path, default=APP_DIR / "data", help="logs, demo models, temporary uploads")
    gpu = parser.add_argument_group("device")
    gpu.add_argument("--device", choices=DEVICES, default="auto")
    gpu.add_argument("--dtype", choices=DTYPES, default="auto", help="auto: bf16 on GPUs that have it, else fp16; fp32 on CPU")
    gpu.add_argument("--attention", choices=ATTENTION_BACKENDS, default="auto",
                     help="auto: the fastest kernel that passes a probe (flash-attn, cuDNN on Hopper+, else PyTorch "
                          "SDPA; xformers for UNets); sage quantises, so only when asked")
    gpu.add_argument("--offload", choices=OFFLOAD_MODES, default="none",
                     help="keep weights in CPU memory and move them to the GPU when needed (less VRAM, slower)")
    gpu.add_argument("--vae-tiling", action="store_true", help="decode video in tiles (less VRAM at high resolutions)")
    gpu.add_argument("--gpu-memory", type=float, metavar="GB",
                     help="the most VRAM the app will use (resident models, memory levels, the allocator's cap)")
    fast = parser.add_argument_group("speed (see pipelines/fastpath.py)")
    fast.add_argument("--memory-level", choices=MEMORY_LEVELS, default="auto",
                      help="auto: chosen from the free VRAM measured at load (resident, text_offload, vae_tiling, "
                           "model_offload, sequential_offload; group_offload only when asked); --offload wins")
    fast.add_argument("--compile", action="store_true",
                      help="torch.compile the repeated transformer/UNet blocks (first job slower; cached across runs)")
    fast.add_argument("--no-fuse-qkv", dest="fuse_qkv", action="store_false",
                      help="do not fuse the attention's q/k/v projections")
    fast.add_argument("--batch-guidance", choices=BATCH_GUIDANCE, default="auto",
                      help="run the guidance pass in one batch with the conditional one (auto: when resident)")
    fast.add_argument("--prompt-cache", type=int, default=8, metavar="N",
                      help="prompt embeddings kept for repeated prompts (0 = off; default 8)")
    fast.add_argument("--fp8", action="store_true",
                      help="store transformer weights in fp8 (GPUs with sm 8.9+): less VRAM, changes the output")
    fast.add_argument("--asr-static-cache", action="store_true",
                      help="Whisper sequential decoding with a static KV cache (compiled on a CUDA GPU)")
    fast.add_argument("--asr-engine", choices=("auto", "transformers", "ctranslate2"), default="auto",
                      help="speech to text engine (auto: CTranslate2, int8 on a CPU, float16 on CUDA)")
    fast.add_argument("--models-dir", default="", metavar="DIR",
                      help="a folder of your own Whisper models, one per sub-folder (besides models/whisper/)")
    files.add_argument("--loras-dir", type=Path, default=APP_DIR / "loras", metavar="DIR",
                       help="the LoRA folder (*.safetensors, subfolders allowed; default loras/ in the app folder)")
    gpu.add_argument("--parallel", type=int, default=1, metavar="N",
                     help="run one Wan clip across N GPUs of this machine (context parallelism); other models: one GPU")
    gpu.add_argument("--preload", default="", help=f"load these tasks' default models at start: {','.join(TASKS)}")
    gpu.add_argument("--cluster", default="", metavar="auto|ADDRESS",
                     help="run the jobs on a Ray cluster, one worker per GPU: auto (the cluster this machine is in, "
                          "else a new one on this machine) or a Ray address, e.g. 10.0.0.1:6379 (docs/cluster.md)")
    parser.add_argument("--demo", action="store_true",
                        help="tiny random models built locally: the whole app runs with no weights and no network")
    parser.add_argument("--model-source", default="auto", choices=["auto", "huggingface", "modelscope"],
                        help="where the Models tab downloads weights: auto (Hugging Face or HF_ENDPOINT's mirror, "
                             "ModelScope when that cannot be reached), huggingface, modelscope")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    preload = tuple(task.strip() for task in args.preload.split(",") if task.strip())
    return Settings(
        outputs_dir=args.outputs,
        data_dir=args.data_dir,
        device=args.device,
        dtype=args.dtype,
        attention=args.attention,
        offload=args.offload,
        vae_tiling=args.vae_tiling,
        gpu_memory_gb=args.gpu_memory,
        memory_level=args.memory_level,
        compile=args.compile,
        fuse_qkv=args.fuse_qkv,
        batch_guidance=args.batch_guidance,
        prompt_cache=args.prompt_cache,
        fp8=args.fp8,
        asr_static_cache=args.asr_static_cache,
        asr_engine=args.asr_engine,
        asr_models_dir=args.models_dir,
        loras_dir=str(args.loras_dir),
        preload=preload,
        demo=args.demo,
        parallel=args.parallel,
        cluster=args.cluster,
        extra={"model_source": args.model_source},
    )


def read_auth(auth: str | None, auth_file: Path | None) -> list[tuple[str, str]] | None:
    """``user:password`` pairs from ``--auth`` and ``--auth-file`` (blank lines and # comments skipped)."""
    entries: list[str] = []
    if auth:
        entries += [part for part in auth.split(",") if part.strip()]
    if auth_file:
        if not auth_file.is_file():
            raise SystemExit(f"--auth-file {auth_file} does not exist.")
        for line in auth_file.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                entries.append(line.strip())
    pairs = []
    for entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise SystemExit(f"Auth entries must look like user:password, not {entry!r}.")
        pairs.append((user.strip(), password))
    return pairs or None


def load_users(auth: str | None, auth_file: Path | None):
    """The users of ``--auth`` and ``--auth-file`` (a ``UserBook``), or None without either.

    Old plain ``user:password`` lines of the file still work, with a warning naming the command that
    hashes them.
    """
    from pipelines.studio.users import CONVERT_HINT, User, UserBook, read_users

    users = [User(user, password) for user, password in read_auth(auth, None) or []]
    if auth_file:
        if not auth_file.is_file():
            raise SystemExit(f"--auth-file {auth_file} does not exist.")
        try:
            from_file = read_users(auth_file)
        except ValueError as error:
            raise SystemExit(str(error)) from None
        if plain := [user.name for user in from_file if user.plain]:
            logger.warning("%s holds plain-text passwords (%s). Hash them with: %s", auth_file, ", ".join(plain),
                           CONVERT_HINT.format(file=auth_file))
        users += from_file
    return UserBook(users) if users else None


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def open_access_warning(host: str, share: bool, auth: bool) -> list[str]:
    """The banner for the log when others can reach the page without a password (empty when they cannot)."""
    if auth or (host in LOOPBACK_HOSTS and not share):
        return []
    who = []
    if share:
        who.append("ANYONE ON THE INTERNET who has the gradio.live link (--share)")
    if host not in LOOPBACK_HOSTS:
        who.append(f"every machine that can reach this one (bound to {host}{', --listen' if host == '0.0.0.0' else ''})")
    return [
        "!" * 100,
        "!!  WARNING: NO PASSWORD. The page and its API are open to " + " and ".join(who) + ".",
        "!!  They can run jobs, download every output, release VRAM and restart the app.",
        "!!  Start with --auth user:password (or --auth-file FILE) to require a login.",
        "!" * 100,
    ]


class AppController:
    """How the page asks the main thread to restart the app."""

    def __init__(self) -> None:
        self.restart_requested = threading.Event()
        self.done = threading.Event()

    def request_restart(self, delay: float = 1.0) -> None:
        """Restart ``delay`` seconds from now, so the page gets its answer before the server stops."""
        logger.info("Restart requested from the page")
        self.restart_requested.set()
        timer = threading.Timer(delay, self.done.set)
        timer.daemon = True
        timer.start()


def _prepare_environment(settings: Settings) -> None:
    """Keep everything local: no analytics, Gradio's temporary files inside the data folder."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_TEMP_DIR", str((settings.data_dir / "tmp").resolve()))
    for folder in (settings.outputs_dir, settings.data_dir, settings.logs_dir, Path(os.environ["GRADIO_TEMP_DIR"])):
        folder.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("error: HTTPS needs both --ssl-certfile and --ssl-keyfile.", file=sys.stderr)
        return 2
    for flag, path in (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile)):
        if path is not None and not path.is_file():
            print(f"error: {flag} {path} does not exist.", file=sys.stderr)
            return 2
    # Uvicorn believes X-Forwarded-For from these addresses only (its default is 127.0.0.1: anyone on this
    # machine could forge an address and dodge the login throttle).
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(args.trusted_proxy)
    from pipelines.studio.throttle import LoginThrottle

    try:
        throttle = LoginThrottle(args.login_failures, args.login_lockout, args.login_max_lockout,
                                 args.login_address_failures)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not 0 <= args.max_upload_mb < float("inf"):
        print(f"error: --max-upload-mb must be 0 (no limit) or more, not {args.max_upload_mb:g}.", file=sys.stderr)
        return 2
    _prepare_environment(settings)

    from pipelines.studio.logbuffer import install

    log_buffer = install(getattr(logging, args.log_level), log_file=settings.logs_dir / "cinescribe.log")
    users = load_users(args.auth, args.auth_file)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()

    from pipelines.device.worker import GPUWorker
    from ui.app import build_demo, launch_options

    host = "0.0.0.0" if args.listen else args.host
    for line in open_access_warning(host, args.share, bool(users)):
        logger.warning(line)
    if settings.demo:
        logger.info("Demo mode: tiny random models, clips are noise.")

    from pipelines.studio.outputs import sweep_partials
    from pipelines.studio.store import JobStore

    if swept := sweep_partials(settings.outputs_dir):
        logger.info("Removed %d unfinished file(s) left by an earlier crash", swept)
    if settings.cluster:  # one queue over the GPUs of a Ray cluster (pipelines/cluster.py)
        from pipelines.scale.cluster import ClusterError, RayExecutor

        worker = RayExecutor(settings, store=JobStore(settings.jobs_db))
        try:
            worker.start()
        except ClusterError as error:
            logger.error("%s", error)
            return 2
    else:
        worker = GPUWorker(settings, store=JobStore(settings.jobs_db))
        worker.start()
    if settings.preload:
        worker.preload(settings.preload)
    controller = AppController()
    from ui.auth_access import Access

    access = Access(users, throttle, args.trusted_proxy, settings.outputs_dir, os.environ["GRADIO_TEMP_DIR"],
                    store=worker.queue.store, owners_file=settings.data_dir / "uploads.owners", jobs=worker.job)
    demo = build_demo(worker, settings, controller, log_buffer, access=access)
    demo.queue(default_concurrency_limit=8)
    try:
        demo.launch(
            server_name=host,
            server_port=args.port,
            share=args.share,
            prevent_thread_lock=True,
            quiet=True,
            **launch_options(settings, max_upload_mb=args.max_upload_mb, access=access),
            **({"ssl_certfile": str(args.ssl_certfile), "ssl_keyfile": str(args.ssl_keyfile), "ssl_verify": False}
               if args.ssl_certfile else {}),
        )
    except OSError as error:
        logger.error("Could not start the server on %s:%s (%s). Is the port taken? Try --port %d.",
                     host, args.port, error, args.port + 1)
        worker.stop()
        return 1
    logger.info("Cinescribe is ready: %s://%s:%d  (outputs: %s)", "https" if args.ssl_certfile else "http",
                "localhost" if host in ("127.0.0.1", "0.0.0.0") else host, args.port, settings.outputs_dir.resolve())
    try:
        controller.done.wait()
    except KeyboardInterrupt:
        logger.info("Stopping")
    demo.close()
    worker.stop()
    if not controller.restart_requested.is_set():
        return 0
    if os.environ.get(LAUNCHER_ENV):
        logger.info("Restarting through the launcher")
        return RESTART_EXIT_CODE
    logger.info("Restarting")
    subprocess.Popen([sys.executable, *sys.argv], cwd=os.getcwd())
    return 0


if __name__ == "__main__":
    sys.exit(main())

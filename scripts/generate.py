"""Run a batch from the command line, through the app's own job code: one job per row, a progress line
per job, every output path printed, and an exit code that says whether every job succeeded.

    python scripts/generate.py t2v prompts.txt --demo --preset Preview
    python scripts/generate.py i2v shots.csv --set steps=20 --json summary.json
    python scripts/generate.py asr interview.wav talk.mp4 --set language=en
    cat prompts.txt | python scripts/generate.py t2v - --seed-policy random

The batch is a text file (one prompt per line; for ``asr`` one audio file per line; blank lines and
``#`` comments skipped) or a CSV whose header names request fields (see ``pipelines/batch.py``); ``-``
reads it from standard input. Every row is checked before anything is queued. Paths inside a batch file
start at ``<data>/inputs``; paths given on the command line start at the current folder; either must
lie inside the outputs or data folder. The app's own flags (``--demo``, ``--outputs``, ``--data-dir``,
``--device``, ``--dtype``, ``--attention``, ``--offload``, ``--vae-tiling``, ``--gpu-memory``,
``--log-level``) work as in ``app.py``.

Exit codes: 0 every job succeeded; 1 some job failed or was stopped (the summary says which rows and
why); 2 a bad batch or bad arguments (nothing queued); 130 interrupted with Ctrl+C (the running job is
cancelled first).

Progress goes to standard error (plain ASCII, one line per job, rewritten in place on a terminal);
output paths go to standard output, one per line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXIT_OK, EXIT_FAILED, EXIT_BAD_BATCH, EXIT_INTERRUPTED = 0, 1, 2, 130
BATCH_SUFFIXES = (".txt", ".csv")
BAR_WIDTH = 20
REFRESH_SECONDS = 0.5


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace, list[str]]:
    """This script's own arguments, the app's (``app.parse_args``: files, device, --demo), and the raw rest."""
    import app

    parser = argparse.ArgumentParser(
        prog="generate.py",
        description="Run a batch of text-to-video, image-to-video or speech-to-text jobs, one job per row.",
        epilog="Also takes app.py's flags: --demo, --outputs, --data-dir, --device, --dtype, --attention, --offload, "
        "--vae-tiling, --gpu-memory, --log-level. Exit codes: 0 all succeeded, 1 some failed, 2 bad batch "
        "(nothing queued), 130 interrupted.",
    )
    parser.add_argument("task", choices=("t2v", "i2v", "asr"))
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="a .txt or .csv batch file ('-' for standard input); for asr also audio/video files")
    parser.add_argument("--format", choices=("auto", "text", "csv"), default="auto", dest="fmt",
                        help="how to read the batch (auto: CSV for .csv files or a header of known columns)")
    parser.add_argument("--model", help="model id for rows that do not name one (see download_models.py --list)")
    parser.add_argument("--preset", help="preset for rows that do not name one (Preview, Standard, ...)")
    parser.add_argument("--seed", type=int, help="seed for rows without one (-1: random)")
    parser.add_argument("--seed-policy", choices=("fixed", "random"), default="fixed",
                        help="fixed: the same seed for every row (default); random: a new seed per row")
    parser.add_argument("--image", help="i2v: the image for rows that do not name one")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any request field for rows that leave it empty, e.g. --set steps=20 --set language=en")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write a machine-readable summary ('-': stdout)")
    parser.add_argument("--check", action="store_true", help="only check the batch and show its rows; run nothing")
    own, rest = parser.parse_known_args(argv)
    app_args = app.parse_args(rest)
    return own, app_args, rest


class BadBatch(Exception):
    """A problem with the arguments or the batch found before anything was queued."""

    def __init__(self, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors or []


def _cli_path(value: str) -> str:
    """A path typed on the command line, taken from the current folder."""
    return str(Path(value).expanduser().resolve())


def read_source(own: argparse.Namespace) -> tuple[str, str, str]:
    """The batch text, its name (for the format) and the format to read it with."""
    from pipelines.tasks.batch import read_batch_file

    inputs = own.inputs
    batch_files = [item for item in inputs if item == "-" or item.lower().endswith(BATCH_SUFFIXES)]
    if own.task == "asr" and not batch_files:
        return "\n".join(_cli_path(item) for item in inputs), "", "text"  # each file its own row
    if len(inputs) != 1 or len(batch_files) != 1:
        raise BadBatch(f"give one batch file (.txt, .csv or -), not {' '.join(inputs)}")
    source = inputs[0]
    if source == "-":
        return sys.stdin.read(), "", own.fmt
    return read_batch_file(source), Path(source).name, own.fmt


def defaults_from(own: argparse.Namespace) -> dict:
    defaults: dict = {}
    for item in own.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadBatch(f"--set takes FIELD=VALUE, not {item!r}")
        defaults[name.strip()] = value
    for name in ("model", "preset", "seed"):
        if getattr(own, name) is not None:
            defaults[name] = getattr(own, name)
    if own.image:
        defaults["image"] = _cli_path(own.image)
    return defaults


# --- output --------------------------------------------------------------------------------------------


def _console(stream) -> None:
    """Never fail on a character the console cannot show (a Windows code page and a Chinese prompt)."""
    try:
        stream.reconfigure(errors="replace")
    except (AttributeError, ValueError):
        pass


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    value = int(round(value))
    return f"{value // 60}m{value % 60:02d}s" if value >= 60 else f"{value}s"


class Progress:
    """One line per job on standard error: rewritten in place on a terminal, printed once when finished
    otherwise (a log file or CI gets one line per job)."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.width = 0
        self.durations: list[float] = []
        self.last = 0.0

    def _write(self, text: str, final: bool) -> None:
        if self.live:
            pad = max(0, self.width - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self.width = 0 if final else len(text)
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _prefix(self, index: int, row: int) -> str:
        return f"[{index + 1}/{self.total}] row {row}"

    def _batch_eta(self, index: int) -> str:
        if not self.durations:
            return ""
        left = (self.total - index - 1) * sum(self.durations) / len(self.durations)
        return f"  batch ~{_seconds(left)} left" if left > 0 else ""

    def update(self, index: int, row: int, job, position: int) -> None:
        now = time.monotonic()
        if not self.live or now - self.last < 0.2:
            return
        self.last = now
        p = job.progress
        if job.state.value == "queued":
            text = f"{self._prefix(index, row)}  queued (place {position})"
        else:
            done = p.step / p.total if p.total else 0.0
            filled = int(done * BAR_WIDTH)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            clip = f" clip {p.clip}/{p.clips}" if p.clips > 1 else ""
            eta = f"  ETA {_seconds(p.eta_s)}" if p.eta_s is not None and p.stage == "denoise" else ""
            text = f"{self._prefix(index, row)}  [{bar}] {p.stage or 'start'}{clip} step {p.step}/{p.total}{eta}"
        self._write(text + self._batch_eta(index), final=False)

    def finish(self, index: int, outcome) -> None:
        if outcome.seconds is not None:
            self.durations.append(outcome.seconds)
        took = f" in {outcome.seconds:.1f}s" if outcome.seconds is not None else ""
        if outcome.ok:
            first = outcome.outputs[0] if outcome.outputs else ""
            text = f"{self._prefix(index, outcome.row)}  done{took}  {first}"
        else:
            text = f"{self._prefix(index, outcome.row)}  {outcome.state.upper()}{took}: {outcome.error}"
        self._write(text + (self._batch_eta(index) if index + 1 < self.total else ""), final=True)


def write_json(target: Path | None, summary: dict) -> None:
    if target is None:
        return
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    if str(target) == "-":
        print(text)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_text(text + "\n", encoding="utf-8")
    os.replace(temp, target)  # the summary is ours to refresh; it is not a user's output


def bad_batch(own: argparse.Namespace, error: Exception) -> int:
    errors = getattr(error, "errors", None) or []
    print(f"error: {error}", file=sys.stderr)
    print("Nothing was queued.", file=sys.stderr)
    rows = []
    for item in errors:
        if isinstance(item, dict):
            rows.append(item)
        else:  # a BatchRow
            rows.append({"row": item.row, "error": str(item.error), "error_key": item.error.key,
                         "error_params": {k: str(v) for k, v in item.error.params.items()}})
    write_json(own.json, {"task": own.task, "batch": None, "exit_code": EXIT_BAD_BATCH, "queued": 0,
                          "error": str(error), "error_key": getattr(error, "key", ""), "errors": rows})
    return EXIT_BAD_BATCH


def show_plan(plan) -> None:
    from pipelines.tasks.batch import describe_row

    for row in plan.rows:
        what, settings = describe_row(plan.task, row.request)
        print(f"row {row.row}: {what}  |  {settings}", file=sys.stderr)


# --- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    _console(sys.stdout)
    _console(sys.stderr)
    own, app_args, rest = parse_args(argv)
    import app

    try:
        settings = app.settings_from_args(app_args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_BATCH
    level = app_args.log_level if "--log-level" in rest else "WARNING"
    logging.basicConfig(level=getattr(logging, level), format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    from pipelines.tasks.batch import parse_batch, submit_batch
    from pipelines.studio.jobs import RequestError

    try:
        text, name, fmt = read_source(own)
        plan = parse_batch(text, own.task, settings, defaults=defaults_from(own), seed_policy=own.seed_policy,
                           fmt=fmt, name=name)
    except (BadBatch, RequestError) as error:
        return bad_batch(own, error)
    if own.check:
        show_plan(plan)
        print(f"{len(plan.rows)} row(s) are good; nothing was run (--check).", file=sys.stderr)
        write_json(own.json, {"task": own.task, "batch": plan.id, "exit_code": EXIT_OK, "queued": 0, "checked": [
            {"row": row.row, "request": _plain(row.request)} for row in plan.rows]})
        return EXIT_OK

    for folder in (settings.outputs_dir, settings.data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    from pipelines.device.worker import GPUWorker

    worker = GPUWorker(settings)
    worker.start()
    interrupted = False
    run = None
    started = time.time()
    try:
        worker.wait_ready()
        run = submit_batch(worker, plan, owner="cli")
        print(f"Batch {run.id}: {len(run.jobs)} {own.task} job(s) queued on {worker.status().get('device', '?')}.",
              file=sys.stderr)
        follow(run, worker, print_paths=str(own.json) != "-")
    except KeyboardInterrupt:
        interrupted = True
        print("\nInterrupted: stopping the batch...", file=sys.stderr)
        if run is not None:
            try:
                run.cancel(worker)
                deadline = time.time() + 120
                while not run.finished and time.time() < deadline:
                    run.wait(REFRESH_SECONDS)
            except KeyboardInterrupt:
                pass  # a second Ctrl+C: stop waiting
    finally:
        worker.stop()

    outcomes = run.outcomes() if run is not None else []
    failed = [o for o in outcomes if not o.ok]
    code = EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if failed else EXIT_OK)
    ok = len(outcomes) - len(failed)
    print(f"Batch {run.id if run else '-'}: {ok} of {len(plan.rows)} row(s) succeeded in "
          f"{time.time() - started:.1f}s.", file=sys.stderr)
    for outcome in failed:
        print(f"  row {outcome.row}: {outcome.state}: {outcome.error}", file=sys.stderr)
    labels = {row.row: row.request for row in plan.rows}
    write_json(own.json, {
        "task": own.task, "batch": run.id if run else None, "exit_code": code, "queued": len(outcomes),
        "succeeded": ok, "failed": len(failed), "interrupted": interrupted,
        "rows": [{**o.as_dict(), "request": _plain(labels.get(o.row))} for o in outcomes],
    })
    return code


def follow(run, worker, print_paths: bool = True) -> None:
    """Show each job's progress in turn (the worker runs them in order) and print its outputs when done."""
    progress = Progress(len(run.jobs))
    for index, (row, job) in enumerate(zip(run.rows, run.jobs)):
        seen = -1
        while not job.state.finished:
            seen = job.wait_for_change(seen, REFRESH_SECONDS)
            progress.update(index, row, job, worker.position(job))
        from pipelines.tasks.batch import row_outcome

        outcome = row_outcome(row, job)
        progress.finish(index, outcome)
        for path in outcome.outputs if print_paths else ():
            print(path, flush=True)


def _plain(request) -> dict | None:
    import dataclasses

    return dataclasses.asdict(request) if request is not None else None


if __name__ == "__main__":
    sys.exit(main())

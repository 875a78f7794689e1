"""scripts/generate.py run as a user would: a real --demo batch in a subprocess, its outputs and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(tmp_path: Path, data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate.py"), *args, "--demo", "--outputs", str(tmp_path / "outputs"),
         "--data-dir", str(data_dir)],
        cwd=tmp_path, input=stdin, capture_output=True, text=True, encoding="utf-8", timeout=600,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def test_a_tiny_batch_succeeds_prints_its_outputs_and_a_summary(tmp_path, data_dir):
    batch = tmp_path / "prompts.txt"
    batch.write_text("# two shots\nA cat on a beach\n\n一只猫在海滩上\n", encoding="utf-8")
    summary = tmp_path / "summary.json"
    done = generate(tmp_path, data_dir, "t2v", str(batch), "--preset", "Preview", "--set", "frames=5",
                    "--set", "steps=1", "--seed", "5", "--json", str(summary))
    assert done.returncode == 0, done.stderr
    printed = [Path(line) for line in done.stdout.splitlines() if line.strip()]
    assert [p.suffix for p in printed] == [".mp4", ".json", ".mp4", ".json"]
    assert all(p.is_file() for p in printed)
    assert "[2/2] row 4  done" in done.stderr
    report = json.loads(summary.read_text(encoding="utf-8"))
    assert (report["exit_code"], report["succeeded"], report["failed"]) == (0, 2, 0)
    assert [row["row"] for row in report["rows"]] == [2, 4]
    assert report["rows"][1]["request"]["prompt"] == "一只猫在海滩上"
    sidecar = json.loads(printed[1].read_text(encoding="utf-8"))
    assert f"batch {report['batch']} row 2" in sidecar["notes"]
    assert sidecar["settings"]["seed"] == 5


def test_one_bad_row_exits_2_and_writes_nothing(tmp_path, data_dir):
    batch = tmp_path / "shots.csv"
    batch.write_text("prompt,steps\nA cat,1\nA dog,lots\nA fox,1\n", encoding="utf-8")
    summary = tmp_path / "summary.json"
    done = generate(tmp_path, data_dir, "t2v", str(batch), "--preset", "Preview", "--json", str(summary))
    assert done.returncode == 2
    assert "Row 3: Steps must be a whole number, not 'lots'." in done.stderr
    assert "Nothing was queued." in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.*"))
    report = json.loads(summary.read_text(encoding="utf-8"))
    assert (report["exit_code"], report["queued"]) == (2, 0)
    assert [(e["row"], e["error_key"]) for e in report["errors"]] == [(3, "steps_type")]


def test_check_only_and_standard_input(tmp_path, data_dir):
    done = generate(tmp_path, data_dir, "t2v", "-", "--check", "--preset", "Preview", "--seed-policy", "random",
                    stdin="prompt,seed\nA cat,3\nA dog,\n")
    assert done.returncode == 0, done.stderr
    assert "row 2: A cat" in done.stderr and "seed 3" in done.stderr
    assert "2 row(s) are good; nothing was run" in done.stderr
    assert not (tmp_path / "outputs").exists()
    outside = generate(tmp_path, data_dir, "i2v", "-", "--check", "--image", str(tmp_path / "elsewhere.png"),
                       stdin="turns its head\n")
    assert outside.returncode == 2
    assert "outside the app's folders" in outside.stderr

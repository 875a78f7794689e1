"""The benchmark runs on --demo and writes well-formed tables and JSON; the doctor's checks fail with a fix."""

from __future__ import annotations

import importlib
import json
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
benchmark_cli = importlib.import_module("benchmark")
doctor = importlib.import_module("doctor")


def test_demo_benchmark_writes_table_and_json(tmp_path, data_dir):
    outputs = tmp_path / "outputs"
    code = benchmark_cli.main(["--demo", "--tasks", "t2v", "--repeat", "2", "--workloads", "Preview", "--baseline",
                               "--soak", "2",
                               "--outputs", str(outputs), "--data-dir", str(data_dir)])
    assert code == 0
    [md_path] = (outputs / "benchmarks").glob("*_benchmark.md")
    report = json.loads(md_path.with_suffix(".json").read_text(encoding="utf-8"))
    assert report["mode"] == "demo" and report["repeat"] == 2
    assert report["cold_start_s"] and report["cold_start_s"] > 0
    assert report["platform"]["torch"] and report["platform"]["python"]
    [workload] = report["workloads"]
    assert workload["name"] == "t2v wan2.1-t2v-1.3b Preview"
    assert len(workload["runs"]) == 2 and workload["warmup"]["state"] == "done"
    assert workload["wall_s"]["min"] <= workload["wall_s"]["mean"] <= workload["wall_s"]["max"]
    assert set(workload["stages_s"]) >= {"text_encode", "denoise", "decode", "encode"}
    assert workload["s_per_step"] > 0 and workload["rss_peak_gib"] > 0
    assert workload["baseline"]["wall_s"]["mean"] > 0
    assert report["soak"]["jobs"] == 2 and report["soak"]["succeeded"] == 2

    lines = md_path.read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| workload"))
    columns = lines[header].count("|")
    assert set(lines[header + 1].replace("|", "")) == {"-"}
    row = lines[header + 2]
    assert row.startswith("| t2v wan2.1-t2v-1.3b Preview |") and row.count("|") == columns
    assert "Soak: 2 jobs: 2 succeeded" in md_path.read_text(encoding="utf-8")
    assert "--demo --tasks t2v --repeat 2" in report["command"]


def test_image_and_speech_workloads_report_their_own_figures(tmp_path, data_dir):
    outputs = tmp_path / "outputs"
    code = benchmark_cli.main(["--demo", "--tasks", "i2v,asr", "--repeat", "1", "--workloads", "quick,asr",
                               "--no-cold-start", "--outputs", str(outputs), "--data-dir", str(data_dir)])
    assert code == 0
    [json_path] = (outputs / "benchmarks").glob("*_benchmark.json")
    report = json.loads(json_path.read_text(encoding="utf-8"))
    names = [w["name"] for w in report["workloads"]]
    assert names == ["i2v i2vgen-xl Quick preview", "asr whisper-large-v3 1 min", "asr whisper-large-v3-turbo 1 min"]
    i2v, asr = report["workloads"][0], report["workloads"][1]
    assert i2v["s_per_step"] > 0 and "denoise" in i2v["stages_s"]
    assert asr["audio_s"] == 60 and asr["real_time_factor"] > 0
    assert {"decode", "features", "generate"} <= set(asr["stages_s"])
    table = json_path.with_suffix(".md").read_text(encoding="utf-8")
    assert "| i2v i2vgen-xl Quick preview |" in table and "| asr whisper-large-v3 1 min | 60 |" in table


def test_unknown_task_is_refused(tmp_path):
    assert benchmark_cli.main(["--demo", "--tasks", "paint", "--outputs", str(tmp_path)]) == 2


def test_random_weight_configs_are_the_real_architectures():
    from pipelines.bench.random_weights import parameter_count

    assert 1.35e9 < parameter_count("wan2.1-t2v-1.3b", "transformer") < 1.5e9
    assert 13.5e9 < parameter_count("wan2.1-t2v-14b", "transformer") < 14.5e9
    assert 5.5e9 < parameter_count("wan2.1-t2v-1.3b", "text_encoder") < 5.8e9  # UMT5-XXL encoder
    with pytest.raises(ValueError, match="No architecture config"):
        parameter_count("no-such-model", "transformer")


def test_port_taken_fails_with_the_fix():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        check = doctor.check_port("127.0.0.1", port)
        assert check.status == doctor.FAIL
        assert f"--port {port + 1}" in check.fix
        assert doctor.main(["--port", str(port)]) == 1
    assert doctor.check_port("127.0.0.1", port).status == doctor.OK


def test_ffmpeg_missing_fails_with_the_fix(monkeypatch):
    import imageio_ffmpeg

    def nowhere():
        raise RuntimeError("no ffmpeg")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", nowhere)
    check = doctor.check_ffmpeg(which=lambda name: None)
    assert check.status == doctor.FAIL and "imageio-ffmpeg" in check.fix
    assert doctor.check_ffmpeg().status == doctor.OK


def test_unsupported_python_and_full_disk_fail_with_a_fix(tmp_path, monkeypatch):
    assert doctor.check_python((3, 10)).status == doctor.FAIL  # diffusers 0.42 needs 3.11
    assert doctor.check_python((3, 14)).status == doctor.FAIL
    assert doctor.check_python((3, 11)).status == doctor.OK
    monkeypatch.setattr(doctor, "DISK_FAIL_GB", 1e9)
    check = doctor.check_disk("outputs", tmp_path / "not-yet-created")
    assert check.status == doctor.FAIL and check.fix


def test_doctor_json_lists_every_check(capsys, tmp_path):
    doctor.main(["--json", "--port", "0", "--outputs", str(tmp_path)])
    checks = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in checks]
    assert names[0] == "Python" and "ffmpeg" in names and any(n.startswith("Port") for n in names)
    assert all(c["status"] in ("OK", "WARN", "FAIL") for c in checks)

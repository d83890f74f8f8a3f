"""Bad input, interruptions and concurrency through the real stage entry points and real DVC."""

from __future__ import annotations

import http.server
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spokenwords.audio.torch_shaping import BadAudio, prepare
from spokenwords.data.processed_splits import load_split
from spokenwords.data.sources import DIGITS, write_labels
from spokenwords.models.checkpoint import load_checkpoint
from tests.helpers import (
    REPO,
    commit,
    copy_project,
    dvc,
    environment,
    predictor,
    run,
    stage,
    tone,
    write_params,
    write_processed,
    write_wav,
)


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def declared_outputs(stage_name: str) -> list[str]:
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage_name]
    return [
        next(iter(out)) if isinstance(out, dict) else out
        for out in pipeline.get("outs", []) + pipeline.get("metrics", [])
    ]


def assert_wrote_only_declared_outputs(root: Path, before: set[str], stage_name: str) -> None:
    outputs = declared_outputs(stage_name)
    new = files_under(root) - before
    stray = [path for path in new if not any(path == out or path.startswith(f"{out}/") for out in outputs)]
    assert not stray, f"{stage_name} wrote files outside its declared outputs: {stray}"


# Each case: (file name under a label folder, how to write it, expected skip reason or None if it is kept).
def write_case(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clip = tone(440, 16000, 0.5)
    writers = {
        "int8": lambda: soundfile.write(path, clip, 16000, subtype="PCM_U8"),
        "int24_stereo": lambda: soundfile.write(path, np.stack([clip, clip], 1), 44100, subtype="PCM_24"),
        "int32_5ch": lambda: soundfile.write(path, np.stack([clip] * 5, 1), 22050, subtype="PCM_32"),
        "float64": lambda: soundfile.write(path, clip, 48000, subtype="DOUBLE"),
        "flac": lambda: soundfile.write(path, clip, 16000, format="FLAC"),
        "ogg": lambda: soundfile.write(path, clip, 16000, format="OGG", subtype="VORBIS"),
        "silent": lambda: soundfile.write(path, np.zeros(8000, dtype=np.float32), 16000),
        "one_sample": lambda: soundfile.write(path, clip[:1], 16000),
        "ten_minutes": lambda: soundfile.write(path, np.tile(clip, 1200), 16000),
        "empty_file": lambda: path.write_bytes(b""),
        "zero_length": lambda: soundfile.write(path, np.zeros(0, dtype=np.float32), 16000),
        "truncated_header": lambda: path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfm"),
        "random_bytes": lambda: path.write_bytes(np.random.default_rng(1).bytes(5000)),
        "nan_samples": lambda: soundfile.write(
            path, np.where(np.arange(8000) == 7, np.nan, clip[:8000]), 16000, subtype="FLOAT"
        ),
        "inf_samples": lambda: soundfile.write(path, np.full(800, np.inf, dtype=np.float32), 16000, subtype="FLOAT"),
    }
    writers[kind]()


CASES = {
    "int8": None,
    "int24_stereo": None,
    "int32_5ch": None,
    "float64": None,
    "flac": None,
    "ogg": None,
    "silent": "no speech found",
    "one_sample": "no speech found",
    "ten_minutes": None,
    "empty_file": "not readable audio",
    "zero_length": "zero-length audio",
    "truncated_header": "not readable audio",
    "random_bytes": "not readable audio",
    "nan_samples": "NaN or infinite samples",
    "inf_samples": "NaN or infinite samples",
}
SUFFIX = {"flac": ".flac", "ogg": ".ogg"}


def case_path(kind: str) -> str:
    return f"zero/odd file ünïcode {kind.replace('_', '-')}_nohash_0{SUFFIX.get(kind, '.wav')}"


def test_audio_corpus_through_preprocess_is_kept_or_skipped_with_its_reason(tmp_path):
    raw = tmp_path / "data/raw"
    for index, label in enumerate(DIGITS):
        for speaker in ("s0", "s1", "s2"):
            write_wav(raw / label / f"{speaker}_nohash_0.wav", tone(200 + 40 * index, 16000, 0.4), 16000)
    write_labels(raw, DIGITS)
    (raw / "validation_list.txt").write_text("".join(f"{label}/s1_nohash_0.wav\n" for label in DIGITS))
    (raw / "testing_list.txt").write_text("".join(f"{label}/s2_nohash_0.wav\n" for label in DIGITS))
    for kind in CASES:
        write_case(raw / case_path(kind), kind)
    write_params(tmp_path)
    before = files_under(tmp_path)

    result = stage("preprocess", tmp_path)

    assert "Traceback" not in result.stderr
    assert_wrote_only_declared_outputs(tmp_path, before, "preprocess")
    report = json.loads((tmp_path / "data/processed/report.json").read_text())
    skipped = {item["path"]: item["reason"] for item in report["skipped"]}
    for kind, reason in CASES.items():
        if reason is None:
            assert case_path(kind) not in skipped, (kind, skipped.get(case_path(kind)))
        else:
            assert skipped[case_path(kind)].startswith(reason), (kind, skipped.get(case_path(kind)))
    train = load_split(tmp_path / "data/processed/train.pt")
    kept = [case_path(kind) for kind, reason in CASES.items() if reason is None]
    assert set(kept) <= set(train["paths"])
    assert torch.isfinite(train["waveforms"]).all() and train["waveforms"].shape[1:] == (1, 16000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 60), value=st.binary(min_size=1, max_size=8), cut=st.integers(0, 400))
def test_fuzzed_wav_headers_decode_or_are_refused_cleanly(tmp_path, position, value, cut):
    path = tmp_path / "fuzz.wav"
    soundfile.write(path, tone(440, 8000, 0.05), 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[position : position + len(value)] = value
    path.write_bytes(bytes(data[: len(data) - cut]))
    try:
        waveform = prepare(path, 8000, 1.0)
    except BadAudio:
        return
    assert waveform.shape == (1, 8000) and torch.isfinite(waveform).all()


@pytest.mark.parametrize(
    ("field", "offset", "value", "reason"),
    [
        ("channels", 22, struct.pack("<H", 1000), "unsupported channel count 1000"),
        ("sample rate", 24, struct.pack("<I", 50_000_000), "unsupported sample rate 50000000 Hz"),
    ],
)
def test_absurd_header_fields_are_refused_before_any_large_read(tmp_path, field, offset, value, reason):
    path = tmp_path / f"{field}.wav"
    soundfile.write(path, tone(440, 8000, 0.5), 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[offset : offset + len(value)] = value
    path.write_bytes(bytes(data))
    with pytest.raises(BadAudio, match=reason):
        prepare(path, 8000, 1.0)


def test_predict_reports_each_bad_file_and_predicts_the_rest(tmp_path):
    write_processed(tmp_path)
    write_params(tmp_path, notebook=True, train={"epochs": 1, "batch_size": 16, "device": "cpu"})
    stage("train", tmp_path)
    names = []
    for kind in ("int24_stereo", "empty_file", "ogg", "random_bytes", "ten_minutes"):
        write_case(tmp_path / "in" / case_path(kind), kind)
        names.append(f"in/{case_path(kind)}")
    before = files_under(tmp_path)
    result = predictor("predict", tmp_path, *names, "missing.wav", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert files_under(tmp_path) == before
    predicted = [line.split(": ")[0] for line in result.stdout.splitlines()]
    assert predicted == [names[0], names[2], names[4]]
    assert f"error: {names[1]}: not readable audio" in result.stderr
    assert "error: missing.wav: no such file" in result.stderr


def test_download_404_names_the_url_and_leaves_no_raw_data(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/missing/fsdd.tar.gz"
        write_params(tmp_path, data={"source": "fsdd", "url": url})
        before = files_under(tmp_path)
        result = stage("download", tmp_path, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert url in result.stderr and "404" in result.stderr
    assert not (tmp_path / "data/raw").exists()
    assert files_under(tmp_path) == before


def wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_ctrl_c_stops_training_within_a_batch_and_writes_nothing(tmp_path):
    write_processed(tmp_path, clips_per_label=30)
    write_params(tmp_path, notebook=True, train={"epochs": 10_000, "batch_size": 4, "device": "cpu"})
    log = tmp_path / "train.log"
    with log.open("w") as handle:
        # As from a terminal: a shell's background jobs ignore SIGINT, and Python then never raises KeyboardInterrupt.
        process = subprocess.Popen(
            [sys.executable, "-m", "stages.train"],
            cwd=tmp_path,
            env=environment(),
            stderr=handle,
            stdout=handle,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            wait_for(lambda: "epoch   1:" in log.read_text(), what="the first epoch")
            process.send_signal(signal.SIGINT)
            start = time.monotonic()
            code = process.wait(timeout=30)
        finally:
            process.kill()  # no-op once it has exited; never leave a 10,000-epoch run behind
    assert time.monotonic() - start < 5
    assert code == 130
    output = log.read_text()
    assert "interrupted" in output and "Traceback" not in output
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()


# a few epochs scored on about ten test clips: one prediction int8 changes is ten points, so the drop limit is off
TINY_EXPORT = {"max_int8_drop": 100.0, "latency_clips": 10}


@pytest.fixture(scope="module")
def slow_project(tmp_path_factory):
    """A tiny synthetic project whose train stage runs long enough to be interrupted."""
    root = copy_project(tmp_path_factory.mktemp("interrupt"))
    write_params(
        root,
        notebook=True,
        data={"synthetic_clips": 100},
        train={"epochs": 400, "batch_size": 8, "device": "cpu"},
        evaluate={"device": "cpu"},
        export=TINY_EXPORT,
    )
    commit(root, "slow config")
    dvc(root, "repro", "preprocess")
    return root


def train_pid(root: Path) -> int | None:
    """The pid of the `stages.train` process running in ``root``, if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if b"stages.train" in command and Path(os.readlink(entry / "cwd")) == root:
                return int(entry.name)
        except OSError:
            continue
    return None


def start_repro(root: Path, log: Path) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"], cwd=root, env=environment(), stdout=handle, stderr=subprocess.STDOUT
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the stage process")
def test_sigkill_mid_epoch_leaves_no_half_written_outputs_and_a_rerun_recovers(slow_project, tmp_path):
    root = slow_project
    repro = start_repro(root, tmp_path / "first.log")
    wait_for(lambda: "epoch   2:" in (tmp_path / "first.log").read_text(), what="two epochs")
    pid = train_pid(root)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert repro.wait(timeout=120) != 0
    visible = [path for path in files_under(root) if path.startswith(("models/", "metrics/", "plots/"))]
    assert all(Path(path).name.startswith(".") or path.endswith(".gitignore") for path in visible), visible

    write_params(
        root,
        notebook=True,
        data={"synthetic_clips": 100},
        train={"epochs": 3, "batch_size": 8, "device": "cpu"},
        evaluate={"device": "cpu"},
        export=TINY_EXPORT,
    )
    dvc(root, "repro")
    model, _ = load_checkpoint(root / "models/model.pt")
    assert all(torch.isfinite(tensor).all() for tensor in model.state_dict().values())
    assert json.loads((root / "metrics/train.json").read_text())["epoch"] == 3
    assert json.loads((root / "metrics/eval.json").read_text())["clips"] > 0
    assert "Data and pipelines are up to date." in dvc(root, "repro").stdout
    run(["git", "checkout", "params.yaml"], root)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the stage process")
def test_second_concurrent_repro_is_refused_and_the_first_finishes(slow_project, tmp_path):
    root = slow_project
    write_params(
        root,
        notebook=True,
        data={"synthetic_clips": 100},
        train={"epochs": 40, "batch_size": 8, "device": "cpu"},
        evaluate={"device": "cpu"},
        export=TINY_EXPORT,
    )
    first = start_repro(root, tmp_path / "first.log")
    wait_for(lambda: train_pid(root) is not None, what="the train stage")
    second = dvc(root, "repro", check=False)
    assert second.returncode != 0
    message = second.stdout + second.stderr
    assert "is busy, it is being blocked by" in message and ".dvc/tmp/rwlock" in message, message
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()
    assert json.loads((root / "metrics/train.json").read_text())["epoch"] == 40
    load_checkpoint(root / "models/model.pt")
    run(["git", "checkout", "params.yaml"], root)

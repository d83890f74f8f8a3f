"""Both predictors over many files: worker processes and batches give the answers of one file at a time, in input
order, with every bad file on its own line, names of any bytes escaped, flat memory and no process left behind.
Real models (exported by the export stage), real audio files, real subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spokenwords.cli import run as run_main
from tests.helpers import FSDD_ARCHIVE, environment, stage, tone, write_wav
from tests.models.test_export import WITHOUT_TORCH
from tests.models.test_export import project as untrained_project
from tools.project import measure

MODULES = ("spokenwords.predict", "spokenwords.predict_onnx")
MARKER = "PREDICT_TEST_MARKER"  # set in a run's environment, to find its processes afterwards


def exported_project(root: Path, name: str, rate: int) -> Path:
    """A folder with an untrained, seeded checkpoint of model ``name`` and its export (the export stage's files)."""
    root.mkdir(parents=True, exist_ok=True)
    untrained_project(root, name, rate)
    stage("export", root)
    shutil.rmtree(root / "data")  # the predictors need the models alone
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Callable[[str], Path]:
    """The exported project of a model, built on first use: ``embedding`` (the default: the frozen front end, then
    the head) or ``dscnn`` (a whole waveform graph, at 8 kHz).
    """
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            rate = 8000 if name == "dscnn" else 16000
            built[name] = exported_project(tmp_path_factory.mktemp(name), name, rate)
        return built[name]

    return get


def word(frequency: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    """A tone with a word's rise and fall."""
    return tone(frequency, rate, seconds) * np.hanning(int(rate * seconds)).astype(np.float32)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[str]:
    """Names (in one folder) of readable recordings of every shape: rates, stereo, a late word in a long file,
    and real FSDD recordings where the mirror is present.
    """
    root = tmp_path_factory.mktemp("recordings")
    names = []
    for index, rate in enumerate((8000, 11025, 16000, 22050, 44100, 48000) * 3):
        name = f"word{index:02d}_{rate}.wav"
        write_wav(root / name, word(180 + 45 * index, rate, 0.3 + 0.05 * index), rate)
        names.append(name)
    stereo = word(440, 44100)
    write_wav(root / "stereo.wav", np.stack([stereo, 0.3 * stereo], axis=1), 44100)
    late = np.concatenate([np.zeros(int(16000 * 1.7), np.float32), word(700, 16000), np.zeros(16000, np.float32)])
    write_wav(root / "late.wav", late, 16000)
    names += ["stereo.wav", "late.wav"]
    if FSDD_ARCHIVE.is_file():
        with tarfile.open(FSDD_ARCHIVE) as archive:
            for member in archive.getmembers():
                if member.name.endswith(("_theo_0.wav", "_lucas_1.wav")):
                    (root / Path(member.name).name).write_bytes(archive.extractfile(member).read())
                    names.append(Path(member.name).name)
    return [str(root / name) for name in names]


def predict(
    module: str, cwd: Path, *args: str | bytes, marker: str = "", timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run a predictor as a user would (the ONNX one with torch blocked from import), with ``marker`` in its
    environment; output as text.
    """
    command = (
        [sys.executable, "-m", module]
        if module == "spokenwords.predict"
        else [sys.executable, "-c", WITHOUT_TORCH, module]
    )
    env = {**environment(), MARKER: marker or uuid.uuid4().hex}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def processes_with(marker: str) -> list[int]:
    """The processes (this user's) whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"{MARKER}={marker}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # ended meanwhile, or another user's
            continue
    return found


def answers(result: subprocess.CompletedProcess) -> list[dict]:
    assert "Traceback" not in result.stderr and "is blocked" not in result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same(ours: list[dict], theirs: list[dict]) -> None:
    """The same answers: files, labels, errors, and probabilities within float tolerance."""
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.keys() == other.keys() and mine["file"] == other["file"]
        assert mine.get("label") == other.get("label") and mine.get("error") == other.get("error")
        assert mine.get("probability", 0) == pytest.approx(other.get("probability", 0), abs=1e-5)
        for one, two in zip(mine.get("top3", []), other.get("top3", []), strict=True):
            assert one["probability"] == pytest.approx(two["probability"], abs=1e-5)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("model", ["embedding", "dscnn"])
def test_many_files_get_the_answers_of_one_file_at_a_time(project, recordings, module, model):
    root = project(model)
    files = [*recordings[:10], "missing.wav", *recordings[10:]]
    pooled = predict(module, root, "--json", "--batch", "8", *files)  # workers, batches of 8 files
    alone = predict(module, root, "--json", "--workers", "0", "--batch", "1", *files)  # one at a time, in-process
    assert (
        pooled.returncode == alone.returncode == 1
        and pooled.stderr == alone.stderr == "error: missing.wav: no such file\n"
    )
    assert_same(answers(pooled), answers(alone))
    assert [line["file"] for line in answers(pooled)] == files
    single = predict(module, root, "--json", files[-1])  # and a run for a single file: no pool at all
    assert_same(answers(single), answers(pooled)[-1:])


@pytest.mark.parametrize("module", MODULES)
def test_test_time_shifts_are_batched_as_one_at_a_time(project, recordings, module):
    root = project("embedding")
    shifts = ("--test-time-shifts", "2", "--shift-step-ms", "40")
    pooled = predict(module, root, "--json", "--batch", "5", *shifts, *recordings)
    alone = predict(module, root, "--json", "--workers", "0", "--batch", "1", *shifts, *recordings)
    assert pooled.returncode == alone.returncode == 0
    assert_same(answers(pooled), answers(alone))
    plain = answers(predict(module, root, "--json", *recordings))
    assert any(abs(a["probability"] - b["probability"]) > 1e-6 for a, b in zip(plain, answers(pooled), strict=True))


@pytest.mark.parametrize("module", MODULES)
def test_every_bad_file_is_reported_on_its_own_line_in_input_order(project, recordings, tmp_path, module):
    """300 files, every 25th unreadable (corrupt, empty or missing) or silent: each answer in input order, each
    failure once on stderr, and exit 1; exit 0 once every file is answered, "no speech found" included.
    """
    root = project("embedding")
    write_wav(tmp_path / "silence.wav", np.zeros(8000, np.float32), 8000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt junk")
    (tmp_path / "empty.wav").write_bytes(b"")
    files, bad = [], []
    for index in range(300):
        if index % 25 == 7:
            kind = ("corrupt", "empty", "missing", "silence")[index // 25 % 4]
            link = tmp_path / f"{index:03d}_{kind}.wav"
            if kind != "missing":
                link.symlink_to(tmp_path / f"{kind}.wav")
            bad += [link.name] if kind != "silence" else []
        else:
            link = tmp_path / f"{index:03d}.wav"
            link.symlink_to(recordings[index % len(recordings)])
        files.append(link.name)
    model = str(root / ("models/model.pt" if module == "spokenwords.predict" else "models/model.onnx"))
    result = predict(module, tmp_path, "--json", "--model", model, *files)
    lines = answers(result)
    assert result.returncode == 1 and [line["file"] for line in lines] == files
    assert [line.rsplit(": ", 1)[0] for line in result.stderr.splitlines()] == [f"error: {name}" for name in bad]
    assert [line["file"] for line in lines if "error" in line] == bad
    assert all(line["no_speech"] for line in lines if line["file"].endswith("silence.wav"))
    good = [name for name in files if name not in bad]
    result = predict(module, tmp_path, "--model", model, *good)
    assert result.returncode == 0 and result.stderr == "" and len(result.stdout.splitlines()) == len(good)


NAMES = [
    "with space.wav",
    "new\nline.wav",
    "tab\tand\rreturn.wav",
    'quote" and \\ backslash.wav',
    "ünïcödé ✓.wav",
    os.fsdecode(b"latin1 caf\xe9 \xff\xfe.wav"),  # not UTF-8: a name of bytes
]


@pytest.mark.parametrize("module", MODULES)
def test_file_names_of_any_bytes_round_trip_through_json_and_stay_on_one_line(project, tmp_path, module):
    root = project("embedding")
    for index, name in enumerate(NAMES):  # soundfile writes only names that are UTF-8: renamed once written
        write_wav(tmp_path / f"{index}.wav", word(300 + 90 * index, 16000), 16000).rename(tmp_path / name)
    broken = os.fsdecode(b"broken \xff\nname.wav")
    (tmp_path / broken).write_bytes(b"not audio")
    model = str(root / ("models/model.pt" if module == "spokenwords.predict" else "models/model.onnx"))
    files = [os.fsencode(name) for name in [*NAMES, broken]]
    result = predict(module, tmp_path, "--json", "--model", model, *files)
    lines = answers(result)
    assert result.returncode == 1 and len(lines) == len(files)
    assert all(line.isascii() for line in result.stdout.splitlines())  # plain ASCII JSON, one object a line
    for line, name in zip(lines, files, strict=True):
        assert (bytes.fromhex(line["file_bytes"]) if "file_bytes" in line else line["file"].encode()) == name
        assert ("file_bytes" in line) == (b"\xff" in name)
    assert lines[0]["file"] == "with space.wav" and lines[1]["file"] == "new\nline.wav"
    assert lines[-1]["file"] == "broken \ufffd\nname.wav" and "error" in lines[-1]
    assert result.stderr == "error: broken \\xff\\nname.wav: not readable audio (Format not recognised.)\n"
    text = predict(module, tmp_path, "--model", model, *files)
    shown = [line.rsplit(": ", 2)[0] for line in text.stdout.splitlines()]
    assert shown == [
        "with space.wav",
        "new\\nline.wav",
        "tab\\tand\\rreturn.wav",
        'quote" and \\ backslash.wav',
        "ünïcödé ✓.wav",
        "latin1 caf\\xe9 \\xff\\xfe.wav",
    ]


def test_the_workers_are_gone_when_the_command_ends(project, recordings, tmp_path):
    """After a run, a run that fails a file and a run stopped by Ctrl-C, no process of it is left; Ctrl-C ends it
    with 130 and one line, without a traceback from the main process or a worker.
    """
    root = project("embedding")
    for index in range(2000):
        (tmp_path / f"{index:04d}.wav").symlink_to(recordings[index % len(recordings)])
    files = sorted(path.name for path in tmp_path.iterdir())
    model = str(root / "models/model.onnx")
    for arguments in (files[:100], [*files[:50], "missing.wav", *files[50:100]]):
        marker = uuid.uuid4().hex
        result = predict("spokenwords.predict_onnx", tmp_path, "--model", model, *arguments, marker=marker)
        assert result.returncode == (1 if "missing.wav" in arguments else 0) and "Traceback" not in result.stderr
        assert processes_with(marker) == []
    marker = uuid.uuid4().hex
    env = {**environment(), MARKER: marker}
    command = [sys.executable, "-m", "spokenwords.predict_onnx", "--json", "--model", model, *files]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = process.stdout.readline()
        workers = [pid for pid in processes_with(marker) if pid != process.pid]
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the main process and every worker
        rest, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert json.loads(first)["file"] == files[0] and len(workers) == len(os.sched_getaffinity(0))
    assert len(rest.splitlines()) < len(files) - 1
    assert (
        process.returncode == 130
        and errors.startswith("interrupted: ")
        and errors.endswith(" of 2,000 files answered\n")
    )
    assert len(errors.splitlines()) == 1
    assert processes_with(marker) == []


@pytest.mark.parametrize("module", MODULES)
def test_a_reader_that_stops_early_ends_the_run_quietly(project, recordings, tmp_path, module):
    """``predict --json … | head -1``: once the reader has closed the pipe, the run stops as a Unix tool that SIGPIPE
    ends would, with 141 and no traceback, and leaves no process behind. 1,000 answers outgrow the pipe's buffer, so
    the predictor is still writing when the pipe closes.
    """
    root = project("embedding")
    for index in range(1000):
        (tmp_path / f"{index:04d}.wav").symlink_to(recordings[index % len(recordings)])
    files = sorted(path.name for path in tmp_path.iterdir())
    model = str(root / ("models/model.pt" if module == "spokenwords.predict" else "models/model.onnx"))
    marker = uuid.uuid4().hex
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--json", "--model", model, *files],
        cwd=tmp_path,
        env={**environment(), MARKER: marker},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        process.stdout.close()
        errors = process.stderr.read()
        code = process.wait(timeout=120)
    finally:
        process.kill()
    assert json.loads(first)["file"] == files[0]
    assert code == 128 + signal.SIGPIPE and errors == "", errors
    assert processes_with(marker) == []


def test_a_broken_pipe_that_is_not_stdout_is_not_taken_for_a_reader_that_left():
    """A worker's broken pipe is a fault to show, not a quiet stop: stdout here is pytest's capture file, not a
    closed pipe.
    """

    def main() -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        run_main(main)


def test_a_worker_that_dies_ends_the_run_in_one_line(project, recordings, tmp_path):
    """A worker killed (as by the kernel's OOM killer) ends the run with one line naming its files; the others go."""
    root = project("embedding")
    files = []
    for index in range(3000):
        (tmp_path / f"{index:04d}.wav").symlink_to(recordings[index % len(recordings)])
        files.append(f"{index:04d}.wav")
    marker = uuid.uuid4().hex
    env = {**environment(), MARKER: marker}
    command = [sys.executable, "-m", "spokenwords.predict_onnx", "--model", str(root / "models/model.onnx"), *files]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        process.stdout.readline()
        os.kill(next(pid for pid in processes_with(marker) if pid != process.pid), signal.SIGKILL)
        _, errors = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1 and "Traceback" not in errors and len(errors.splitlines()) == 1, errors
    assert errors.startswith("error: a worker process died (killed, or crashed by one of the files from ")
    assert "--workers 0" in errors
    assert processes_with(marker) == []


@pytest.mark.parametrize("module", MODULES)
def test_1000_files_some_unreadable_in_flat_memory(project, recordings, tmp_path, module):
    """1,000 files, 1 in 100 corrupt, against 100: peak memory grows by under 30 MB in the main process and in the
    workers, every corrupt file is reported once, in order, and the run exits 1. The issue's scale, 10,000 files, is
    measured by ``benchmarks.predict_throughput --memory 100 10000``.
    """
    root = project("embedding")
    (tmp_path / "corrupt.bin").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt junk")
    files = []
    for index in range(1000):
        name = f"{index:04d}.wav"
        (tmp_path / name).symlink_to(
            tmp_path / "corrupt.bin" if index % 100 == 50 else recordings[index % len(recordings)]
        )
        files.append(name)
    model = str(root / ("models/model.pt" if module == "spokenwords.predict" else "models/model.onnx"))
    few, many = (measure(module, tmp_path, "--json", "--model", model, *files[:n]) for n in (100, 1000))
    assert few.returncode == many.returncode == 1 and "Traceback" not in many.output
    errors = [line for line in many.output.splitlines() if line.startswith("error: ")]
    assert [line.split(" (")[0] for line in errors] == [f"error: {name}: not readable audio" for name in files[50::100]]
    assert sum(line.startswith("{") for line in many.output.splitlines()) == 1000  # an answer for every file
    assert many.main_rss_mb - few.main_rss_mb < 30 and many.workers_rss_mb - few.workers_rss_mb < 30, (few, many)

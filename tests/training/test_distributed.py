"""Data-parallel training: `train.processes: 2` under torchrun with gloo on CPU, in a real `dvc repro`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from spokenwords.training.distributed import World, shard
from tests.helpers import PARAMETERS, commit, copy_project, dvc, stage, training_until, write_params, write_processed

DDP = {"epochs": 2, "batch_size": 16, "device": "cpu", "processes": 2}


def test_the_ranks_shards_cover_the_order_once_in_equal_parts():
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    shards = [shard(order, World(rank=rank, size=4)) for rank in range(4)]
    assert {len(part) for part in shards} == {25}
    taken = torch.cat(shards)
    assert len(set(taken.tolist())) == 100 and set(taken.tolist()) <= set(order.tolist())
    assert torch.equal(shard(order, World()), order)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("ddp"))
    write_params(root, notebook=True, data={"synthetic_clips": 100}, train=DDP, evaluate={"device": "cpu"})
    commit(root, "two training processes")
    return root


@pytest.mark.slow
def test_two_gloo_processes_train_once_through_dvc_repro_and_repeat_exactly(project):
    first = dvc(project, "repro", "train")
    assert "in 2 processes" in first.stderr + first.stdout
    assert (first.stderr + first.stdout).count("saved models/model.pt") == 1  # rank 0 alone writes
    history = (project / "plots/train_history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["parameters"] == PARAMETERS["m5"] and 0 <= metrics["val_acc"] <= 1
    weights = torch.load(project / "models/model.pt", weights_only=True)["state_dict"]
    assert not (project / "checkpoints/train_state.pt").exists()

    dvc(project, "repro", "-f", "train")
    assert json.loads((project / "metrics/train.json").read_text()) == metrics
    again = torch.load(project / "models/model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[name], again[name]) for name in weights)


def test_more_processes_than_cores_is_one_clear_line(tmp_path):
    write_processed(tmp_path)
    cores = os.cpu_count() or 1
    write_params(tmp_path, notebook=True, train={**DDP, "processes": cores + 1, "batch_size": 16 * (cores + 1)})
    result = stage("train", tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"train.processes is {cores + 1}, but this machine has only {cores} CPU core(s)" in result.stderr


def test_a_batch_the_processes_cannot_share_is_refused_before_launch(tmp_path):
    write_processed(tmp_path)
    write_params(tmp_path, notebook=True, train={**DDP, "batch_size": 15})
    result = stage("train", tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train.batch_size 15 must be a multiple of the 2 training processes" in result.stderr


def training_processes(root: Path) -> dict[int, dict[str, str]]:
    """The train stage's live processes in ``root`` (the launcher and its ranks), each with its environment; an
    exited process not yet reaped (a zombie) is not running.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or Path(os.readlink(entry / "cwd")) != root:
                continue
            if b"stages.train" not in (entry / "cmdline").read_bytes():
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            pairs = (item.partition(b"=") for item in (entry / "environ").read_bytes().split(b"\0") if item)
            found[int(entry.name)] = {key.decode(): value.decode(errors="replace") for key, _, value in pairs}
        except (OSError, IndexError):
            continue
    return found


def rank_pid(root: Path, rank: int) -> int | None:
    """The pid of training rank ``rank`` (torchrun sets RANK in its environment) running in ``root``."""
    return next((pid for pid, env in training_processes(root).items() if env.get("RANK") == str(rank)), None)


def wait_until_none_left(root: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while training_processes(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not training_processes(root), f"training processes still running {seconds} s on: {training_processes(root)}"


# slow enough (about a second an epoch) to be killed in its third epoch, short enough to run to its end; with
# augmentation, each rank draws from a generator of its own, which a resumed rank must continue
RESUMED = {**DDP, "epochs": 8, "batch_size": 8, "augment": True}


def resumable(root: Path) -> Path:
    write_processed(root, clips_per_label=30)
    write_params(root, notebook=True, train=RESUMED)
    return root


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = resumable(tmp_path_factory.mktemp("uninterrupted"))
    stage("train", root)
    return root


def assert_stopped_cleanly(root: Path) -> None:
    """Nothing written but the state of the last finished epoch: no model, metrics or plots, no temporary file."""
    written = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    assert [path for path in written if not path.startswith(("data/", "params.yaml", "train.log"))] == [
        "checkpoints/train_state.pt"
    ]
    assert torch.load(root / "checkpoints/train_state.pt", weights_only=True)["step"] == 0  # an epoch's end


def assert_resumes_to(root: Path, uninterrupted: Path) -> None:
    result = stage("train", root)
    assert "resuming from checkpoints/train_state.pt: epoch" in result.stderr
    for name in ("metrics/train.json", "plots/train_history.csv"):
        assert (root / name).read_text() == (uninterrupted / name).read_text()
    weights = torch.load(root / "models/model.pt", weights_only=True)["state_dict"]
    reference = torch.load(uninterrupted / "models/model.pt", weights_only=True)["state_dict"]
    assert weights.keys() == reference.keys() and all(torch.equal(weights[key], reference[key]) for key in weights)
    assert not (root / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the rank's process")
def test_a_rank_dying_mid_epoch_stops_the_others_in_one_line_and_the_rerun_resumes(uninterrupted, tmp_path):
    root = resumable(tmp_path)
    with training_until(root, "epoch   2:") as process:
        pid = rank_pid(root, 1)
        assert pid is not None, (root / "train.log").read_text()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        code = process.wait(timeout=120)
        assert time.monotonic() - killed < 30
    output = (root / "train.log").read_text()
    assert code == 1 and "Traceback" not in output, output
    assert "error: training process rank 1 failed first (signal SIGKILL)" in output
    wait_until_none_left(root, 5)
    assert_stopped_cleanly(root)
    assert_resumes_to(root, uninterrupted)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the training processes")
def test_the_launcher_killed_mid_epoch_stops_its_ranks_in_one_line_and_the_rerun_resumes(uninterrupted, tmp_path):
    root = resumable(tmp_path)
    with training_until(root, "epoch   2:") as launcher:
        ranks = [pid for pid, env in training_processes(root).items() if "RANK" in env]
        assert len(ranks) == 2, (root / "train.log").read_text()
        launcher.kill()  # SIGKILL: torchrun cannot pass it on to the ranks, which run in sessions of their own
        assert launcher.wait(timeout=10) == -signal.SIGKILL
        wait_until_none_left(root, 30)
    output = (root / "train.log").read_text()
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: the training launcher (pid {launcher.pid}) is gone"), output
    assert "No model was written." in lines[0]
    assert_stopped_cleanly(root)
    assert_resumes_to(root, uninterrupted)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the training processes")
def test_sigterm_to_the_launcher_stops_every_rank_in_one_line_and_the_rerun_resumes(uninterrupted, tmp_path):
    root = resumable(tmp_path)
    with training_until(root, "epoch   2:") as launcher:
        launcher.send_signal(signal.SIGTERM)  # a scheduler's preemption: torchrun passes it on to the ranks
        assert launcher.wait(timeout=60) == 143
        wait_until_none_left(root, 30)
    output = (root / "train.log").read_text()
    assert "Traceback" not in output and "error" not in output, output
    assert output.count("stopped by SIGTERM") == 1 and "No model was written." in output
    assert_stopped_cleanly(root)
    assert_resumes_to(root, uninterrupted)

"""Data-parallel training: `train.processes: 2` under torchrun with gloo on CPU, in a real `dvc repro`."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from stages.distributed import World, shard
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


def rank_pid(root: Path, rank: int) -> int | None:
    """The pid of training rank ``rank`` (torchrun sets RANK in its environment) running in ``root``."""
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or Path(os.readlink(entry / "cwd")) != root:
                continue
            if f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the rank's process")
def test_a_rank_dying_mid_epoch_stops_the_others_in_one_line_and_writes_no_model(tmp_path):
    write_processed(tmp_path, clips_per_label=30)
    write_params(tmp_path, notebook=True, train={**DDP, "epochs": 1000})
    with training_until(tmp_path, "epoch   1:") as process:
        pid = rank_pid(tmp_path, 1)
        assert pid is not None, (tmp_path / "train.log").read_text()
        os.kill(pid, signal.SIGKILL)
        code = process.wait(timeout=120)
    output = (tmp_path / "train.log").read_text()
    assert code == 1 and "Traceback" not in output, output
    assert "error: training process rank 1 failed first (signal SIGKILL)" in output
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()

"""Data-parallel training with PyTorch's own launcher (torchrun) and DistributedDataParallel.

``train.processes: N`` makes the train stage start ``torch.distributed.run`` (torchrun's code, called in-process
so that a failed rank ends in one clear line) on this machine; started by torchrun itself (``WORLD_SIZE`` set, as in
a multi-node launch), the stage joins the launcher's world. Every rank draws the same shuffled order each epoch and
takes its own shard of it; ``train.batch_size`` stays the global batch, split evenly over the ranks. NCCL runs
collectives between GPUs, gloo between CPU processes. Rank 0 alone writes outputs.

Failures end every process, in one line: a rank that dies makes the collectives of the others fail (``lost_ranks``)
and the launcher name it; a launcher that dies leaves its ranks, which torchrun starts in sessions of their own,
running, so each rank watches it (``watch_launcher``) and stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from spokenwords.cli import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; ``size`` 1 is a plain single-process run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    launcher: int = 0  # the pid of the process that started this rank (torchrun's agent); 0 outside torchrun

    @property
    def main(self) -> bool:
        """Whether this process writes the outputs and prints progress."""
        return self.rank == 0

    @property
    def orphaned(self) -> bool:
        """Whether the launcher is gone: this rank then has a new parent."""
        return self.launcher != 0 and os.getppid() != self.launcher


def current_world() -> World:
    """The world torchrun's environment describes, or a single process outside it."""
    if "WORLD_SIZE" not in os.environ:
        return World()
    return World(
        rank=int(os.environ["RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
        local_size=int(os.environ["LOCAL_WORLD_SIZE"]),
        launcher=os.getppid(),
    )


def check_launch(processes: int, batch_size: int, device: torch.device) -> None:
    """Refuse a launch that cannot run, before any process starts: more processes than this machine has devices
    for (one GPU each, or one CPU core each), or a batch the processes cannot share evenly.
    """
    if device.type == "cuda":
        available, what = torch.cuda.device_count(), "CUDA device(s)"
    elif device.type == "cpu":
        available, what = os.cpu_count() or 1, "CPU core(s)"
    else:
        raise UserError(f"train.processes {processes} needs CUDA or CPU devices, but training runs on {device}")
    if processes > available:
        raise UserError(f"train.processes is {processes}, but this machine has only {available} {what}")
    rank_batch_size(batch_size, World(size=processes))


def launch(processes: int) -> None:
    """Run this stage in ``processes`` ranks under torchrun on this machine; one line names a rank that failed."""
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    # each process's share of the cores (torchrun would otherwise set 1 and warn about it)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    # the launcher's own log repeats what the failed rank and the line below say
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={processes}", "-m", "stages.train"])
    try:
        torchrun(args)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise UserError(
            f"training process rank {rank} failed first ({ending(failure)}); "
            "the others were stopped and no model was written"
        ) from None
    except SignalException as error:
        # torchrun passed the signal (SIGTERM, SIGINT, …) on to the ranks, and rank 0 said where they stopped
        sys.exit(128 + error.sigval)


def ending(failure: ProcessFailure) -> str:
    """How a rank ended: by a signal (a kill, a crash) or with an exit code."""
    return f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"


class RanksStopping(Exception):
    """A collective failed because the other ranks were stopping too (a SIGTERM, a lost launcher), not dying."""


@contextlib.contextmanager
def lost_ranks(world: World, stopping: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Turn a collective's failure, when another rank died, into one line instead of a traceback per rank; when this
    rank was ``stopping`` too, the others stopped first: ``RanksStopping``, to stop as they did.
    """
    try:
        yield
    except (dist.DistError, RuntimeError) as error:
        text = str(error)
        if world.size == 1 or not (isinstance(error, dist.DistError) or "gloo" in text or "NCCL" in text):
            raise
        if stopping() or world.orphaned:
            raise RanksStopping from None
        raise UserError(f"rank {world.rank} lost another training process: {text.splitlines()[0]}") from None


def watch_launcher(world: World, interval: float = 0.5, grace: float = 20.0) -> None:
    """Stop this rank once its launcher is gone (killed): it is sent SIGTERM, on which training stops between two
    steps, as on a scheduler's; a rank still running ``grace`` seconds later (waiting in a rendezvous, say) is ended,
    so none trains on, or writes a model, alone.
    """

    def watch() -> None:
        while not world.orphaned:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        print(
            f"error: rank {world.rank}: the launcher (pid {world.launcher}) is gone, and this process did not stop "
            f"within {grace:.0f} s: ended",
            file=sys.stderr,
        )
        os._exit(1)

    threading.Thread(target=watch, name="launcher watch", daemon=True).start()


def join(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs) and return this rank's device."""
    watch_launcher(world)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    elif device.type == "cpu":
        # each process gets its share of the cores: more OpenMP threads than cores made training 5 to 15x slower
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
        dist.init_process_group("gloo")
    else:
        raise UserError(f"data-parallel training needs CUDA or CPU devices, but training runs on {device}")
    return device


def leave(world: World) -> None:
    """Leave the process group once every rank has finished training."""
    if world.size > 1:
        dist.barrier()
        dist.destroy_process_group()


def shard(order: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's share of an epoch's shuffled ``order``: every ``size``-th item, the same count on every rank
    (up to ``size - 1`` items of the epoch are left out, as DistributedSampler's ``drop_last`` does).
    """
    if world.size == 1:
        return order
    usable = len(order) - len(order) % world.size
    return order[world.rank : usable : world.size]


def rank_batch_size(batch_size: int, world: World) -> int:
    """Each rank's share of the global ``train.batch_size``."""
    if batch_size % world.size:
        raise UserError(
            f"train.batch_size {batch_size} must be a multiple of the {world.size} training processes, "
            "which share each batch evenly"
        )
    return batch_size // world.size


def sum_over_ranks(values: list[float], world: World, device: torch.device) -> list[float]:
    """Sum ``values`` over all ranks (one collective; float64, so the sums are exact enough to repeat)."""
    if world.size == 1:
        return values
    summed = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return summed.tolist()


def gather_to_main(value: Any, world: World) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on rank 0; the others get an empty list."""
    if world.size == 1:
        return [value]
    gathered: list[Any] | None = [None] * world.size if world.main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered or []


def from_main(value: int, world: World, device: torch.device) -> int:
    """``value`` as rank 0 holds it (one broadcast): what rank 0 alone knows, such as the epoch of the best
    validation accuracy, every rank must act on alike.
    """
    if world.size == 1:
        return value
    held = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(held, src=0)
    return int(held.item())


def say(world: World, message: str) -> None:
    """Print a progress line once, from the main rank."""
    if world.main:
        print(message, file=sys.stderr)

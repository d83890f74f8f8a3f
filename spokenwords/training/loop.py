"""The training loop (the notebook's, Adam, one readable ``fit``), with the cached splits living on the training device.

Batches are drawn by indexing the on-device tensors, so an epoch does no decoding, resampling or collation.
Waveform models read ``data/processed``; the ``embedding`` model reads the frozen embeddings of ``data/embedded``
and trains only its head. The ``ensemble`` trains its members one after the other, each with its own recipe.
The test split is never read here: model selection uses the validation split only. Params add a learning-rate
schedule, label smoothing and, for waveform models, on-device augmentation.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from spokenwords import params
from spokenwords.audio.augment import Augment
from spokenwords.cli import UserError
from spokenwords.data.processed_splits import load_split
from spokenwords.inference.scoring import batched_logits
from spokenwords.models.architectures import (
    Ensemble,
    SpectrogramModel,
    build_model,
    count_parameters,
    model_config,
    takes_embeddings,
)
from spokenwords.params import AugmentParams, ModelParams, TrainParams
from spokenwords.paths import EMBEDDED, PROCESSED, TRAIN_STATE, member_state, split_file
from spokenwords.runtime import autocast, seed_everything, select_device, use_amp, use_compile
from spokenwords.training.distributed import (
    RanksStopping,
    World,
    current_world,
    from_main,
    gather_to_main,
    join,
    leave,
    lost_ranks,
    rank_batch_size,
    say,
    shard,
    sum_over_ranks,
)
from spokenwords.training.resume import (
    Preempted,
    TermSignal,
    digest,
    load_state,
    random_states,
    restore_random_states,
    save_state,
    stamp,
)

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def load_split_inputs(split: str, embedded: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A split's inputs (waveforms, or embeddings) and labels, in host memory, and the rest of its file."""
    data = load_split(split_file(split, EMBEDDED if embedded else PROCESSED))
    return (data["embeddings"] if embedded else data["waveforms"]), data["labels"], data


def lr_schedule(
    optimizer: torch.optim.Optimizer, config: TrainParams, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-batch learning-rate schedule ``train.schedule``, or None for the notebook's constant rate."""
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        if total < 3:
            raise UserError(
                f"schedule 'onecycle' needs at least 3 optimizer steps, but {config.epochs} epoch(s) of "
                f"{steps_per_epoch} batch(es) make {total}: lower train.batch_size, raise train.epochs, or use 'none'"
            )
        # each of the cycle's two phases must last at least one step, however few batches an epoch has
        rising = min(max(config.warmup_epochs / config.epochs, 2 / total), 1 - 1 / total)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=rising)
    if config.schedule == "cosine":

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def forward_train(model: torch.nn.Module, batch: torch.Tensor, augment: Augment | None) -> torch.Tensor:
    """Logits of a training batch, augmented when ``augment`` is given: waveforms first; for a spectrogram model
    then the equaliser on its log mel energies and SpecAugment masks on its features. The embedding model's batch
    is embeddings, augmented before they were embedded (the ``embed`` stage).
    """
    if takes_embeddings(model):
        return model.classify(batch)
    if augment is None:
        return model(batch)
    batch = augment.waveforms(batch)
    if isinstance(model, SpectrogramModel):
        log_mel = augment.log_mel(model.frontend.log_energies(batch))
        return model.classify(augment.spectrograms(model.frontend.features(log_mel)))
    return model(batch)


class TrainingForward(torch.nn.Module):
    """``forward_train`` as a module's ``forward``: DistributedDataParallel synchronises gradients only for what
    runs through the forward of the module it wraps.
    """

    def __init__(self, model: torch.nn.Module, augment: Augment | None) -> None:
        super().__init__()
        self.model, self.augment = model, augment

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return forward_train(self.model, batch, self.augment)


@dataclass
class Loop:
    """What one training step needs, built once per run."""

    forward: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    shuffle: torch.Generator
    device: torch.device
    amp: bool
    config: TrainParams
    world: World = field(default_factory=World)
    stop: TermSignal | None = None


@dataclass
class EpochStart:
    """Where an epoch starts: the shuffle generator's state before its order is drawn and, for a run resumed in
    the middle of the epoch, the batches already done with their losses and correct counts.
    """

    shuffle_state: torch.Tensor
    step: int = 0
    losses: list[float] = field(default_factory=list)
    correct: int = 0


def epoch_batches(loop: Loop, count: int, on: torch.device) -> list[torch.Tensor]:
    """This rank's index batches of one epoch, on device ``on``: its shard of a fresh shuffled order."""
    order = shard(torch.randperm(count, generator=loop.shuffle), loop.world)
    return list(order.to(on).split(rank_batch_size(loop.config.batch_size, loop.world)))


def train_epoch(
    loop: Loop, inputs: torch.Tensor, labels: torch.Tensor, epoch: int, start: EpochStart
) -> tuple[float, float]:
    """One pass over the training split (from ``start``); returns mean loss and accuracy on the augmented batches,
    over all ranks.

    Losses and correct counts stay on the device and are read once, after the epoch: a read per batch would make
    the host wait for the device at every step. A loss that is not finite is therefore caught at the epoch's end.
    Inputs held in host memory (a split too large for the device) move to the device one batch at a time.
    """
    config = loop.config
    loop.forward.train()
    loop.shuffle.set_state(start.shuffle_state)
    indices = epoch_batches(loop, len(labels), inputs.device)
    losses, correct = [], []
    progress = tqdm(
        indices[start.step :],
        desc=f"epoch {epoch}/{config.epochs}",
        unit="batch",
        leave=False,
        disable=not loop.world.main,
    )
    for step, index in enumerate(progress, start=start.step + 1):
        batch = inputs[index].to(loop.device, non_blocking=True)
        target = labels[index].to(loop.device, non_blocking=True)
        with autocast(loop.device, loop.amp):
            logits = loop.forward(batch)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=config.label_smoothing)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
        if loop.scheduler is not None:
            loop.scheduler.step()
        losses.append(loss.detach())
        correct.append((logits.argmax(dim=1) == target).sum())
        if loop.stop is not None and loop.stop.received and step < len(indices):
            raise Preempted(epoch, step, start.losses + torch.stack(losses).tolist(), start.correct + total_of(correct))
    values = start.losses + torch.stack(losses).tolist()
    loss_sum = sum(value * len(index) for value, index in zip(values, indices, strict=True))
    seen = sum(len(index) for index in indices)
    loss_sum, right, seen = sum_over_ranks([loss_sum, start.correct + total_of(correct), seen], loop.world, loop.device)
    if not math.isfinite(loss_sum):
        bad = next((value for value in values if not math.isfinite(value)), loss_sum)
        raise UserError(
            f"the training loss became {bad} in epoch {epoch}; "
            f"lower train.lr (now {config.lr}) and run again. No model was written."
        )
    return loss_sum / seen, right / seen


def total_of(counts: list[torch.Tensor]) -> int:
    return int(torch.stack(counts).sum()) if counts else 0


def score_validation(
    model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, amp: bool
) -> tuple[float, float]:
    """Validation loss and accuracy of the plain model (in eval mode: no dropout, batch-norm running statistics)."""
    if takes_embeddings(model):
        model.eval()
        with torch.no_grad():
            logits = model.classify(inputs)
    else:
        logits = batched_logits(model, inputs, batch_size, amp)
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(dim=1) == labels).float().mean().item()


def history_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def on_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole split on the training device, moved once, when it takes at most half the device's free memory;
    otherwise it stays in host memory (memory-mapped from its file) and ``train_epoch`` moves one batch at a time.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if tensor.numel() * tensor.element_size() > free // 2:
            print(f"the training split ({tensor.nbytes / 2**30:.1f} GiB) stays in host memory", file=sys.stderr)
            return tensor
    return tensor.to(device)


@dataclass
class Member:
    """One model to train: its config, its own train settings, its inputs and labels (in host memory), the sample
    rate of its waveforms (for augmentation) and the file its resumable state goes to.
    """

    config: dict
    train: TrainParams
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    sample_rate: int
    state_path: Path


@dataclass
class Fitted:
    """A trained model with its kept weights loaded (``train.checkpoint``), its history, its kept epoch's row and,
    with ``train.patience``, the last epoch it trained.
    """

    model: torch.nn.Module
    history: list[dict]
    epoch_seconds: list[float]
    best: dict
    kept: dict
    stopped: int | None = None


def members_of(
    config: TrainParams, section: ModelParams, config_of_model: dict, sample_rate: int, ensemble: Ensemble | None
) -> list[Member]:
    """What ``train`` trains: the chosen model on the ``sample_rate`` clips, or each member of ``ensemble`` with its
    own recipe and inputs (the embedding head its cached embeddings, DS-CNN the clips through its resampler).
    """
    name = config_of_model["name"]
    if ensemble is None:
        embedded = name == "embedding"
        if embedded and config.augment:
            raise UserError(
                "params.yaml: train.augment applies to waveform models; the embedding model's training clips are "
                "augmented before embedding (the embed section): set train.augment to false"
            )
        return [Member(config_of_model, config, *split_inputs(embedded), sample_rate, TRAIN_STATE)]
    trainings = params.member_trainings(config, section.ensemble)
    members = []
    for index, (member, training) in enumerate(zip(config_of_model["members"], trainings, strict=True)):
        embedded = member["name"] == "embedding"
        train_x, train_y, val_x, val_y = split_inputs(embedded)
        if not embedded:
            train_x, val_x = ensemble.resample(index, train_x), ensemble.resample(index, val_x)
        state = member_state(member["name"])
        members.append(Member(member, training, train_x, train_y, val_x, val_y, member["sample_rate"], state))
    return members


def split_inputs(embedded: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training and validation inputs (waveforms, or embeddings) and labels, in host memory."""
    train_x, train_y, _ = load_split_inputs("train", embedded)
    val_x, val_y, _ = load_split_inputs("validation", embedded)
    return train_x, train_y, val_x, val_y


def fit(
    member: Member, augment_config: AugmentParams, world: World, device: torch.device, label_names: list[str], rate: int
) -> Fitted:
    """Train one model from its seed (or from its saved state), as the notebook's loop does, with the params'
    schedule, smoothing and augmentation, to tell ``label_names`` apart in clips at ``rate`` Hz.
    """
    config, config_of_model = member.train, member.config
    seed_everything(config.seed + world.rank)  # ranks draw their own dropout; rank 0 draws as a single process
    amp = use_amp(config.amp, device)
    train_x, train_y, val_x, val_y = member.train_x, member.train_y, member.val_x, member.val_y
    expected = stamp(
        {
            "train": {key: value for key, value in config.as_dict().items() if key != "resume"},
            "model": config_of_model,
            "augment": augment_config.as_dict() if config.augment else None,
            "processes": world.size,
            # the digest tells other data apart too; these say how it differs
            "labels": label_names,
            "sample_rate": rate,
        },
        digest(train_x, train_y, val_x, val_y),
    )
    saved = load_state(member.state_path, expected) if config.resume else None
    train_x = on_device(train_x, device)
    train_y = train_y.to(train_x.device)  # labels stay beside their inputs, where the batch indices are
    val_x, val_y = val_x.to(device), val_y.to(device)

    model = build_model(config_of_model, len(label_names)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    per_rank = (len(train_y) - len(train_y) % world.size) // world.size
    steps_per_epoch = math.ceil(per_rank / rank_batch_size(config.batch_size, world))
    scheduler = lr_schedule(optimizer, config, steps_per_epoch)
    augment = Augment(augment_config, member.sample_rate, config.seed + world.rank, device) if config.augment else None
    compiled = use_compile(config.compile, device, config.epochs * steps_per_epoch)
    if compiled:
        model.compile()  # in place: the state_dict keeps its keys, so checkpoints stay as they were
    forward = TrainingForward(model, augment)
    if world.size > 1:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    shuffle = torch.Generator().manual_seed(config.seed)  # the same order on every rank, each takes its shard
    stop = TermSignal()
    loop = Loop(forward, optimizer, scheduler, shuffle, device, amp, config, world, stop)
    say(
        world,
        f"training {config_of_model['name']} ({count_parameters(model):,} parameters) on {device}"
        f"{f' in {world.size} processes' if world.size > 1 else ''}"
        f"{' with bfloat16 autocast' if amp else ''}{' with augmentation' if augment else ''}"
        f"{' compiled' if compiled else ''}: "
        f"{len(train_y)} train, {len(val_y)} validation clips",
    )

    history: list[dict] = []
    epoch_seconds: list[float] = []
    best = {"val_acc": -math.inf, "epoch": 0, "state": None}
    start = EpochStart(loop.shuffle.get_state())
    first_epoch = 1
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        draws = saved["draws"][world.rank]  # each rank's own: dropout, augmentation
        restore_random_states(draws["random"], device)
        if augment is not None:
            augment.generator.set_state(draws["augment"])
        history, epoch_seconds, best = saved["history"], saved["epoch_seconds"], saved["best"]
        start = EpochStart(saved["shuffle"], saved["step"], saved["losses"], saved["correct"])
        first_epoch = saved["epoch"]
        say(world, f"resuming from {member.state_path}: epoch {first_epoch}, after batch {saved['step']}")

    def save(epoch: int, at: EpochStart) -> None:
        """The state to continue from at the start of ``epoch`` (after ``at.step`` of its batches), written by rank 0
        with every rank's random generators, so that each rank draws on as it would have.
        """
        draws = {
            "random": random_states(device),
            "augment": augment.generator.get_state() if augment is not None else None,
        }
        every = gather_to_main(draws, world)
        if world.main:
            save_state(
                member.state_path,
                {
                    "stamp": expected,
                    "epoch": epoch,
                    "step": at.step,
                    "losses": at.losses,
                    "correct": at.correct,
                    "shuffle": at.shuffle_state,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "draws": every,
                    "history": history,
                    "epoch_seconds": epoch_seconds,
                    "best": best,
                },
            )

    def stopping() -> bool:
        return stop.received

    def stop_in(epoch: int) -> NoReturn:
        """Stop several processes in ``epoch``: they stop up to a step apart, each with its own share of the batches
        done, so none of the epoch is kept and the next run does it again from its start.
        """
        stop_here(world, member.state_path if saved is not None or epoch > first_epoch else None, epoch)

    epoch = first_epoch
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            if plateaued(config.patience, best["epoch"], epoch - 1):  # checked first: a resumed run may have stopped
                say(
                    world,
                    f"stopping early after epoch {epoch - 1}: validation accuracy has not beaten its best "
                    f"({best['val_acc']:.4f}, epoch {best['epoch']}) for {config.patience} epochs",
                )
                break
            began = time.perf_counter()
            try:
                with lost_ranks(world, stopping):
                    train_loss, train_acc = train_epoch(loop, train_x, train_y, epoch, start)
            except Preempted as stopped:
                if world.size > 1:
                    stop_in(epoch)
                save(epoch, EpochStart(start.shuffle_state, stopped.step, stopped.losses, stopped.correct))
                stop_here(world, member.state_path, epoch, stopped.step)
            start = EpochStart(loop.shuffle.get_state())
            if world.main:
                val_loss, val_acc = score_validation(model, val_x, val_y, config.batch_size, amp)
                if not math.isfinite(val_loss):
                    raise UserError(
                        f"the validation loss became {val_loss} in epoch {epoch}; lower train.lr and run again"
                    )
                seconds = time.perf_counter() - began
                row = (epoch, train_loss, train_acc, val_loss, val_acc)
                history.append(dict(zip(HISTORY_COLUMNS, row, strict=True)))
                epoch_seconds.append(seconds)
                print(
                    f"epoch {epoch:3d}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                    f"val loss {val_loss:.4f} acc {val_acc:.4f} | {seconds:.1f}s",
                    file=sys.stderr,
                )
                if val_acc > best["val_acc"]:
                    best = {"val_acc": val_acc, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
            with lost_ranks(world, stopping):
                save(epoch + 1, start)
                if config.patience and world.size > 1:  # rank 0 alone validates: the others stop when it does
                    best["epoch"] = from_main(best["epoch"], world, device)
            if stopping() and epoch < config.epochs:
                stop_here(world, member.state_path, epoch + 1, 0)
    except RanksStopping:  # another rank stopped first, between its steps, and left this one's collective unanswered
        stop_in(epoch)
    del loop, forward  # DDP's reducer goes before its process group (``leave``): freed after it, it waited forever
    kept = history[-1] if history else {}
    if world.main and config.checkpoint == "best":
        model.load_state_dict(best["state"])
        kept = history[best["epoch"] - 1]
    stopped = len(history) if config.patience else None
    return Fitted(model, history, epoch_seconds, best, kept, stopped)


def plateaued(patience: int, best_epoch: int, epoch: int) -> bool:
    """Whether training stops after ``epoch`` (``train.patience``): its validation accuracy last beat the best
    ``patience`` or more epochs before. Accuracy, not loss: it is what ``checkpoint: best`` keeps and what the
    metrics report, and the schedule's decay still lowers the loss by crumbs while the accuracy stands still.
    """
    return patience > 0 and epoch - best_epoch >= patience


@dataclass
class Trained:
    """What the train stage writes: the trained model (an ensemble with its members' weights), its config, labels,
    audio settings and every member's fit, on ``device``; ``members`` say where their resumable states are.
    """

    model: torch.nn.Module
    config_of_model: dict
    label_names: list[str]
    audio: dict
    fitted: list[Fitted]
    device: torch.device
    members: list[Member]

    def clear_states(self) -> None:
        """Remove the resumable states once the outputs are written: the next run starts afresh."""
        for member in self.members:
            member.state_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            TRAIN_STATE.parent.rmdir()  # when nothing else is in it


def train(config: TrainParams, model_section: ModelParams, augment_config: AugmentParams) -> Trained | None:
    """Train the configured model on this process' share of the batches; the trained model on the main process,
    None on the others.
    """
    world = current_world()
    device = select_device(config.device)
    if world.size > 1:
        device = join(world, device)
    processed = load_split(split_file("train"))
    label_names = processed["label_names"]
    audio = {"sample_rate": processed["sample_rate"], "samples": processed["waveforms"].shape[-1]}
    config_of_model = model_config(model_section, audio["sample_rate"])
    # an ensemble is built once: its resamplers give DS-CNN its clips, and it takes the trained members' weights
    ensemble = build_model(config_of_model, len(label_names)) if config_of_model["name"] == "ensemble" else None
    members = members_of(config, model_section, config_of_model, audio["sample_rate"], ensemble)
    fitted = [fit(member, augment_config, world, device, label_names, audio["sample_rate"]) for member in members]
    leave(world)
    if not world.main:
        return None
    model = fitted[0].model
    if ensemble is not None:
        for member, result in zip(ensemble.members, fitted, strict=True):
            member.load_state_dict(result.model.state_dict())
        model = ensemble.to(device)
    return Trained(model, config_of_model, label_names, audio, fitted, device, members)


def stop_here(world: World, state: Path | None, epoch: int, step: int | None = None) -> NoReturn:
    """End the stage between two training steps, in one line from rank 0: after SIGTERM as a preempted job should,
    with 143 (128 + SIGTERM); once the launcher of the training processes is gone, with 1. ``step``: ``state`` was
    just saved, to resume at that step of ``epoch``; None: the next run does ``epoch`` again from its start, from
    ``state`` or, None, afresh.
    """
    if step is not None:
        where = f": saved {state} to resume at epoch {epoch}, after batch {step}"
    elif state is not None:
        where = f" in epoch {epoch}: {state} resumes it from its start (the processes keep no part of an epoch)"
    else:
        where = f" in epoch {epoch}, before any epoch was saved"
    gone = world.orphaned
    why = (
        f"error: the training launcher (pid {world.launcher}) is gone; the processes stopped"
        if gone
        else "stopped by SIGTERM"
    )
    say(world, f"{why}{where}; run the stage again to continue. No model was written.")
    sys.exit(1 if gone else 143)


def member_metrics(result: Fitted) -> dict:
    """The kept epoch's losses and accuracies, the best validation accuracy, the last epoch trained (only with
    ``train.patience``: a run without it trains every epoch) and the size of one trained model.
    """
    kept, best = result.kept, result.best
    return {
        "epoch": kept["epoch"],
        "train_loss": kept["train_loss"],
        "train_acc": kept["train_acc"],
        "val_loss": kept["val_loss"],
        "val_acc": kept["val_acc"],
        "best_val_acc": best["val_acc"],
        "best_epoch": best["epoch"],
        **({} if result.stopped is None else {"stopped_epoch": result.stopped}),
        "parameters": count_parameters(result.model),
    }


def ensemble_metrics(
    model: torch.nn.Module, config_of_model: dict, fitted: list[Fitted], config: TrainParams, device: torch.device
) -> dict:
    """The ensemble's validation loss and accuracy (its members averaged), its size, and each member's metrics."""
    data = load_split(split_file("validation"))
    loss, accuracy = score_validation(
        model, data["waveforms"].to(device), data["labels"].to(device), config.batch_size, use_amp(config.amp, device)
    )
    return {
        "val_loss": loss,
        "val_acc": accuracy,
        "parameters": count_parameters(model),
        "members": {
            member["name"]: member_metrics(result)
            for member, result in zip(config_of_model["members"], fitted, strict=True)
        },
    }

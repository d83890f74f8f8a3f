"""Stage `train`: the notebook's training loop, with the cached splits living on the training device.

Batches are drawn by indexing the on-device tensors, so an epoch does no decoding, resampling or collation.
Waveform models read ``data/processed``; the ``embedding`` model reads the frozen embeddings of ``data/embedded``
and trains only its head.
The test split is never read here: model selection uses the validation split only. The loop is the notebook's
(Adam; ``make notebook`` runs it exactly), and params add a learning-rate schedule, label smoothing and, for waveform
models, on-device augmentation.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from stages import params
from stages.augment import Augment
from stages.cli import UserError, run
from stages.distributed import (
    World,
    check_launch,
    current_world,
    join,
    launch,
    leave,
    lost_ranks,
    rank_batch_size,
    say,
    shard,
    sum_over_ranks,
)
from stages.fileio import write_json, write_text
from stages.inference import batched_logits
from stages.models import (
    SpectrogramModel,
    build_model,
    count_parameters,
    model_config,
    save_checkpoint,
    takes_embeddings,
)
from stages.params import AugmentParams, ModelParams, TrainParams
from stages.paths import EMBEDDED, HISTORY, MODEL, PROCESSED, TRAIN_METRICS, TRAIN_STATE, TRAIN_TIMING, split_file
from stages.processed import load_split
from stages.resume import (
    Preempted,
    TermSignal,
    digest,
    load_state,
    random_states,
    restore_random_states,
    save_state,
    stamp,
)
from stages.runtime import autocast, seed_everything, select_device, use_amp, use_compile

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


def train(config: TrainParams, model_section: ModelParams, augment_config: AugmentParams) -> None:
    world = current_world()
    seed_everything(config.seed + world.rank)  # ranks draw their own dropout; rank 0 draws as a single process
    device = select_device(config.device)
    if world.size > 1:
        device = join(world, device)
    amp = use_amp(config.amp, device)
    embedded = model_section.name == "embedding"
    if embedded and config.augment:
        raise UserError(
            "params.yaml: train.augment applies to waveform models; the embedding model's training clips are "
            "augmented before embedding (the embed section): set train.augment to false"
        )
    train_x, train_y, train_data = load_split_inputs("train", embedded)
    val_x, val_y, _ = load_split_inputs("validation", embedded)
    label_names = train_data["label_names"]
    config_of_model = model_config(model_section, train_data["sample_rate"])
    expected = stamp(
        {
            "train": {key: value for key, value in config.as_dict().items() if key != "resume"},
            "model": config_of_model,
            "augment": augment_config.as_dict() if config.augment else None,
            "processes": world.size,
        },
        digest(train_x, train_y, val_x, val_y),
    )
    saved = load_state(TRAIN_STATE, expected) if config.resume else None
    train_x = on_device(train_x, device)
    train_y = train_y.to(train_x.device)  # labels stay beside their inputs, where the batch indices are
    val_x, val_y = val_x.to(device), val_y.to(device)

    model = build_model(config_of_model, len(label_names)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    per_rank = (len(train_y) - len(train_y) % world.size) // world.size
    steps_per_epoch = math.ceil(per_rank / rank_batch_size(config.batch_size, world))
    scheduler = lr_schedule(optimizer, config, steps_per_epoch)
    augment = (
        Augment(augment_config, train_data["sample_rate"], config.seed + world.rank, device) if config.augment else None
    )
    compiled = use_compile(config.compile, device, config.epochs * steps_per_epoch)
    if compiled:
        model.compile()  # in place: the state_dict keeps its keys, so checkpoints stay as they were
    forward = TrainingForward(model, augment)
    if world.size > 1:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    shuffle = torch.Generator().manual_seed(config.seed)  # the same order on every rank, each takes its shard
    loop = Loop(forward, optimizer, scheduler, shuffle, device, amp, config, world, TermSignal())
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
        if world.main:  # the state holds rank 0's draws; other ranks restart theirs from their seeds
            restore_random_states(saved["random"], device)
            if augment is not None:
                augment.generator.set_state(saved["augment"])
        history, epoch_seconds, best = saved["history"], saved["epoch_seconds"], saved["best"]
        start = EpochStart(saved["shuffle"], saved["step"], saved["losses"], saved["correct"])
        first_epoch = saved["epoch"]
        say(world, f"resuming from {TRAIN_STATE}: epoch {first_epoch}, after batch {saved['step']}")

    def save(epoch: int, at: EpochStart) -> None:
        """The state to continue from at the start of ``epoch`` (after ``at.step`` of its batches)."""
        if world.main:
            save_state(
                TRAIN_STATE,
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
                    "random": random_states(device),
                    "augment": augment.generator.get_state() if augment is not None else None,
                    "history": history,
                    "epoch_seconds": epoch_seconds,
                    "best": best,
                },
            )

    for epoch in range(first_epoch, config.epochs + 1):
        began = time.perf_counter()
        try:
            with lost_ranks(world):
                train_loss, train_acc = train_epoch(loop, train_x, train_y, epoch, start)
        except Preempted as stopped:
            save(epoch, EpochStart(start.shuffle_state, stopped.step, stopped.losses, stopped.correct))
            stopped_by_sigterm(world, epoch, stopped.step)
        start = EpochStart(loop.shuffle.get_state())
        if world.main:
            val_loss, val_acc = score_validation(model, val_x, val_y, config.batch_size, amp)
            if not math.isfinite(val_loss):
                raise UserError(f"the validation loss became {val_loss} in epoch {epoch}; lower train.lr and run again")
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
        save(epoch + 1, start)
        if loop.stop.received and epoch < config.epochs:
            stopped_by_sigterm(world, epoch + 1, 0)
    del loop, forward  # DDP's reducer goes before its process group: freed after it, it waited forever
    leave(world)
    if world.main:
        write_outputs(model, config, config_of_model, label_names, train_data, history, epoch_seconds, best, device)
        TRAIN_STATE.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            TRAIN_STATE.parent.rmdir()  # when nothing else is in it


def stopped_by_sigterm(world: World, epoch: int, step: int) -> None:
    """End the stage after SIGTERM, its state saved, as a preempted job should: with 143 (128 + SIGTERM)."""
    say(
        world,
        f"stopped by SIGTERM: saved {TRAIN_STATE} to resume at epoch {epoch}, after batch {step}; run the stage "
        "again to continue. No model was written.",
    )
    sys.exit(143)


def write_outputs(
    model: torch.nn.Module,
    config: TrainParams,
    config_of_model: dict,
    label_names: list[str],
    train_data: dict,
    history: list[dict],
    epoch_seconds: list[float],
    best: dict,
    device: torch.device,
) -> None:
    """The stage's outputs, each written atomically: model, history, metrics, and the timing log."""
    kept = history[-1]
    if config.checkpoint == "best":
        model.load_state_dict(best["state"])
        kept = history[best["epoch"] - 1]
    embedded = "embeddings" in train_data
    samples = train_data["samples"] if embedded else train_data["waveforms"].shape[-1]
    audio = {"sample_rate": train_data["sample_rate"], "samples": samples}
    save_checkpoint(MODEL, model, config_of_model, label_names, audio)
    write_text(HISTORY, history_csv(history))
    write_json(
        TRAIN_METRICS,
        {
            "epoch": kept["epoch"],
            "train_loss": kept["train_loss"],
            "train_acc": kept["train_acc"],
            "val_loss": kept["val_loss"],
            "val_acc": kept["val_acc"],
            "best_val_acc": best["val_acc"],
            "best_epoch": best["epoch"],
            "parameters": count_parameters(model),
        },
    )
    median = statistics.median(epoch_seconds)
    write_json(
        TRAIN_TIMING,
        {"device": str(device), "epoch_seconds": [round(value, 3) for value in epoch_seconds], "median": median},
    )
    print(f"saved {MODEL} (epoch {kept['epoch']}); median {median:.2f}s per epoch", file=sys.stderr)


def main() -> None:
    config = params.load(TrainParams)
    world = current_world()
    if config.processes > 1 and world.size == 1:
        check_launch(config.processes, config.batch_size, select_device(config.device))
        launch(config.processes)
        return
    train(config, params.load(ModelParams), params.load(AugmentParams))


if __name__ == "__main__":
    run(main)

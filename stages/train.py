"""Stage `train`: the notebook's training loop, with the cached splits living on the training device.

Batches are drawn by indexing the on-device tensors, so an epoch does no decoding, resampling or collation.
Waveform models read ``data/processed``; the ``embedding`` model reads the frozen embeddings of ``data/embedded``
and trains only its head.
The test split is never read here: model selection uses the validation split only. The loop is the notebook's
(Adam; ``make notebook`` runs it exactly), and params add a learning-rate schedule, label smoothing and, for waveform
models, on-device augmentation.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from stages import params
from stages.augment import Augment
from stages.cli import UserError, run
from stages.datasets import load_split
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
from stages.runtime import (
    autocast,
    batches,
    seed_everything,
    select_device,
    use_amp,
    use_compile,
)

PROCESSED = Path("data/processed")
EMBEDDED = Path("data/embedded")
MODEL = Path("models/model.pt")
METRICS = Path("metrics/train.json")
HISTORY = Path("plots/train_history.csv")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
# Wall-clock seconds per epoch differ on every run, so they live in an untracked, git-ignored log rather than in a
# DVC output: `dvc repro` on the same machine then reproduces a clean `git status`.
TIMING = Path("logs/train_timing.json")


def load_to(split: str, device: torch.device, embedded: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A split's inputs (waveforms, or embeddings) and labels on ``device``, moved there once for the whole run."""
    data = load_split((EMBEDDED if embedded else PROCESSED) / f"{split}.pt")
    inputs = data["embeddings"] if embedded else data["waveforms"]
    return inputs.to(device), data["labels"].to(device), data


def lr_schedule(
    optimizer: torch.optim.Optimizer, config: dict, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-batch learning-rate schedule ``train.schedule``, or None for the notebook's constant rate."""
    total = config["epochs"] * steps_per_epoch
    warmup = round(config["warmup_epochs"] * steps_per_epoch)
    if config["schedule"] == "onecycle":
        if total < 3:
            raise UserError(
                f"schedule 'onecycle' needs at least 3 optimizer steps, but {config['epochs']} epoch(s) of "
                f"{steps_per_epoch} batch(es) make {total}: lower train.batch_size, raise train.epochs, or use 'none'"
            )
        # each of the cycle's two phases must last at least one step, however few batches an epoch has
        rising = min(max(config["warmup_epochs"] / config["epochs"], 2 / total), 1 - 1 / total)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config["lr"], total_steps=total, pct_start=rising)
    if config["schedule"] == "cosine":

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


def train_epoch(
    model, optimizer, scheduler, augment, waveforms, labels, config, generator, device, amp, epoch
) -> tuple[float, float]:
    """One pass over the training split; returns mean loss and accuracy (on the augmented batches).

    Losses and correct counts stay on the device and are read once, after the epoch: a read per batch would make
    the host wait for the device at every step. A loss that is not finite is therefore caught at the epoch's end.
    """
    model.train()
    losses, correct = [], []
    indices = list(batches(len(labels), config["batch_size"], generator, device))
    progress = tqdm(
        indices,
        desc=f"epoch {epoch}/{config['epochs']}",
        unit="batch",
        leave=False,
    )
    for index in progress:
        batch, target = waveforms[index], labels[index]
        with autocast(device, amp):
            logits = forward_train(model, batch, augment)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=config["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.detach())
        correct.append((logits.argmax(dim=1) == target).sum())
    values = torch.stack(losses).tolist()
    bad = next((value for value in values if not math.isfinite(value)), None)
    if bad is not None:
        raise UserError(
            f"the training loss became {bad} in epoch {epoch}; "
            f"lower train.lr (now {config['lr']}) and run again. No model was written."
        )
    total_loss = sum(value * len(index) for value, index in zip(values, indices, strict=True))
    return total_loss / len(labels), int(torch.stack(correct).sum()) / len(labels)


def validate(model, inputs, labels, batch_size, amp) -> tuple[float, float]:
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


def train(config: dict, model_section: dict, augment_config: dict) -> None:
    seed_everything(config["seed"])
    device = select_device(config["device"])
    amp = use_amp(config["amp"], device)
    embedded = model_section["name"] == "embedding"
    if embedded and config["augment"]:
        raise UserError(
            "params.yaml: train.augment applies to waveform models; the embedding model's training clips are "
            "augmented before embedding (the embed section): set train.augment to false"
        )
    train_x, train_y, train_data = load_to("train", device, embedded)
    val_x, val_y, _ = load_to("validation", device, embedded)
    label_names = train_data["label_names"]

    config_of_model = model_config(model_section, train_data["sample_rate"])
    model = build_model(config_of_model, len(label_names)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    steps_per_epoch = math.ceil(len(train_y) / config["batch_size"])
    scheduler = lr_schedule(optimizer, config, steps_per_epoch)
    generator = torch.Generator().manual_seed(config["seed"])
    augment = Augment(augment_config, train_data["sample_rate"], config["seed"], device) if config["augment"] else None
    compiled = use_compile(config["compile"], device, config["epochs"] * steps_per_epoch)
    if compiled:
        model.compile()  # in place: the state_dict keeps its keys, so checkpoints stay as they were
    print(
        f"training {config_of_model['name']} ({count_parameters(model):,} parameters) on {device}"
        f"{' with bfloat16 autocast' if amp else ''}{' with augmentation' if augment else ''}"
        f"{' compiled' if compiled else ''}: "
        f"{len(train_y)} train, {len(val_y)} validation clips",
        file=sys.stderr,
    )

    history: list[dict] = []
    epoch_seconds: list[float] = []
    best = {"val_acc": -math.inf, "epoch": 0, "state": None}
    for epoch in range(1, config["epochs"] + 1):
        start = time.perf_counter()
        train_loss, train_acc = train_epoch(
            model, optimizer, scheduler, augment, train_x, train_y, config, generator, device, amp, epoch
        )
        val_loss, val_acc = validate(model, val_x, val_y, config["batch_size"], amp)
        if not math.isfinite(val_loss):
            raise UserError(f"the validation loss became {val_loss} in epoch {epoch}; lower train.lr and run again")
        seconds = time.perf_counter() - start
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

    kept = history[-1]
    if config["checkpoint"] == "best":
        model.load_state_dict(best["state"])
        kept = history[best["epoch"] - 1]
    samples = train_data["samples"] if embedded else train_x.shape[-1]
    audio = {"sample_rate": train_data["sample_rate"], "samples": samples}
    save_checkpoint(MODEL, model, config_of_model, label_names, audio)
    write_text(HISTORY, history_csv(history))
    write_json(
        METRICS,
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
        TIMING,
        {"device": str(device), "epoch_seconds": [round(value, 3) for value in epoch_seconds], "median": median},
    )
    print(f"saved {MODEL} (epoch {kept['epoch']}); median {median:.2f}s per epoch", file=sys.stderr)


def main() -> None:
    train(params.load("train"), params.load("model"), params.load("augment"))


if __name__ == "__main__":
    run(main)

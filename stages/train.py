"""Stage `train`: the notebook's training loop, with the cached splits living on the training device.

Batches are drawn by indexing the on-device tensors, so an epoch does no decoding, resampling or collation.
The test split is never read here: model selection uses the validation split only.
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
from stages.cli import UserError, run
from stages.datasets import load_split
from stages.fileio import write_json, write_text
from stages.models import build_model, count_parameters, save_checkpoint
from stages.runtime import autocast, batched_logits, batches, seed_everything, select_device, use_amp

PROCESSED = Path("data/processed")
MODEL = Path("models/model.pt")
METRICS = Path("metrics/train.json")
HISTORY = Path("plots/train_history.csv")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")


def load_to(split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A split's waveforms and labels on ``device``, moved there once for the whole run."""
    data = load_split(PROCESSED / f"{split}.pt")
    return data["waveforms"].to(device), data["labels"].to(device), data


def train_epoch(model, optimizer, waveforms, labels, config, generator, device, amp, epoch) -> tuple[float, float]:
    """One pass over the training split; returns mean loss and accuracy."""
    model.train()
    total_loss, correct = 0.0, 0
    progress = tqdm(
        list(batches(len(labels), config["batch_size"], generator)),
        desc=f"epoch {epoch}/{config['epochs']}",
        unit="batch",
        leave=False,
    )
    for index in progress:
        index = index.to(device)
        batch, target = waveforms[index], labels[index]
        with autocast(device, amp):
            logits = model(batch)
        loss = F.cross_entropy(logits.float(), target)
        if not torch.isfinite(loss):
            raise UserError(
                f"the training loss became {loss.item()} in epoch {epoch}; "
                f"lower train.lr (now {config['lr']}) and run again. No model was written."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(target)
        correct += (logits.argmax(dim=1) == target).sum().item()
    return total_loss / len(labels), correct / len(labels)


def validate(model, waveforms, labels, batch_size, amp) -> tuple[float, float]:
    logits = batched_logits(model, waveforms, batch_size, amp)
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(dim=1) == labels).float().mean().item()


def history_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def train(config: dict, model_config: dict) -> None:
    seed_everything(config["seed"])
    device = select_device(config["device"])
    amp = use_amp(config["amp"], device)
    train_x, train_y, train_data = load_to("train", device)
    val_x, val_y, _ = load_to("validation", device)
    label_names = train_data["label_names"]

    model = build_model(model_config, len(label_names)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    generator = torch.Generator().manual_seed(config["seed"])
    print(
        f"training {model_config['name']} ({count_parameters(model):,} parameters) on {device}"
        f"{' with bfloat16 autocast' if amp else ''}: {len(train_y)} train, {len(val_y)} validation clips",
        file=sys.stderr,
    )

    history: list[dict] = []
    best = {"val_acc": -math.inf, "epoch": 0, "state": None}
    for epoch in range(1, config["epochs"] + 1):
        start = time.perf_counter()
        train_loss, train_acc = train_epoch(model, optimizer, train_x, train_y, config, generator, device, amp, epoch)
        val_loss, val_acc = validate(model, val_x, val_y, config["batch_size"], amp)
        if not math.isfinite(val_loss):
            raise UserError(f"the validation loss became {val_loss} in epoch {epoch}; lower train.lr and run again")
        seconds = time.perf_counter() - start
        row = (epoch, train_loss, train_acc, val_loss, val_acc, seconds)
        history.append(dict(zip(HISTORY_COLUMNS, row, strict=True)))
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
    audio = {"sample_rate": train_data["sample_rate"], "samples": train_x.shape[-1]}
    save_checkpoint(MODEL, model, model_config, label_names, audio)
    write_text(HISTORY, history_csv([{**row, "seconds": round(row["seconds"], 3)} for row in history]))
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
    median = statistics.median(row["seconds"] for row in history)
    print(f"saved {MODEL} (epoch {kept['epoch']}); median {median:.2f}s per epoch", file=sys.stderr)


def main() -> None:
    train(params.load("train"), params.load("model"))


if __name__ == "__main__":
    run(main)

"""Training and preprocessing throughput of the notebook's M5 (8 kHz, batch 256), all measured in one run.

    python -m benchmarks.speed                    # about 2 minutes on 2 CPU cores, a minute of it torch.compile
    python -m benchmarks.speed --quick            # a smoke run in under a minute: fewer clips, no compile
    python -m benchmarks.speed --json speed.json  # also write the numbers (not a DVC output)

The data are FSDD's 3,000 recordings from ../shared/datasets (or --archive), or synthetic tones where that archive
is absent. Training rows, in clips per second of a training epoch:

- the notebook's loop, rebuilt: a Dataset that decodes a 16 kHz wav file per item, a shuffling DataLoader of batch
  256 whose collate_fn pads and resamples each batch to 8 kHz, the notebook's M5 forward (log_softmax, nll_loss),
  Adam, and ``loss.item()`` per batch;
- ``spokenwords.training.loop.train_epoch`` with M5's plain layer sequence (the train stage before the fast route);
- ``spokenwords.training.loop.train_epoch`` as the train stage runs it, eager and compiled (``model.compile()``, its
  compile time reported apart); on CUDA also with bfloat16 autocast;
- the arithmetic limit: FLOPs of a training step per clip, from the counted MACs, at the rate of a 2048 x 2048
  float32 matmul measured in the same run.

Preprocessing rows: ``prepare_many`` at 16 kHz over the recordings with one worker and with every core, checked to
give identical clips, and where one worker's time goes (decoding, resampling, locating the word, and the transfer of
a clip from a worker process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from benchmarks.macs import count_macs
from spokenwords.audio import torch_shaping
from spokenwords.data.archives import extract
from spokenwords.models.architectures import M5
from spokenwords.params import TrainParams, validate
from spokenwords.training.loop import EpochStart, Loop, TrainingForward, train_epoch
from tools.notebook import NOTEBOOK

REPO = Path(__file__).resolve().parent.parent
FSDD_ARCHIVE = REPO.parent / "shared" / "datasets" / "free-spoken-digit-dataset-1.0.10.tar.gz"
SOURCE_RATE, RATE, BATCH = 16_000, 8_000, 256
# The notebook's training settings (lr 0.01, no label smoothing), one epoch per timed call
NOTEBOOK_TRAIN = dataclasses.replace(validate(NOTEBOOK, TrainParams), epochs=1, batch_size=BATCH)


class NotebookM5(M5):
    """The notebook's M5 forward: average pooling by ``avg_pool1d``, a permute, and log-probabilities."""

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        out = self.features(waveform)
        out = F.avg_pool1d(out, out.shape[-1]).permute(0, 2, 1)
        return F.log_softmax(self.classifier(out), dim=2)


class PlainM5(M5):
    """M5 that always runs its plain layer sequence: the train stage's model before the fast CPU route."""

    forward = M5.reference


class WavFiles(torch.utils.data.Dataset):
    """The notebook's dataset: each item decoded from its wav file when asked for (torchaudio 2.11's ``load`` needs
    torchcodec, so soundfile decodes here).
    """

    def __init__(self, paths: list[Path], labels: list[int]) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        samples, _ = soundfile.read(self.paths[index], dtype="float32")
        return torch.from_numpy(samples).unsqueeze(0), self.labels[index]


RESAMPLE = torchaudio.transforms.Resample(SOURCE_RATE, RATE)


def notebook_collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook's collate_fn (pad to the longest clip), plus its 16 -> 8 kHz resampling of every batch."""
    tensors = nn.utils.rnn.pad_sequence([waveform.t() for waveform, _ in batch], batch_first=True).permute(0, 2, 1)
    return RESAMPLE(tensors), torch.tensor([label for _, label in batch])


def notebook_epoch(loader: torch.utils.data.DataLoader, device: torch.device) -> float:
    """One epoch of the notebook's training loop; returns its seconds."""
    torch.manual_seed(0)
    model = NotebookM5().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.0001)
    losses = []
    start = time.perf_counter()
    for data, target in loader:
        output = model(data.to(device))
        loss = F.nll_loss(output.squeeze(), target.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return time.perf_counter() - start


def pipeline_epochs(
    model: nn.Module, waveforms: torch.Tensor, labels: torch.Tensor, repeats: int, amp: bool = False
) -> tuple[list[float], float]:
    """Seconds of ``repeats`` timed epochs of the train stage's loop, after one warm-up epoch (returned apart: with
    ``model.compile()`` it holds the compilation).
    """
    device = waveforms.device
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.0001)
    loop = Loop(
        TrainingForward(model, None), optimizer, None, torch.Generator().manual_seed(0), device, amp, NOTEBOOK_TRAIN
    )
    times = []
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        train_epoch(loop, waveforms, labels, 1, EpochStart(loop.shuffle.get_state()))
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times[1:], times[0]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """Float32 FLOP/s of the best of ``repeats`` square matmuls."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = math.inf
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def training_flops_per_clip() -> tuple[int, int]:
    """MACs of M5's forward pass per 1 s clip at 8 kHz, and FLOPs of a training step per clip: forward, weight
    gradients and input gradients (all but the first layer's: the waveform needs none), 2 FLOPs a MAC.
    """
    model = M5().eval()
    example = torch.zeros(1, 1, RATE)
    macs, first = count_macs(model, example), count_macs(model.first_layer, example)
    return macs, 2 * (3 * macs - first)


def fsdd_recordings(archive: Path, work: Path, count: int) -> tuple[list[Path], list[int], str]:
    """Up to ``count`` FSDD recordings and their digits; synthetic 8 kHz tones where the archive is absent."""
    if archive.is_file():
        (work / "fsdd").mkdir()
        extract(archive, work / "fsdd")
        every = sorted((work / "fsdd").rglob("*.wav"))
        paths = every[:: max(1, len(every) // count)][:count]  # every digit and speaker, also in a short run
        return paths, [int(path.name.split("_")[0]) for path in paths], f"FSDD ({archive.name})"
    generator = np.random.default_rng(0)
    paths, labels = [], []
    for index in range(count):
        label = index % 10
        seconds = generator.uniform(0.3, 0.8)
        time_axis = np.arange(int(RATE * seconds)) / RATE
        samples = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * time_axis) + 0.05 * generator.standard_normal(
            time_axis.size
        )
        path = work / "tones" / f"{label}_tone_{index}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, samples.astype(np.float32), RATE)
        paths.append(path)
        labels.append(label)
    return paths, labels, f"synthetic tones ({archive} not found)"


def _send_clip(as_tensor: bool) -> tuple[np.ndarray | torch.Tensor, str]:
    clip = np.zeros((1, SOURCE_RATE), np.float32)
    return (torch.from_numpy(clip) if as_tensor else clip), ""


def _step_seconds(paths: list[Path]) -> dict[str, float]:
    """Seconds per clip of each step of ``torch_shaping.prepare``, in a worker process as ``prepare_many`` runs it (one
    thread: the main process's thread pool would wait on the other cores' work).
    """
    torch.set_num_threads(1)
    steps = {"decode": 0.0, "resample": 0.0, "locate": 0.0}
    for path in paths:
        start = time.perf_counter()
        waveform, rate = torch_shaping.read_mono(path, torch_shaping.MAX_SECONDS)
        steps["decode"] += time.perf_counter() - start
        source_rate = round(rate / torch_shaping.RATE_STEP) * torch_shaping.RATE_STEP
        start = time.perf_counter()
        if source_rate != SOURCE_RATE:
            waveform = torch_shaping.resampler(source_rate, SOURCE_RATE)(waveform)
        steps["resample"] += time.perf_counter() - start
        start = time.perf_counter()
        torch_shaping.locate(waveform, SOURCE_RATE, SOURCE_RATE)
        steps["locate"] += time.perf_counter() - start
    return {name: seconds / len(paths) for name, seconds in steps.items()}


def preprocess_rows(paths: list[Path], sample: int) -> tuple[dict, list[torch.Tensor | None]]:
    """``prepare_many`` with 1 worker and with all; one worker's seconds per clip by step, and the transfer of a
    clip from a worker as the NumPy array ``prepare_many`` sends and as a tensor (what it sent before).
    """
    speeds, clips = {}, {}
    for workers in sorted({1, os.cpu_count() or 1}):
        start = time.perf_counter()
        clips[workers] = [clip for clip, _ in torch_shaping.prepare_many(paths, SOURCE_RATE, 1.0, workers)]
        speeds[f"{workers} worker(s)"] = len(paths) / (time.perf_counter() - start)
    one, every = clips[1], clips[max(clips)]
    identical = all(
        b is None if a is None else b is not None and torch.equal(a, b) for a, b in zip(one, every, strict=True)
    )
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        per_clip = pool.apply(_step_seconds, (paths[:sample],))
        for name, as_tensor in (("transfer", False), ("transfer as a tensor", True)):
            start = time.perf_counter()
            for _ in pool.imap(_send_clip, [as_tensor] * sample, chunksize=16):
                pass
            per_clip[name] = (time.perf_counter() - start) / sample
    return {"clips_per_s": speeds, "identical": identical, "seconds_per_clip": per_clip}, one


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 512 clips, 1 repeat, no torch.compile")
    parser.add_argument("--archive", type=Path, default=FSDD_ARCHIVE, help="the FSDD archive (default: %(default)s)")
    parser.add_argument("--clips", type=int, help="recordings to use (default 3000, 512 with --quick)")
    parser.add_argument("--repeats", type=int, help="timed epochs per row (default 3, 1 with --quick)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    count = args.clips or (512 if args.quick else 3000)
    repeats = args.repeats or (1 if args.quick else 3)
    compile_rows = not (args.quick or args.no_compile)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="speed-") as folder:
        work = Path(folder)
        paths, labels, source = fsdd_recordings(args.archive, work, count)
        print(
            f"data: {len(paths)} recordings of {source}; torch {torch.__version__}, {os.cpu_count()} CPU cores, "
            f"{torch.get_num_threads()} threads"
            + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
            file=sys.stderr,
        )
        preprocess, clips = preprocess_rows(paths, min(300, len(paths)))
        kept = [index for index, clip in enumerate(clips) if clip is not None]
        at_16k = torch.stack([clips[index] for index in kept])
        label_tensor = torch.tensor([labels[index] for index in kept])
        wav_paths = []
        for index, clip in zip(kept, at_16k, strict=True):
            wav_paths.append(work / "16k" / f"{index}.wav")
            wav_paths[-1].parent.mkdir(exist_ok=True)
            soundfile.write(wav_paths[-1], clip[0].numpy(), SOURCE_RATE)  # 16-bit, as Speech Commands
        at_8k = RESAMPLE(at_16k).contiguous()
        rows: dict[str, dict] = {}

        def add(name: str, seconds: list[float], **extra: float) -> None:
            rows[name] = {"clips_per_s": len(kept) / statistics.median(seconds), **extra}
            print(f"  {name}: {rows[name]['clips_per_s']:,.0f} clips/s", file=sys.stderr)

        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        for device in devices:
            loader = torch.utils.data.DataLoader(
                WavFiles(wav_paths, label_tensor.tolist()),
                batch_size=BATCH,
                shuffle=True,
                collate_fn=notebook_collate,
                num_workers=int(device.type == "cuda"),
                pin_memory=device.type == "cuda",
            )
            add(f"notebook loop ({device.type})", [notebook_epoch(loader, device) for _ in range(repeats)])
            waveforms, targets = at_8k.to(device), label_tensor.to(device)
            amp = device.type == "cuda"
            suffix = f"{device.type}{', bf16 autocast' if amp else ''}"
            if device.type == "cpu":
                add(f"train epoch, plain layers ({suffix})", pipeline_epochs(PlainM5(), waveforms, targets, repeats)[0])
            add(f"train epoch, eager ({suffix})", pipeline_epochs(M5().to(device), waveforms, targets, repeats, amp)[0])
            if compile_rows:
                model = M5().to(device)
                model.compile()
                seconds, first = pipeline_epochs(model, waveforms, targets, repeats, amp)
                add(f"train epoch, compiled ({suffix})", seconds, compile_seconds=first - statistics.median(seconds))

    macs, flops = training_flops_per_clip()
    rate = matmul_flops(torch.device("cpu"))
    rows["arithmetic limit (cpu)"] = {"clips_per_s": rate / flops}
    limit = rows["arithmetic limit (cpu)"]["clips_per_s"]
    width = max(len(name) for name in rows)
    print(f"\nM5 training, 8 kHz, batch {BATCH}, {len(kept)} clips, median of {repeats} epoch(s)")
    print(f"{'':{width}}  {'clips/s':>9}  {'x notebook':>10}  {'x limit':>7}")
    for name, row in rows.items():
        device = "cuda" if "(cuda" in name else "cpu"
        notebook = rows[f"notebook loop ({device})"]["clips_per_s"]
        limit_ratio = f"{row['clips_per_s'] / limit:7.2f}" if device == "cpu" else f"{'':7}"
        extra = f"  (compile {row['compile_seconds']:.0f} s)" if "compile_seconds" in row else ""
        print(
            f"{name:{width}}  {row['clips_per_s']:9,.0f}  {row['clips_per_s'] / notebook:10.2f}  {limit_ratio}{extra}"
        )
    print(
        f"limit: {macs / 1e6:.2f} M MACs forward, {flops / 1e6:.2f} MFLOP per clip per training step, "
        f"matmul {rate / 1e9:.0f} GFLOP/s (float32, {torch.get_num_threads()} threads)"
    )
    speeds = preprocess["clips_per_s"]
    names = list(speeds)
    print(f"\npreprocess at {SOURCE_RATE} Hz, {len(paths)} recordings (identical clips: {preprocess['identical']})")
    for name in names:
        print(f"{name:>12}: {speeds[name]:7,.0f} clips/s  {speeds[name] / speeds[names[0]]:4.2f}x")
    steps = dict(preprocess["seconds_per_clip"])
    before = steps.pop("transfer as a tensor")
    total = sum(steps.values())
    print("one worker, per clip: " + ", ".join(f"{k} {v * 1e3:.2f} ms ({v / total:.0%})" for k, v in steps.items()))
    print(f"(a clip sent as a tensor, as before: {before * 1e3:.2f} ms)")
    if args.json:
        args.json.write_text(
            json.dumps({"source": source, "clips": len(kept), "train": rows, "preprocess": preprocess}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()

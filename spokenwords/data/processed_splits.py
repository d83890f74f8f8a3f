"""The processed split files of ``data/processed``: written a clip at a time, read memory-mapped.

``<split>.npy`` holds the waveforms, float32 ``[N, 1, samples]`` in NumPy's ``.npy`` format, and ``<split>.pt`` the
rest (labels, speakers, paths, label names, sample rate) with the name of its ``.npy`` file. The array is a plain
float32 file so that it can be written a clip at a time (``waveform_file``) and read memory-mapped (``load_split``):
preprocess never holds a split in memory, a reader copies only the rows it indexes, and the values are the exact
float32 samples, not a rescaled int16 code. ``.npy`` rather than a memory-mapped ``torch.load``: its header can be
rewritten in place once the number of kept clips is known, where a torch archive would have to be built from a whole
tensor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from spokenwords.cli import UserError
from spokenwords.fileio import atomic_path, write_torch

WAVEFORM_DTYPE = np.dtype("<f4")  # float32, little-endian whatever the machine, so the bytes are the same everywhere


class WaveformRows:
    """The rows of a ``.npy`` waveform file being written: ``append`` one ``[1, samples]`` clip after another."""

    def __init__(self, handle: BinaryIO, samples: int) -> None:
        self.handle, self.samples, self.count = handle, samples, 0

    def write_header(self) -> None:
        header = {"descr": WAVEFORM_DTYPE.str, "fortran_order": False, "shape": (self.count, 1, self.samples)}
        np.lib.format.write_array_header_1_0(self.handle, header)

    def append(self, clip: torch.Tensor) -> None:
        array = clip.numpy()
        if array.shape != (1, self.samples):  # a row of another length would shift every later row
            raise ValueError(f"a clip of shape {tuple(array.shape)} in a file of [N, 1, {self.samples}] rows")
        self.handle.write(array.astype(WAVEFORM_DTYPE, copy=False).tobytes())
        self.count += 1


@contextlib.contextmanager
def waveform_file(path: Path, samples: int) -> Iterator[WaveformRows]:
    """Stream clips into the ``.npy`` file ``path`` (atomically), so only one clip at a time is in memory.

    The header is written first for no rows and rewritten in place on success with the rows appended: NumPy pads
    a header with room for a row count of any size, so the data never moves, a skipped clip leaves no gap, and the
    same rows always give the same bytes.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        rows = WaveformRows(handle, samples)
        rows.write_header()
        data_offset = handle.tell()
        yield rows
        handle.seek(0)
        rows.write_header()
        if handle.tell() != data_offset:
            raise RuntimeError(f"the .npy header of {path} changed length when its row count was written")


def waveform_path(path: Path) -> Path:
    """The waveform file of the split whose metadata is ``path``: ``train.pt`` -> ``train.npy``."""
    return path.with_suffix(".npy")


def save_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Save a split's metadata atomically, naming the waveform file already written beside it."""
    write_torch(path, {**metadata, "waveform_file": waveform_path(path).name})


def save_split(path: Path, split: dict[str, Any]) -> None:
    """Save one processed split held in memory (``waveforms`` a tensor ``[N, 1, samples]``) atomically."""
    waveforms = split["waveforms"]
    with waveform_file(waveform_path(path), waveforms.shape[-1]) as rows:
        for clip in waveforms:
            rows.append(clip)
    save_metadata(path, {key: value for key, value in split.items() if key != "waveforms"})


def load_split(path: Path) -> dict[str, Any]:
    """Load one processed split (tensors, label names, speakers, paths) safely.

    The waveforms come back memory-mapped from their ``.npy`` file, not read into memory: indexing a batch reads
    only its rows. The mapping is copy-on-write, so writing into the tensor changes this process's copy of the
    touched pages (in memory), never the file.
    """
    try:
        data = torch.load(path, weights_only=True)
        if "waveform_file" in data:
            data["waveforms"] = torch.from_numpy(np.load(path.parent / data.pop("waveform_file"), mmap_mode="c"))
    except FileNotFoundError as error:
        raise UserError(f"{error.filename or path} is missing: run `dvc repro preprocess` first") from None
    except Exception as error:
        raise UserError(f"{path} is not a processed split ({error}); rerun `dvc repro preprocess`") from None
    return data


def check_fits(model: Path, checkpoint: dict[str, Any], split: Path, data: dict[str, Any]) -> None:
    """Refuse a model (its ``checkpoint``) whose labels or sample rate differ from a split's (``data``): its class
    indices would be scored as other words, and it would hear every clip too fast or too slow. One line names what
    differs.
    """
    model_labels, split_labels = list(checkpoint["label_names"]), list(data["label_names"])
    model_rate, split_rate = checkpoint["audio"]["sample_rate"], data["sample_rate"]
    if model_labels == split_labels and model_rate == split_rate:
        return
    trained, held = "clips", "clips"
    if model_labels != split_labels:
        trained, held = f"labels [{', '.join(model_labels)}]", f"[{', '.join(split_labels)}]"
    if model_rate != split_rate:
        trained, held = f"{trained} at {model_rate} Hz", f"{held} at {split_rate} Hz"
    raise UserError(f"{model} was trained on {trained} but {split} holds {held}: run `dvc repro` to retrain")

"""Dataset sources, the one normalised raw layout they all end in, and the processed split files.

Raw layout (``data/raw``), as in Google Speech Commands::

    <label>/<speaker>_nohash_<n>.wav
    validation_list.txt   # relative paths, one per line
    testing_list.txt      # everything else is training data
    synthetic_train/<label>/<speaker>_nohash_<n>.wav   # optional extra training clips (data.synthetic_train_clips)

Processed split (``data/processed``): ``<split>.npy`` holds the waveforms, float32 ``[N, 1, samples]`` in NumPy's
``.npy`` format, and ``<split>.pt`` the rest (labels, speakers, paths, label names, sample rate) with the name of its
``.npy`` file. The array is a plain float32 file so that it can be written a clip at a time (``waveform_file``) and
read memory-mapped (``load_split``): preprocess never holds a split in memory, a reader copies only the rows it
indexes, and the values are the exact float32 samples, not a rescaled int16 code. ``.npy`` rather than a
memory-mapped ``torch.load``: its header can be rewritten in place once the number of kept clips is known, where a
torch archive would have to be built from a whole tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from stages.archives import extract
from stages.cli import UserError
from stages.fetch import fetch
from stages.fileio import atomic_path, write_text, write_torch

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "validation", "test")
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SPEAKER_PATTERN = re.compile(r"^(?P<speaker>[^_]+)_nohash_(?P<n>\d+)\.\w+$")
FSDD_PATTERN = re.compile(r"^(?P<digit>\d)_(?P<speaker>[^_]+)_(?P<n>\d+)\.wav$")
HELD_OUT_FRACTION = 0.1
# Synthetic clips added to a recorded source's training split; never in the lists, so never held out.
SYNTHETIC_TRAIN = "synthetic_train"
WAVEFORM_DTYPE = np.dtype("<f4")  # float32, little-endian whatever the machine, so the bytes are the same everywhere


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and how its extracted tree becomes the raw layout."""

    url: str
    sha256: str
    normalise: Callable[[Path, Path], None]
    split_rule: str


def speaker_of(relpath: str) -> str:
    """The speaker id of ``<label>/<speaker>_nohash_<n>.wav``."""
    match = SPEAKER_PATTERN.match(Path(relpath).name)
    return match["speaker"] if match else Path(relpath).stem


def speaker_disjoint(speakers: Iterable[str], fraction: float = HELD_OUT_FRACTION) -> tuple[set[str], set[str]]:
    """Pick validation and test speakers by a stable hash, so the choice never depends on file order.

    Each held-out split gets ``fraction`` of the speakers, at least one; at least one speaker stays for training.
    """
    ordered = sorted(set(speakers), key=lambda name: hashlib.sha1(name.encode()).hexdigest())  # noqa: S324
    if len(ordered) < 3:
        raise UserError(f"a speaker-disjoint split needs at least 3 speakers, found {len(ordered)}")
    count = max(1, round(fraction * len(ordered)))
    count = min(count, (len(ordered) - 1) // 2)
    return set(ordered[count : 2 * count]), set(ordered[:count])


def clip_paths(root: Path) -> list[str]:
    """Relative paths of the digit clips under a raw-layout folder, sorted."""
    return sorted(
        path.relative_to(root).as_posix()
        for label in DIGITS
        if (root / label).is_dir()
        for path in (root / label).iterdir()
        if path.suffix.lower() in AUDIO_SUFFIXES
    )


def write_lists(root: Path, validation: Iterable[str], test: Iterable[str]) -> None:
    """Write the two split lists of a raw-layout folder."""
    for split, paths in (("validation", validation), ("test", test)):
        write_text(root / LIST_FILES[split], "".join(f"{path}\n" for path in sorted(paths)))


def write_speaker_disjoint_lists(root: Path) -> None:
    """Split every clip under ``root`` by speaker into train, validation and test."""
    paths = clip_paths(root)
    validation_speakers, test_speakers = speaker_disjoint(speaker_of(path) for path in paths)
    write_lists(
        root,
        [path for path in paths if speaker_of(path) in validation_speakers],
        [path for path in paths if speaker_of(path) in test_speakers],
    )


def read_list(root: Path, split: str) -> set[str]:
    """Read one split list of a raw-layout folder; a missing list is an empty split."""
    path = root / LIST_FILES[split]
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def find_dir(root: Path, wanted: Callable[[Path], bool], what: str) -> Path:
    """The shallowest folder under ``root`` (itself included) for which ``wanted`` holds."""
    candidates = [root, *sorted(path for path in root.rglob("*") if path.is_dir())]
    for folder in sorted(candidates, key=lambda path: len(path.parts)):
        if wanted(folder):
            return folder
    raise UserError(f"{root} does not look like {what}")


def copy_clip(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def normalise_speech_commands(extracted: Path, out: Path) -> None:
    """Keep the ten digit words and their lines of the official validation and testing lists."""
    root = find_dir(extracted, lambda folder: (folder / "validation_list.txt").is_file(), "Speech Commands")
    paths = clip_paths(root)
    if not paths:
        raise UserError(f"{root} holds no clips of the digit words {', '.join(DIGITS)}")
    for path in paths:
        copy_clip(root / path, out / path)
    kept = set(paths)
    write_lists(out, read_list(root, "validation") & kept, read_list(root, "test") & kept)


def normalise_tiny_speech_commands(extracted: Path, out: Path) -> None:
    """Use the validation list as the test split, as the notebook did, and carve a new speaker-disjoint validation."""
    root = find_dir(extracted, lambda folder: (folder / "validation_list.txt").is_file(), "TinySpeechCommands")
    paths = clip_paths(root)
    if not paths:
        raise UserError(f"{root} holds no clips of the digit words {', '.join(DIGITS)}")
    for path in paths:
        copy_clip(root / path, out / path)
    test = read_list(root, "validation") & set(paths)
    training = [path for path in paths if path not in test]
    validation_speakers, _ = speaker_disjoint(speaker_of(path) for path in training)
    write_lists(out, [path for path in training if speaker_of(path) in validation_speakers], test)


def normalise_fsdd(extracted: Path, out: Path) -> None:
    """Rename ``<digit>_<speaker>_<n>.wav`` into the raw layout and apply FSDD's documented split.

    FSDD's README: recordings 0-4 of each speaker and digit are the test set, the rest training.
    Validation takes recordings 5-9 by the same rule, so every speaker is in every split, as documented.
    """

    def has_recordings(folder: Path) -> bool:
        return any(FSDD_PATTERN.match(path.name) for path in folder.glob("*.wav"))

    root = find_dir(extracted, has_recordings, "the Free Spoken Digit Dataset (<digit>_<speaker>_<n>.wav)")
    validation, test = [], []
    for source in sorted(root.glob("*.wav")):
        match = FSDD_PATTERN.match(source.name)
        if not match:
            continue
        relpath = f"{DIGITS[int(match['digit'])]}/{match['speaker']}_nohash_{match['n']}.wav"
        copy_clip(source, out / relpath)
        index = int(match["n"])
        if index < 5:
            test.append(relpath)
        elif index < 10:
            validation.append(relpath)
    write_lists(out, validation, test)


SOURCES: dict[str, Source] = {
    "tiny-speech-commands": Source(
        url="https://dl.dropboxusercontent.com/s/4p46txh2kj16tb7/TinySpeechCommands.tar.gz",
        sha256="",
        normalise=normalise_tiny_speech_commands,
        split_rule="test = the archive's validation_list.txt (as in the notebook); "
        "validation = 10 % of the training speakers, chosen by hash",
    ),
    "speech-commands": Source(
        url="http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        sha256="",
        normalise=normalise_speech_commands,
        split_rule="the official validation_list.txt and testing_list.txt (speaker-disjoint by hash)",
    ),
    "fsdd": Source(
        url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
        sha256="",
        normalise=normalise_fsdd,
        split_rule="documented: recordings 0-4 test, 5-9 validation, 10-49 train; every speaker in every split",
    ),
}


def obtain(name: str, location: str, sha256: str, out: Path) -> None:
    """Fetch source ``name`` from ``location`` (its own URL when empty), verify, extract, and normalise into ``out``.

    The source's known digest is checked only for its own URL: a mirror need not be byte-identical.
    """
    source = SOURCES[name]
    with tempfile.TemporaryDirectory(prefix=".download-", dir=out.parent) as work:
        local = fetch(location or source.url, Path(work), sha256 or ("" if location else source.sha256))
        if not local.is_dir():
            extracted = Path(work) / "extracted"
            extracted.mkdir()
            extract(local, extracted)
            local = extracted
        source.normalise(local, out)


def split_of(relpath: str, lists: dict[str, set[str]]) -> str:
    """The split a raw clip belongs to: a list it is on, or training."""
    for split, paths in lists.items():
        if relpath in paths:
            return split
    return "train"


def assign_splits(paths: list[str], lists: dict[str, set[str]], split: str, fold: int) -> dict[str, list[str]]:
    """Share raw clips among train, validation and test by the rule ``data.split`` names.

    ``official``: the source's documented lists. ``speaker``: validation and test speakers chosen by hash, as
    ``speaker_disjoint`` does for Speech Commands. ``loso``: leave one speaker out, speaker number ``fold`` in
    sorted order is the test split; the other speakers' clips on the validation list are validation, the rest
    train, so every remaining speaker still trains and the test voice is never heard in training.
    """
    speakers = sorted({speaker_of(path) for path in paths})
    if split == "official":
        chosen = {path: split_of(path, lists) for path in paths}
    elif split == "speaker":
        validation_speakers, test_speakers = speaker_disjoint(speakers)
        held_out = {**dict.fromkeys(validation_speakers, "validation"), **dict.fromkeys(test_speakers, "test")}
        chosen = {path: held_out.get(speaker_of(path), "train") for path in paths}
    else:
        if not fold < len(speakers):
            raise UserError(f"params.yaml: data.fold must be < {len(speakers)}, the number of speakers, got {fold}")
        validation = lists["validation"]
        chosen = {
            path: "test" if speaker_of(path) == speakers[fold] else "validation" if path in validation else "train"
            for path in paths
        }
    return {name: [path for path in paths if chosen[path] == name] for name in SPLITS}


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

"""Dataset sources and the one normalised raw layout they all end in.

Raw layout (``data/raw``), as in Google Speech Commands::

    <label>/<speaker>_nohash_<n>.wav
    validation_list.txt   # relative paths, one per line
    testing_list.txt      # everything else is training data
    synthetic_train/<label>/<speaker>_nohash_<n>.wav   # optional extra training clips (data.synthetic_train_clips)

Each recorded source is fetched (``stages.fetch``), extracted (``stages.archives``) and normalised into that layout by
its own function. Which clip then goes to which split is ``stages.splits``'s job.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from stages.archives import extract
from stages.cli import UserError
from stages.fetch import fetch
from stages.fileio import write_text

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SPEAKER_PATTERN = re.compile(r"^(?P<speaker>[^_]+)_nohash_(?P<n>\d+)\.\w+$")
FSDD_PATTERN = re.compile(r"^(?P<digit>\d)_(?P<speaker>[^_]+)_(?P<n>\d+)\.wav$")
FSDD_TEST_RECORDINGS = 5  # FSDD's README: recordings 0-4 of each speaker and digit are its test set
HELD_OUT_FRACTION = 0.1
# Synthetic clips added to a recorded source's training split; never in the lists, so never held out.
SYNTHETIC_TRAIN = "synthetic_train"


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
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
    )


def unknown_folders(root: Path) -> list[str]:
    """Folders of a raw-layout folder that ``clip_paths`` does not read: not a digit label, nor the extra
    training clips' ``synthetic_train``, nor hidden.
    """
    return sorted(
        path.name
        for path in root.iterdir()
        if path.is_dir() and path.name not in (*DIGITS, SYNTHETIC_TRAIN) and not path.name.startswith(".")
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


def copy_digit_words(extracted: Path, out: Path, what: str) -> tuple[Path, list[str]]:
    """Copy the digit words of a Speech Commands tree (``what``: its name in errors) into ``out``; return the tree's
    root, where its split lists are, and the copied clips' paths.
    """
    root = find_dir(extracted, lambda folder: (folder / "validation_list.txt").is_file(), what)
    paths = clip_paths(root)
    if not paths:
        raise UserError(f"{root} holds no clips of the digit words {', '.join(DIGITS)}")
    for path in paths:
        copy_clip(root / path, out / path)
    return root, paths


def normalise_speech_commands(extracted: Path, out: Path) -> None:
    """Keep the ten digit words and their lines of the official validation and testing lists."""
    root, paths = copy_digit_words(extracted, out, "Speech Commands")
    kept = set(paths)
    write_lists(out, read_list(root, "validation") & kept, read_list(root, "test") & kept)


def normalise_tiny_speech_commands(extracted: Path, out: Path) -> None:
    """Use the validation list as the test split, as the notebook did, and carve a new speaker-disjoint validation."""
    root, paths = copy_digit_words(extracted, out, "TinySpeechCommands")
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
        if index < FSDD_TEST_RECORDINGS:
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

"""Dataset sources and the one normalised raw layout they all end in, for any vocabulary.

Raw layout (``data/raw``), as in Google Speech Commands::

    labels.txt            # the labels in order, one per line: data.words, then _unknown_ and _silence_ where on
    <word>/<speaker>_nohash_<n>.wav
    _unknown_/<other word>/<file>.wav  # other words, when data.unknown is on (synthetic: _unknown_/<file>.wav)
    _silence_/<noise>_nohash_<k>.wav   # 1 s of background noise and no word, when data.silence is on
    validation_list.txt   # relative paths, one per line
    testing_list.txt      # everything else is training data
    synthetic_train/...   # optional extra training clips (data.synthetic_train_clips), the same layout

Each recorded source is fetched (``spokenwords.data.fetch``), extracted (``spokenwords.data.archives``) and read by its
own function into a ``Recording``: each word's clips, the source's split lists and its background noise. ``write_raw``
then keeps the vocabulary the params ask for, in the same way for every source. Which clip goes to which split is
``spokenwords.data.splits``'s job.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import soundfile

from spokenwords.cli import UserError
from spokenwords.data.archives import extract
from spokenwords.data.fetch import fetch
from spokenwords.fileio import write_text
from spokenwords.params import DIGITS, SILENCE, UNKNOWN, DataParams, label_problem

LABELS_FILE = "labels.txt"
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SPEAKER_PATTERN = re.compile(r"^(?P<speaker>[^_]+)_nohash_(?P<n>\d+)\.\w+$")
FSDD_PATTERN = re.compile(r"^(?P<digit>\d)_(?P<speaker>[^_]+)_(?P<n>\d+)\.wav$")
FSDD_TEST_RECORDINGS = 5  # FSDD's README: recordings 0-4 of each speaker and digit are its test set
HELD_OUT_FRACTION = 0.1
# Synthetic clips added to a recorded source's training split; never in the lists, so never held out.
SYNTHETIC_TRAIN = "synthetic_train"
# Speech Commands' folder of long noise recordings, cut into 1 s pieces for the _silence_ class.
BACKGROUND = "_background_noise_"


@dataclass(frozen=True)
class Vocabulary:
    """What a source is asked for: ``words`` in label order (None: every word it has, sorted) and the two open-set
    classes, which follow the words as Speech Commands names them.
    """

    words: tuple[str, ...] | None = None
    unknown: bool = False
    silence: bool = False

    @classmethod
    def of(cls, config: DataParams) -> Vocabulary:
        return cls(None if config.words is None else tuple(config.words), config.unknown, config.silence)

    def labels(self, words: Iterable[str]) -> list[str]:
        """The class labels for these words: the words, then ``_unknown_`` and ``_silence_`` where on."""
        return [*words, *[UNKNOWN] * self.unknown, *[SILENCE] * self.silence]


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and how its extracted tree becomes the raw layout."""

    url: str
    sha256: str
    read: Callable[[Path, Vocabulary], Recording]
    split_rule: str


@dataclass
class Recording:
    """A recorded corpus as found: each word's clips as (file, name in the raw layout), its split lists as raw
    relative paths ``<word>/<name>`` (None: it has none, so clips are hashed into splits), and its background noise.
    """

    clips: dict[str, list[tuple[Path, str]]]
    lists: dict[str, set[str]] | None
    background: list[Path] = field(default_factory=list)
    what: str = "the source"


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


def label_of(relpath: str) -> str:
    """The label of a raw clip ``<label>/...`` (``synthetic_train/`` already stripped)."""
    return relpath.split("/", 1)[0]


def read_labels(root: Path) -> list[str]:
    """The labels of a raw-layout folder, in order, from its ``labels.txt``."""
    path = root / LABELS_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: run `dvc repro download` first")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_labels(root: Path, labels: Iterable[str]) -> None:
    write_text(root / LABELS_FILE, "".join(f"{label}\n" for label in labels))


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()


def clip_paths(root: Path) -> list[str]:
    """Relative paths of the clips of every label of a raw-layout folder (its ``labels.txt``), sorted."""
    return sorted(
        path.relative_to(root).as_posix()
        for label in read_labels(root)
        if (root / label).is_dir()
        for path in (root / label).rglob("*")
        if is_audio(path)
    )


def synthetic_train_paths(raw: Path) -> list[str]:
    """The extra synthetic training clips of a raw-layout folder (``data.synthetic_train_clips``), relative to their
    own folder; none where there is no such folder.
    """
    return clip_paths(raw / SYNTHETIC_TRAIN) if (raw / SYNTHETIC_TRAIN).is_dir() else []


def unknown_folders(root: Path) -> list[str]:
    """Folders of a raw-layout folder that ``clip_paths`` does not read: not a label, nor the extra training clips'
    ``synthetic_train``, nor hidden.
    """
    labels = read_labels(root)
    return sorted(
        path.name
        for path in root.iterdir()
        if path.is_dir() and path.name not in (*labels, SYNTHETIC_TRAIN) and not path.name.startswith(".")
    )


def write_lists(root: Path, validation: Iterable[str], test: Iterable[str]) -> None:
    """Write the two split lists of a raw-layout folder."""
    for split, paths in (("validation", validation), ("test", test)):
        write_text(root / LIST_FILES[split], "".join(f"{path}\n" for path in sorted(paths)))


def speaker_disjoint_lists(paths: list[str]) -> dict[str, set[str]]:
    """Validation and test lists of ``paths`` split by speaker (``speaker_disjoint``)."""
    validation_speakers, test_speakers = speaker_disjoint(speaker_of(path) for path in paths)
    return {
        "validation": {path for path in paths if speaker_of(path) in validation_speakers},
        "test": {path for path in paths if speaker_of(path) in test_speakers},
    }


def write_speaker_disjoint_lists(root: Path) -> None:
    """Split every clip under ``root`` by speaker into train, validation and test."""
    lists = speaker_disjoint_lists(clip_paths(root))
    write_lists(root, lists["validation"], lists["test"])


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


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` alone, so a sample of clips never depends on file order."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 2**32  # noqa: S324


def hashed_lists(paths: list[str]) -> dict[str, set[str]]:
    """Validation and test lists for a corpus that has none: by speaker where every name carries one
    (``<speaker>_nohash_<n>``) and there are at least 3, else by file; ``speaker_disjoint``'s stable hash either way.
    """
    if all(SPEAKER_PATTERN.match(Path(path).name) for path in paths) and len({speaker_of(p) for p in paths}) >= 3:
        return speaker_disjoint_lists(paths)
    validation, test = speaker_disjoint(paths)
    return {"validation": validation, "test": test}


def cut_background(files: list[Path], out: Path) -> list[str]:
    """Cut each background recording into whole 1 s pieces, ``_silence_/<name>_nohash_<k>.wav``; return their paths.

    Speech Commands' README offers these recordings as the noise to learn silence from; the name's underscores become
    hyphens, so that the recording is the speaker and its pieces stay in one split.
    """
    written = []
    for path in files:
        name = path.stem.replace("_", "-")
        try:
            with soundfile.SoundFile(path) as audio:
                for index, block in enumerate(audio.blocks(blocksize=audio.samplerate, dtype="float32")):
                    if len(block) < audio.samplerate:
                        break
                    relpath = f"{SILENCE}/{name}_nohash_{index}.wav"
                    soundfile.write(out / relpath, block, audio.samplerate, subtype="PCM_16")
                    written.append(relpath)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            print(f"warning: skipped background noise {path}: not readable audio ({error})", file=sys.stderr)
    return written


def write_raw(found: Recording, vocabulary: Vocabulary, out: Path) -> list[str]:
    """Copy the asked-for vocabulary of a recorded corpus into the raw layout at ``out``; return its labels.

    Unknown clips are the other words' clips, a stable-hash sample about as large as one word's; silence is the
    background noise cut into seconds. The corpus' own split lists carry over (silence split by recording), or, where
    it has none, every clip is hashed into a split.
    """
    available = sorted(found.clips)
    words = list(vocabulary.words) if vocabulary.words is not None else available
    missing = [word for word in words if word not in found.clips]
    if missing:
        raise UserError(
            f"data.words: {found.what} has no clips of {', '.join(repr(word) for word in missing)} "
            f"(its words: {', '.join(available) or 'none'})"
        )
    placed = {f"{word}/{name}": (source, f"{word}/{name}") for word in words for source, name in found.clips[word]}
    if vocabulary.unknown:
        others = [(word, source, name) for word in available if word not in words for source, name in found.clips[word]]
        if not others:
            raise UserError(f"data.unknown: {found.what} has no words outside data.words to learn {UNKNOWN} from")
        share = len(placed) / len(words) / len(others)
        placed |= {
            f"{word}/{name}": (source, f"{UNKNOWN}/{word}/{name}")
            for word, source, name in others
            if stable_fraction(f"{word}/{name}") < share
        }
    for source, relpath in placed.values():
        copy_clip(source, out / relpath)
    silence = []
    if vocabulary.silence:
        if not found.background:
            raise UserError(f"data.silence: {found.what} has no {BACKGROUND} folder of noise to learn {SILENCE} from")
        (out / SILENCE).mkdir()
        silence = cut_background(found.background, out)
        if not silence:
            raise UserError(f"data.silence: the {BACKGROUND} recordings of {found.what} hold no whole second")
    if found.lists is None:
        lists = hashed_lists([relpath for _, relpath in placed.values()] + silence)
    else:
        silence_lists = hashed_lists(silence) if silence else {"validation": set(), "test": set()}
        lists = {
            split: {placed[path][1] for path in paths if path in placed} | silence_lists[split]
            for split, paths in found.lists.items()
        }
    write_lists(out, lists["validation"], lists["test"])
    labels = vocabulary.labels(words)
    write_labels(out, labels)
    return labels


def audio_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if is_audio(path))


def labelled_tree(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """The clips of a ``<word>/<file>`` tree (Speech Commands, a user's folder): folders starting with ``_`` or
    ``.`` are not words.
    """
    return {
        folder.name: [(path, path.name) for path in audio_files(folder)]
        for folder in sorted(root.iterdir())
        if folder.is_dir() and not folder.name.startswith(("_", "."))
    }


def background_of(root: Path) -> list[Path]:
    folder = root / BACKGROUND
    return audio_files(folder) if folder.is_dir() else []


def speech_commands_root(extracted: Path, what: str) -> Path:
    return find_dir(extracted, lambda folder: (folder / LIST_FILES["validation"]).is_file(), what)


def read_speech_commands(extracted: Path, _vocabulary: Vocabulary) -> Recording:
    """Speech Commands (v0.01 or v0.02): every word, the official validation and testing lists, the background noise."""
    root = speech_commands_root(extracted, "Speech Commands")
    lists = {split: read_list(root, split) for split in LIST_FILES}
    return Recording(labelled_tree(root), lists, background_of(root), "Speech Commands")


def read_tiny_speech_commands(extracted: Path, _vocabulary: Vocabulary) -> Recording:
    """Use the validation list as the test split, as the notebook did, and carve a new speaker-disjoint validation."""
    root = speech_commands_root(extracted, "TinySpeechCommands")
    clips = labelled_tree(root)
    test = read_list(root, "validation")
    training = [f"{word}/{name}" for word, items in clips.items() for _, name in items if f"{word}/{name}" not in test]
    validation_speakers, _ = speaker_disjoint(speaker_of(path) for path in training)
    validation = {path for path in training if speaker_of(path) in validation_speakers}
    return Recording(clips, {"validation": validation, "test": test}, background_of(root), "TinySpeechCommands")


def read_fsdd(extracted: Path, _vocabulary: Vocabulary) -> Recording:
    """Rename ``<digit>_<speaker>_<n>.wav`` into the raw layout and apply FSDD's documented split.

    FSDD's README: recordings 0-4 of each speaker and digit are the test set, the rest training.
    Validation takes recordings 5-9 by the same rule, so every speaker is in every split, as documented.
    """

    def has_recordings(folder: Path) -> bool:
        return any(FSDD_PATTERN.match(path.name) for path in folder.glob("*.wav"))

    root = find_dir(extracted, has_recordings, "the Free Spoken Digit Dataset (<digit>_<speaker>_<n>.wav)")
    clips: dict[str, list[tuple[Path, str]]] = {}
    lists: dict[str, set[str]] = {"validation": set(), "test": set()}
    for source in sorted(root.glob("*.wav")):
        match = FSDD_PATTERN.match(source.name)
        if not match:
            continue
        word, name = DIGITS[int(match["digit"])], f"{match['speaker']}_nohash_{match['n']}.wav"
        clips.setdefault(word, []).append((source, name))
        index = int(match["n"])
        if index < FSDD_TEST_RECORDINGS:
            lists["test"].add(f"{word}/{name}")
        elif index < 10:
            lists["validation"].add(f"{word}/{name}")
    return Recording(clips, lists, [], "fsdd (the ten digits)")


def folder_problem(name: str, words: tuple[str, ...] | None, unknown: bool) -> str | None:
    """Why a label folder of a user's recordings cannot be used as it stands, or None."""
    problem = label_problem(name)
    if problem:
        return f"folder {problem}"
    if words is not None and name not in words and not unknown:
        return (
            f"folder '{name}' is not in data.words ({', '.join(words)}): add it, remove the folder, "
            f"or set data.unknown: true to learn it as {UNKNOWN}"
        )
    return None


def read_folder(extracted: Path, vocabulary: Vocabulary) -> Recording:
    """A user's own recordings, ``<label>/<any name>.<wav|flac|ogg>``: the folders are the labels, split by the
    folder's ``validation_list.txt`` and ``testing_list.txt`` where present, else hashed (``hashed_lists``).
    """

    def has_labels(folder: Path) -> bool:
        return any(child.is_dir() and any(map(is_audio, child.iterdir())) for child in folder.iterdir())

    root = find_dir(extracted, has_labels, "a folder of recordings (<label>/<file>.wav)")
    clips = labelled_tree(root)
    for name, items in clips.items():
        problem = folder_problem(name, vocabulary.words, vocabulary.unknown)
        if problem is None and not items:
            problem = f"folder '{name}' holds no clips ({', '.join(AUDIO_SUFFIXES)})"
        if problem:
            raise UserError(f"{root}: {problem}")
    has_lists = any((root / name).is_file() for name in LIST_FILES.values())
    lists = {split: read_list(root, split) for split in LIST_FILES} if has_lists else None
    return Recording(clips, lists, background_of(root), f"the folder {root}")


SOURCES: dict[str, Source] = {
    "tiny-speech-commands": Source(
        url="https://dl.dropboxusercontent.com/s/4p46txh2kj16tb7/TinySpeechCommands.tar.gz",
        sha256="",
        read=read_tiny_speech_commands,
        split_rule="test = the archive's validation_list.txt (as in the notebook); "
        "validation = 10 % of the training speakers, chosen by hash",
    ),
    **{
        name: Source(
            url=f"http://download.tensorflow.org/data/speech_commands_{version}.tar.gz",
            sha256="",
            read=read_speech_commands,
            split_rule="the official validation_list.txt and testing_list.txt (speaker-disjoint by hash)",
        )
        for name, version in (("speech-commands", "v0.02"), ("speech-commands-v0.01", "v0.01"))
    },
    "fsdd": Source(
        url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
        sha256="",
        read=read_fsdd,
        split_rule="documented: recordings 0-4 test, 5-9 validation, 10-49 train; every speaker in every split",
    ),
    "folder": Source(
        url="",
        sha256="",
        read=read_folder,
        split_rule="the folder's validation_list.txt and testing_list.txt, else 10 % each by a stable hash of the "
        "speaker (<speaker>_nohash_<n> names) or of the file",
    ),
}


def obtain(name: str, location: str, sha256: str, out: Path, vocabulary: Vocabulary) -> list[str]:
    """Fetch source ``name`` from ``location`` (its own URL when empty), verify, extract, and write ``vocabulary``
    of it into ``out`` in the raw layout; return the labels.

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
        return write_raw(source.read(local, vocabulary), vocabulary, out)

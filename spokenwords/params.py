"""``params.yaml`` as typed, frozen dataclasses: one definition per setting, with its type, default and rule.

Each section of the file is one class (``TrainParams`` for ``train``, …), and stages receive those objects, never
raw mappings. ``params.yaml`` holds the values with comments for users; a test fails when it and these classes
disagree. Every key is checked on load, and rules between keys (``rules``) are checked after each key on its own,
each with a one-line message that names the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from spokenwords.cli import UserError

PARAMS_FILE = Path("params.yaml")

SOURCES = ("synthetic", "tiny-speech-commands", "speech-commands", "speech-commands-v0.01", "fsdd", "folder")
# The default vocabulary (data.words), in label order: index = the digit. FSDD's words too.
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Speech Commands' own names of the two optional open-set classes (data.unknown, data.silence), which tools score by.
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
# A label is a folder name and a word a user reads: lowercase, no path separator, and no leading underscore, which
# marks the two classes above.
WORD_PATTERN = re.compile(r"^[a-z0-9][a-z0-9 '_-]*$")
MODELS = ("m5", "dscnn", "bcresnet", "embedding", "ensemble")
SPLIT_RULES = ("official", "speaker", "loso")
NORMALISATIONS = ("none", "clip", "band")
SWITCH = ("auto", "on", "off")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
SUB_BANDS = 5  # BC-ResNet's sub-spectral norm groups (spokenwords.models.architectures.SubSpectralNorm)


@dataclass(frozen=True)
class Rule:
    """What one setting's value must satisfy, beyond its type."""

    text: str = ""
    check: Callable[[Any], bool] = lambda value: True
    choices: tuple[str, ...] = ()


def setting(default: Any, text: str = "", check: Callable[[Any], bool] = lambda value: True) -> Any:
    """A dataclass field with its rule; a mutable default (the transfer sets) is copied for every instance."""
    rule = {"rule": Rule(text, check)}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=rule)
    return field(default=default, metadata=rule)


def positive(default: float) -> Any:
    return setting(default, "> 0", lambda value: value > 0)


def at_least(low: int, default: float) -> Any:
    return setting(default, f">= {low}", lambda value: value >= low)


def share(default: float) -> Any:
    """A probability: from 0 to 1, both included."""
    return setting(default, ">= 0 and <= 1", lambda value: 0 <= value <= 1)


def fraction(default: float) -> Any:
    """A share that must leave something: from 0 up to, not including, 1."""
    return setting(default, ">= 0 and < 1", lambda value: 0 <= value < 1)


def finite(default: float) -> Any:
    return setting(default, "(finite)", math.isfinite)


def choice(default: str, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"rule": Rule(choices=choices)})


def device(default: str = "auto") -> Any:
    return setting(default, "auto, cpu, mps, cuda or cuda:N", lambda value: bool(DEVICE_PATTERN.match(value)))


def rate_in_hz(default: int) -> Any:
    return setting(
        default, "from 1000 to 48000, a multiple of 25", lambda value: 1000 <= value <= 48000 and value % 25 == 0
    )


def is_sha256(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{64}", value))


def label_problem(name: str) -> str | None:
    """Why ``name`` cannot be a label (a folder name and a word people read), or None."""
    if name != name.lower():
        return f"'{name}' is mixed-case: labels are lowercase, so write '{name.lower()}'"
    if name.startswith("_"):
        return f"'{name}' starts with '_', which marks {UNKNOWN} and {SILENCE}: set data.unknown or data.silence"
    if not WORD_PATTERN.match(name) or name != name.strip():
        return f"'{name}' is not a label: use letters, digits, spaces, hyphens, apostrophes or underscores"
    return None


def word_problems(words: list) -> Iterator[str]:
    """What is wrong with a ``data.words`` list, each message starting with the key."""
    if not words:
        yield "words is empty: name at least one word, or null to take the labels from a folder source's folder names"
    seen = set()
    for word in words:
        problem = label_problem(word) if isinstance(word, str) else f"{word!r} is not text: write it in quotes"
        if problem:
            yield f"words: {problem}"
        elif word in seen:
            yield f"words names '{word}' twice"
        seen.add(word)


class Section:
    """A mapping of settings in ``params.yaml``: a top-level section (``SECTION``) or one nested in another."""

    SECTION: ClassVar[str] = ""

    def rules(self) -> Iterator[str]:
        """The messages of rules between this section's keys that its values break; none by default."""
        return iter(())

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DataParams(Section):
    SECTION: ClassVar[str] = "data"

    source: str = choice("synthetic", SOURCES)
    # None (null in params.yaml): the labels are a folder source's folder names, sorted
    words: list[str] | None = setting(list(DIGITS), "or null")  # noqa: RUF009 (a default_factory, copied each time)
    unknown: bool = setting(False)
    silence: bool = setting(False)
    url: str = setting("")
    sha256: str = setting("", "empty or 64 hex digits", lambda value: not value or is_sha256(value))
    synthetic_clips: int = at_least(0, 5000)
    piper_clips: int = at_least(0, 3000)
    kokoro_clips: int = at_least(0, 500)
    synthetic_train_clips: int = at_least(0, 0)
    piper_train_clips: int = at_least(0, 0)
    kokoro_train_clips: int = at_least(0, 0)
    seed: int = at_least(0, 0)
    split: str = choice("official", SPLIT_RULES)
    fold: int = at_least(0, 0)

    def rules(self) -> Iterator[str]:
        if self.synthetic_clips + self.piper_clips + self.kokoro_clips < 20:
            yield "the synthetic set needs synthetic_clips + piper_clips + kokoro_clips >= 20"
        if self.source == "folder" and not self.url:
            yield "source 'folder' needs url: the folder (or archive) of your recordings, <label>/<file>.wav"
        if self.words is None:
            if self.source != "folder":
                yield f"words: null takes the labels from a folder of recordings; source '{self.source}' needs words"
            return
        yield from word_problems(self.words)
        if len(self.words) + self.unknown + self.silence < 2:
            yield "a classifier needs at least two classes: add a word, or set unknown or silence to true"


@dataclass(frozen=True)
class PreprocessParams(Section):
    SECTION: ClassVar[str] = "preprocess"

    sample_rate: int = rate_in_hz(16000)
    clip_seconds: float = setting(1.0, "> 0 and <= 60", lambda value: 0 < value <= 60)


def spectrogram_rules(config: DscnnParams | BcresnetParams) -> Iterator[str]:
    """Rules of a spectrogram front end: the window fits the FFT, and the mel bands fit its frequency bins."""
    if config.win_length > config.n_fft:
        yield "win_length must be <= n_fft"
    if config.n_mels > config.n_fft // 2 + 1:
        yield "n_mels must be <= n_fft / 2 + 1"


@dataclass(frozen=True)
class M5Params(Section):
    """The notebook's raw-waveform CNN: these defaults are its 25,290-parameter model."""

    n_channel: int = positive(32)
    stride: int = positive(16)


@dataclass(frozen=True)
class DscnnParams(Section):
    channels: int = at_least(1, 64)
    blocks: int = at_least(1, 4)
    n_mfcc: int = at_least(2, 10)
    dropout: float = fraction(0.1)
    n_fft: int = at_least(16, 320)
    win_length: int = at_least(16, 320)
    hop_length: int = positive(160)
    n_mels: int = at_least(8, 40)
    log_offset: float = positive(1e-6)
    floor_db: float = at_least(0, 60.0)
    normalise: str = choice("clip", NORMALISATIONS)

    def rules(self) -> Iterator[str]:
        yield from spectrogram_rules(self)
        if self.n_mfcc > self.n_mels:
            yield "n_mfcc must be <= n_mels (the MFCCs are taken of the mels)"


def bcresnet_bands(n_mels: int) -> list[int]:
    """The mel-band counts BC-ResNet's blocks see: its head and stages 2 and 3 each halve them (rounding up)."""
    sizes = [math.ceil(n_mels / 2)]
    for _ in range(2):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def bcresnet_fits(n_mels: int) -> bool:
    """Whether BC-ResNet can run on ``n_mels`` bands: its sub-spectral norm splits every block's bands into
    ``SUB_BANDS`` equal groups, and its last frequency convolution (5 taps, unpadded) needs at least 5 of them.
    """
    bands = bcresnet_bands(n_mels)
    return all(size % SUB_BANDS == 0 for size in bands) and bands[-1] >= 5


@dataclass(frozen=True)
class BcresnetParams(Section):
    width: float = setting(1.5, ">= 1 and <= 8", lambda value: 1 <= value <= 8)
    dropout: float = fraction(0.1)
    n_fft: int = at_least(16, 256)
    win_length: int = at_least(16, 240)
    hop_length: int = positive(80)
    n_mels: int = at_least(8, 40)
    log_offset: float = positive(1e-6)
    floor_db: float = at_least(0, 60.0)
    normalise: str = choice("clip", NORMALISATIONS)

    def rules(self) -> Iterator[str]:
        yield from spectrogram_rules(self)
        if not bcresnet_fits(self.n_mels):
            yield (
                f"n_mels must halve three times into band counts divisible by {SUB_BANDS} (BC-ResNet's sub-spectral "
                "norm), as 40 -> 20, 10, 5 does: for example 40 or 80"
            )


@dataclass(frozen=True)
class EmbeddingParams(Section):
    hidden: int = at_least(1, 256)
    dropout: float = fraction(0.5)


@dataclass(frozen=True)
class RecipeParams(Section):
    """An ensemble member's own training recipe, which replaces these keys of ``train``; the rest is shared."""

    epochs: int = at_least(1, 40)
    batch_size: int = at_least(1, 128)
    lr: float = positive(0.001)
    warmup_epochs: float = at_least(0, 4.0)
    augment: bool = setting(False)


@dataclass(frozen=True)
class EnsembleParams(Section):
    """The embedding head and DS-CNN, their class probabilities averaged: the embedding generalises to new voices,
    DS-CNN to the recorded source's own. The members' settings live here, so the section is the ensemble's whole
    model (``train`` depends on it alone); DS-CNN hears the clips resampled to ``dscnn_sample_rate``.
    """

    MEMBERS: ClassVar[tuple[str, ...]] = ("embedding", "dscnn")  # the order train trains them and a checkpoint keeps

    embedding: EmbeddingParams = field(default_factory=EmbeddingParams)
    embedding_train: RecipeParams = field(default_factory=RecipeParams)
    dscnn: DscnnParams = field(default_factory=DscnnParams)
    dscnn_sample_rate: int = rate_in_hz(8000)
    dscnn_train: RecipeParams = field(default_factory=lambda: RecipeParams(20, 64, 0.005, 2.0, True))

    def sample_rate_of(self, member: str, clips_rate: int) -> int:
        """The rate a member hears: DS-CNN its own, the embedding head the clips' (16 kHz)."""
        return self.dscnn_sample_rate if member == "dscnn" else clips_rate

    def rules(self) -> Iterator[str]:
        if self.embedding_train.augment:
            yield "embedding_train.augment must be false: the embedding head's clips are augmented by the embed stage"


@dataclass(frozen=True)
class ModelParams(Section):
    SECTION: ClassVar[str] = "model"

    name: str = choice("embedding", MODELS)
    m5: M5Params = field(default_factory=M5Params)
    dscnn: DscnnParams = field(default_factory=DscnnParams)
    bcresnet: BcresnetParams = field(default_factory=BcresnetParams)
    embedding: EmbeddingParams = field(default_factory=EmbeddingParams)
    ensemble: EnsembleParams = field(default_factory=EnsembleParams)

    @property
    def chosen(self) -> Section:
        """The settings of the model ``name``: the only ones a run reads."""
        return getattr(self, self.name)


def snr_rules(config: EmbedParams | AugmentParams) -> Iterator[str]:
    if config.snr_db_min > config.snr_db_max:
        yield "snr_db_min must be <= snr_db_max"


@dataclass(frozen=True)
class EmbedParams(Section):
    SECTION: ClassVar[str] = "embed"

    copies: int = at_least(0, 3)
    seed: int = at_least(0, 0)
    speed: float = fraction(0.15)
    reverb_prob: float = share(0.5)
    rt60_max: float = setting(0.7, "> 0.1 and <= 2", lambda value: 0.1 < value <= 2)
    noise_prob: float = share(0.7)
    snr_db_min: float = finite(5.0)
    snr_db_max: float = finite(30.0)
    band_limit_prob: float = share(0.0)
    # from 1 kHz to 7.5 kHz: a band limit needs a narrow rate between 0 and the clips' 16 kHz
    band_limit_hz_min: float = setting(3500.0, ">= 1000 and <= 7500", lambda value: 1000 <= value <= 7500)
    band_limit_hz_max: float = setting(7000.0, ">= 1000 and <= 7500", lambda value: 1000 <= value <= 7500)

    def rules(self) -> Iterator[str]:
        yield from snr_rules(self)
        if self.band_limit_hz_min > self.band_limit_hz_max:
            yield "band_limit_hz_min must be <= band_limit_hz_max"


@dataclass(frozen=True)
class TrainParams(Section):
    SECTION: ClassVar[str] = "train"

    device: str = device()
    amp: str = choice("auto", SWITCH)
    compile: str = choice("auto", SWITCH)
    seed: int = at_least(0, 0)
    epochs: int = at_least(1, 40)
    batch_size: int = at_least(1, 128)
    lr: float = positive(0.001)
    weight_decay: float = at_least(0, 1e-4)
    checkpoint: str = choice("last", ("last", "best"))
    # 0: off. Else stop once validation accuracy has not improved for this many epochs (each ensemble member alone)
    patience: int = at_least(0, 0)
    schedule: str = choice("onecycle", ("none", "onecycle", "cosine"))
    warmup_epochs: float = at_least(0, 4.0)
    label_smoothing: float = fraction(0.1)
    augment: bool = setting(False)
    processes: int = at_least(1, 1)
    resume: bool = setting(True)

    def rules(self) -> Iterator[str]:
        if self.warmup_epochs >= self.epochs:
            yield "warmup_epochs must be < epochs"
        if self.schedule == "onecycle" and self.warmup_epochs <= 0:
            yield "schedule 'onecycle' needs warmup_epochs > 0 (its rising phase)"


@dataclass(frozen=True)
class AugmentParams(Section):
    SECTION: ClassVar[str] = "augment"

    speed: float = fraction(0.0)
    shift_ms: float = at_least(0, 100.0)
    place: bool = setting(True)
    gain_db: float = at_least(0, 6.0)
    noise_prob: float = share(0.5)
    snr_db_min: float = finite(10.0)
    snr_db_max: float = finite(40.0)
    eq_db: float = at_least(0, 6.0)
    freq_masks: int = at_least(0, 2)
    freq_mask_share: float = fraction(0.125)
    time_masks: int = at_least(0, 2)
    time_mask_share: float = fraction(0.1)

    def rules(self) -> Iterator[str]:
        return snr_rules(self)


@dataclass(frozen=True)
class TransferParams(Section):
    SECTION: ClassVar[str] = "transfer"

    sets: dict[str, str] = setting(  # noqa: RUF009 (a field with a default_factory: each instance gets a copy)
        {"fsdd": "../shared/datasets/free-spoken-digit-dataset-1.0.10.tar.gz"},
        "of recorded source names (" + ", ".join(SOURCES[1:]) + ") to a location string, or null (off)",
        lambda value: all(key in SOURCES[1:] and isinstance(where, str | None) for key, where in value.items()),
    )
    device: str = device()
    batch_size: int = at_least(1, 64)


@dataclass(frozen=True)
class EvaluateParams(Section):
    SECTION: ClassVar[str] = "evaluate"

    device: str = device()
    batch_size: int = at_least(1, 32)
    test_time_shifts: int = at_least(0, 0)
    shift_step_ms: float = positive(25.0)


@dataclass(frozen=True)
class ExportParams(Section):
    SECTION: ClassVar[str] = "export"

    calibration_clips: int = at_least(1, 200)
    max_int8_drop: float = at_least(0, 1.0)
    latency_clips: int = at_least(1, 100)
    threads: int = at_least(1, 1)


def member_trainings(train: TrainParams, ensemble: EnsembleParams) -> list[TrainParams]:
    """The ensemble members' train settings, in member order: ``train`` with each member's recipe in place."""
    trainings = []
    for name in (f"{member}_train" for member in ensemble.MEMBERS):
        training = dataclasses.replace(train, **getattr(ensemble, name).as_dict())
        for message in training.rules():
            raise UserError(f"{PARAMS_FILE}: model.ensemble.{name}: {message}")
        trainings.append(training)
    return trainings


SECTIONS: dict[str, type[Section]] = {
    kind.SECTION: kind
    for kind in (
        DataParams,
        PreprocessParams,
        ModelParams,
        EmbedParams,
        TrainParams,
        AugmentParams,
        TransferParams,
        EvaluateParams,
        ExportParams,
    )
}
S = TypeVar("S", bound=Section)
KIND_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "a mapping",
    list: "a list",
}


def describe(kind: type, rule: Rule) -> str:
    if rule.choices:
        return "one of " + ", ".join(rule.choices)
    return f"{KIND_NAMES[kind]} {rule.text}".strip()


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def value_kind(hint: Any) -> tuple[type, bool]:
    """The type a setting holds, and whether it may be null (a ``X | None`` hint)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]
        return typing.get_origin(inner) or inner, True
    return typing.get_origin(hint) or hint, False


def coerce(where: str, kind: type, rule: Rule, value: Any, nullable: bool = False) -> Any:
    """Return ``value`` as ``kind``, or raise a UserError that says what was expected."""
    expected = describe(kind, rule)
    if value is None and nullable:
        return None
    if value is None and kind is str:
        value = ""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise UserError(f"{where} must be {expected}, got {value!r}")
    if rule.choices and value not in rule.choices:
        raise UserError(f"{where} must be {expected}, got {value!r}{did_you_mean(value, list(rule.choices))}")
    if not rule.check(value):
        raise UserError(f"{where} must be {expected}, got {value!r}")
    return value


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the whole params file as a mapping, with a clear error when it is missing or not YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def build(where: str, kind: type[S], given: Any, path: Path) -> S:
    """``kind`` from one mapping of params (recursing into nested sections), defaults filling missing keys."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise UserError(f"{path}: '{where}' must be a mapping of keys, got {given!r}")
    known = [item.name for item in dataclasses.fields(kind)]
    for key in given:
        if key not in known:
            raise UserError(
                f"{path}: unknown key '{where}.{key}'{did_you_mean(str(key), known)}; known keys: {', '.join(known)}"
            )
    hints = typing.get_type_hints(kind)
    values = {}
    for item in dataclasses.fields(kind):
        if item.name not in given:
            continue
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            values[item.name] = build(f"{where}.{item.name}", hint, given[item.name], path)
        else:
            where_key = f"{path}: {where}.{item.name}"
            value_type, nullable = value_kind(hint)
            values[item.name] = coerce(where_key, value_type, item.metadata["rule"], given[item.name], nullable)
    config = kind(**values)
    for message in config.rules():
        raise UserError(f"{path}: {where}: {message}")
    return config


def validate(data: dict[str, Any], kind: type[S], path: Path = PARAMS_FILE) -> S:
    """One section of parsed params as ``kind``, with defaults for missing keys."""
    return build(kind.SECTION, kind, data.get(kind.SECTION), path)


def load(kind: type[S], path: Path = PARAMS_FILE) -> S:
    """One validated section of ``params.yaml``."""
    data = read_params(path)
    for name in data:
        if name not in SECTIONS:
            raise UserError(f"{path}: unknown section '{name}'{did_you_mean(str(name), list(SECTIONS))}")
    return validate(data, kind, path)

"""Load and validate ``params.yaml``: every key checked on load, with messages that name the fix."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.cli import UserError

PARAMS_FILE = Path("params.yaml")

SOURCES = ("synthetic", "tiny-speech-commands", "speech-commands", "fsdd")
MODELS = ("m5", "dscnn", "bcresnet", "embedding")
SPLITS = ("official", "speaker", "loso")
NORMALISATIONS = ("none", "clip", "band")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Spec:
    """One param: its type, default, and the rule its value must follow."""

    kind: type
    default: Any
    rule: str = ""
    check: Callable[[Any], bool] = lambda value: True
    choices: tuple[str, ...] = ()


def is_sha256(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{64}", value))


def positive(kind: type, default: Any) -> Spec:
    return Spec(kind, default, "> 0", lambda value: value > 0)


def at_least(kind: type, default: Any, low: int) -> Spec:
    return Spec(kind, default, f">= {low}", lambda value: value >= low)


def choice(default: str, choices: tuple[str, ...]) -> Spec:
    return Spec(str, default, choices=choices)


def device(default: str) -> Spec:
    return Spec(str, default, "auto, cpu, mps, cuda or cuda:N", lambda value: bool(DEVICE_PATTERN.match(value)))


def fraction(default: float) -> Spec:
    return Spec(float, default, ">= 0 and < 1", lambda value: 0 <= value < 1)


def features(n_fft: int, win_length: int, hop_length: int, n_mels: int) -> dict[str, Spec]:
    """The front end of a spectrogram model: STFT and mel settings, log offset and per-clip normalisation."""
    return {
        "n_fft": at_least(int, n_fft, 16),
        "win_length": at_least(int, win_length, 16),
        "hop_length": positive(int, hop_length),
        "n_mels": at_least(int, n_mels, 8),
        "log_offset": positive(float, 1e-6),
        "floor_db": at_least(float, 60.0, 0),
        "normalise": choice("clip", NORMALISATIONS),
    }


# A value that is itself a mapping of Specs is a nested section, such as one model's own settings.
Schema = dict[str, "Spec | Schema"]

SCHEMA: dict[str, Schema] = {
    "data": {
        "source": choice("synthetic", SOURCES),
        "url": Spec(str, ""),
        "sha256": Spec(str, "", "empty or 64 hex digits", lambda value: not value or is_sha256(value)),
        "synthetic_clips": at_least(int, 5000, 0),
        # Piper and Kokoro clips in the synthetic set
        "piper_clips": at_least(int, 3000, 0),
        "kokoro_clips": at_least(int, 500, 0),
        # espeak-ng, Piper and Kokoro clips added to a recorded source's training split (0 = none; ignored by
        # 'synthetic')
        "synthetic_train_clips": at_least(int, 0, 0),
        "piper_train_clips": at_least(int, 0, 0),
        "kokoro_train_clips": at_least(int, 0, 0),
        "seed": at_least(int, 0, 0),
        # official: the source's documented lists | speaker: speakers hashed into the three splits |
        # loso: speaker number `fold` (sorted) is the test split
        "split": choice("official", SPLITS),
        "fold": at_least(int, 0, 0),
    },
    "preprocess": {
        "sample_rate": Spec(
            int, 16000, "from 1000 to 48000, a multiple of 25", lambda value: 1000 <= value <= 48000 and value % 25 == 0
        ),
        "clip_seconds": Spec(float, 1.0, "> 0 and <= 60", lambda value: 0 < value <= 60),
    },
    "model": {
        "name": choice("embedding", MODELS),
        "m5": {
            "n_channel": positive(int, 32),
            "stride": positive(int, 16),
        },
        "dscnn": {
            "channels": at_least(int, 64, 1),
            "blocks": at_least(int, 4, 1),
            "n_mfcc": at_least(int, 10, 2),
            "dropout": fraction(0.1),
            **features(n_fft=320, win_length=320, hop_length=160, n_mels=40),
        },
        "bcresnet": {
            "width": Spec(float, 1.5, ">= 1 and <= 8", lambda value: 1 <= value <= 8),
            "dropout": fraction(0.1),
            **features(n_fft=256, win_length=240, hop_length=80, n_mels=40),
        },
        "embedding": {
            "hidden": at_least(int, 256, 1),
            "dropout": fraction(0.5),
        },
    },
    "embed": {
        # augmented copies of each training clip (the clean clip is kept too); 0 = none
        "copies": at_least(int, 3, 0),
        "seed": at_least(int, 0, 0),
        # speed warp up to this share either way (pitch and formants move with it); 0 = off
        "speed": fraction(0.15),
        # room reverberation on this share of the copies, with RT60 from 0.1 s to rt60_max
        "reverb_prob": Spec(float, 0.5, ">= 0 and <= 1", lambda value: 0 <= value <= 1),
        "rt60_max": Spec(float, 0.7, "> 0.1 and <= 2", lambda value: 0.1 < value <= 2),
        # white or brown noise on this share of the copies, at an SNR in [snr_db_min, snr_db_max]
        "noise_prob": Spec(float, 0.7, ">= 0 and <= 1", lambda value: 0 <= value <= 1),
        "snr_db_min": Spec(float, 5.0, "(finite)", math.isfinite),
        "snr_db_max": Spec(float, 30.0, "(finite)", math.isfinite),
    },
    "train": {
        "device": device("auto"),
        "amp": choice("auto", ("auto", "on", "off")),
        # torch.compile the model: auto = on CUDA for a run long enough to repay the compilation, off elsewhere
        "compile": choice("auto", ("auto", "on", "off")),
        "seed": at_least(int, 0, 0),
        "epochs": at_least(int, 40, 1),
        "batch_size": at_least(int, 128, 1),
        "lr": positive(float, 0.001),
        "weight_decay": at_least(float, 1e-4, 0),
        "checkpoint": choice("last", ("last", "best")),
        # none (the notebook's constant lr) | onecycle | cosine (linear warm-up, then cosine decay to zero)
        "schedule": choice("onecycle", ("none", "onecycle", "cosine")),
        "warmup_epochs": at_least(float, 4.0, 0),
        "label_smoothing": fraction(0.1),
        # true: apply the `augment` section to training batches
        "augment": Spec(bool, False),
        # data-parallel processes on this machine (torchrun and DistributedDataParallel): one per GPU or CPU core
        "processes": at_least(int, 1, 1),
        # true: continue from the state a stopped run saved (checkpoints/train_state.pt) when it matches
        "resume": Spec(bool, True),
    },
    "augment": {
        "speed": fraction(0.0),
        "shift_ms": at_least(float, 100.0, 0),
        "place": Spec(bool, True),
        "gain_db": at_least(float, 6.0, 0),
        "noise_prob": Spec(float, 0.5, ">= 0 and <= 1", lambda value: 0 <= value <= 1),
        "snr_db_min": Spec(float, 10.0, "(finite)", math.isfinite),
        "snr_db_max": Spec(float, 40.0, "(finite)", math.isfinite),
        "eq_db": at_least(float, 6.0, 0),
        "freq_masks": at_least(int, 2, 0),
        "freq_mask_share": fraction(0.125),
        "time_masks": at_least(int, 2, 0),
        "time_mask_share": fraction(0.1),
    },
    "transfer": {
        # other corpora, all their clips scored: source name -> archive, URL or folder ("" = the source's own URL)
        "sets": Spec(
            dict,
            {"fsdd": "../shared/datasets/free-spoken-digit-dataset-1.0.10.tar.gz"},
            "of recorded source names (" + ", ".join(SOURCES[1:]) + ") to a location string",
            lambda value: all(key in SOURCES[1:] and isinstance(where, str | None) for key, where in value.items()),
        ),
        "device": device("auto"),
        "batch_size": at_least(int, 64, 1),
    },
    "evaluate": {
        "device": device("auto"),
        "batch_size": at_least(int, 32, 1),
        # test-time augmentation: average over 2 * test_time_shifts + 1 copies of each clip, moved by multiples of
        # shift_step_ms (0 = one plain pass, the notebook's evaluation)
        "test_time_shifts": at_least(int, 0, 0),
        "shift_step_ms": positive(float, 25.0),
    },
    "export": {
        # training clips (spread over the split) whose activation ranges calibrate the int8 model
        "calibration_clips": at_least(int, 200, 1),
        # fail when int8 loses more than this many points of test accuracy against float32
        "max_int8_drop": at_least(float, 1.0, 0),
        # test clips timed one by one for the median latency; threads for torch and onnxruntime while timing
        "latency_clips": at_least(int, 100, 1),
        "threads": at_least(int, 1, 1),
    },
}


def describe(spec: Spec) -> str:
    if spec.choices:
        return "one of " + ", ".join(spec.choices)
    name = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}[spec.kind]
    return f"{name} {spec.rule}".strip()


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def coerce(where: str, spec: Spec, value: Any) -> Any:
    """Return ``value`` as the spec's type, or raise a UserError that says what was expected."""
    expected = describe(spec)
    if value is None and spec.kind is str:
        value = ""
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.kind) or (isinstance(value, bool) and spec.kind is not bool):
        raise UserError(f"{where} must be {expected}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise UserError(f"{where} must be {expected}, got {value!r}{did_you_mean(value, list(spec.choices))}")
    if not spec.check(value):
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


SUB_BANDS = 5  # BC-ResNet's sub-spectral norm groups (stages.models.SubSpectralNorm)

# Rules between keys of one (nested) section, checked after each key is valid on its own.
SNR_RANGE = (lambda config: config["snr_db_min"] <= config["snr_db_max"], "snr_db_min must be <= snr_db_max")
CONSTRAINTS: dict[str, list[tuple[Callable[[dict[str, Any]], bool], str]]] = {
    "train": [
        (
            lambda config: config["warmup_epochs"] < config["epochs"],
            "warmup_epochs must be < epochs",
        ),
        (
            lambda config: config["schedule"] != "onecycle" or config["warmup_epochs"] > 0,
            "schedule 'onecycle' needs warmup_epochs > 0 (its rising phase)",
        ),
    ],
    "data": [
        (
            lambda config: config["synthetic_clips"] + config["piper_clips"] + config["kokoro_clips"] >= 20,
            "the synthetic set needs synthetic_clips + piper_clips + kokoro_clips >= 20",
        )
    ],
    "augment": [SNR_RANGE],
    "embed": [SNR_RANGE],
    **{
        f"model.{name}": [
            (lambda config: config["win_length"] <= config["n_fft"], "win_length must be <= n_fft"),
            (lambda config: config["n_mels"] <= config["n_fft"] // 2 + 1, "n_mels must be <= n_fft / 2 + 1"),
        ]
        for name in ("dscnn", "bcresnet")
    },
}
CONSTRAINTS["model.dscnn"].append(
    (lambda config: config["n_mfcc"] <= config["n_mels"], "n_mfcc must be <= n_mels (the MFCCs are taken of the mels)")
)
CONSTRAINTS["model.bcresnet"].append(
    (
        lambda config: bcresnet_fits(config["n_mels"]),
        f"n_mels must halve three times into band counts divisible by {SUB_BANDS} (BC-ResNet's sub-spectral norm), "
        "as 40 -> 20, 10, 5 does: for example 40 or 80",
    )
)


def validate_mapping(where: str, schema: Schema, given: Any, path: Path) -> dict[str, Any]:
    """Validate one mapping of params against ``schema`` (recursing into nested sections), filling in defaults."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise UserError(f"{path}: '{where}' must be a mapping of keys, got {given!r}")
    for key in given:
        if key not in schema:
            raise UserError(
                f"{path}: unknown key '{where}.{key}'{did_you_mean(str(key), list(schema))}; "
                f"known keys: {', '.join(schema)}"
            )
    config = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            config[key] = validate_mapping(f"{where}.{key}", spec, given.get(key), path)
        else:
            config[key] = coerce(f"{path}: {where}.{key}", spec, given[key]) if key in given else spec.default
    for rule, message in CONSTRAINTS.get(where, []):
        if not rule(config):
            raise UserError(f"{path}: {where}: {message}")
    return config


def validate(data: dict[str, Any], section: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Validate one section of parsed params, filling in defaults for missing keys."""
    return validate_mapping(section, SCHEMA[section], data.get(section), path)


def load(section: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return one validated section of ``params.yaml``."""
    data = read_params(path)
    for name in data:
        if name not in SCHEMA:
            raise UserError(f"{path}: unknown section '{name}'{did_you_mean(str(name), list(SCHEMA))}")
    return validate(data, section, path)

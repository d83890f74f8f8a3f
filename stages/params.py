"""Load and validate ``params.yaml``: every key checked on load, with messages that name the fix."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.cli import UserError

PARAMS_FILE = Path("params.yaml")

SOURCES = ("synthetic", "tiny-speech-commands", "speech-commands", "fsdd")
MODELS = ("m5",)
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


SCHEMA: dict[str, dict[str, Spec]] = {
    "data": {
        "source": choice("synthetic", SOURCES),
        "url": Spec(str, ""),
        "sha256": Spec(str, "", "empty or 64 hex digits", lambda value: not value or is_sha256(value)),
        "synthetic_clips": at_least(int, 5000, 20),
        "seed": at_least(int, 0, 0),
    },
    "preprocess": {
        "sample_rate": positive(int, 8000),
        "clip_seconds": Spec(float, 1.0, "> 0 and <= 60", lambda value: 0 < value <= 60),
    },
    "model": {
        "name": choice("m5", MODELS),
        "n_channel": positive(int, 32),
        "stride": positive(int, 16),
    },
    "train": {
        "device": device("auto"),
        "amp": choice("auto", ("auto", "on", "off")),
        "seed": at_least(int, 0, 0),
        "epochs": at_least(int, 10, 1),
        "batch_size": at_least(int, 256, 1),
        "lr": positive(float, 0.01),
        "weight_decay": at_least(float, 1e-4, 0),
        "checkpoint": choice("last", ("last", "best")),
    },
    "evaluate": {
        "device": device("auto"),
        "batch_size": at_least(int, 32, 1),
    },
}


def describe(spec: Spec) -> str:
    if spec.choices:
        return "one of " + ", ".join(spec.choices)
    name = {int: "an integer", float: "a number", str: "a string"}[spec.kind]
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
    if not isinstance(value, spec.kind) or isinstance(value, bool):
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


def validate(data: dict[str, Any], section: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Validate one section of parsed params, filling in defaults for missing keys."""
    schema = SCHEMA[section]
    given = data.get(section) or {}
    if not isinstance(given, dict):
        raise UserError(f"{path}: '{section}' must be a mapping of keys, got {given!r}")
    for key in given:
        if key not in schema:
            raise UserError(
                f"{path}: unknown key '{section}.{key}'{did_you_mean(str(key), list(schema))}; "
                f"known keys: {', '.join(schema)}"
            )
    return {
        key: coerce(f"{path}: {section}.{key}", spec, given[key]) if key in given else spec.default
        for key, spec in schema.items()
    }


def load(section: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return one validated section of ``params.yaml``."""
    data = read_params(path)
    for name in data:
        if name not in SCHEMA:
            raise UserError(f"{path}: unknown section '{name}'{did_you_mean(str(name), list(SCHEMA))}")
    return validate(data, section, path)

"""params.yaml validation: every bad value is refused by the real stage with a message naming the fix."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from spokenwords import params
from spokenwords.cli import UserError
from spokenwords.data import sources
from spokenwords.models import architectures
from tests.helpers import REPO, stage, write_params


def test_project_params_are_valid_and_are_the_defaults():
    """params.yaml spells out every setting of params.py, each at its default: the file and the classes agree."""
    data = params.read_params(REPO / "params.yaml")
    assert list(data) == list(params.SECTIONS)
    for name, kind in params.SECTIONS.items():
        assert params.validate(data, kind) == kind(), name
        assert keys(data[name]) == keys(kind().as_dict()), f"params.yaml's {name} section lacks or adds keys"


def keys(section: dict, prefix: str = "") -> set[str]:
    """Every key of a nested mapping, dotted."""
    found = set()
    for key, value in section.items():
        found.add(prefix + key)
        if isinstance(value, dict) and key != "sets":
            found |= keys(value, f"{prefix}{key}.")
    return found


def test_the_choices_params_offers_are_the_ones_the_code_knows():
    """params.py names the models and sources without importing torch; these lists must not drift apart."""
    assert set(params.MODELS) == set(architectures.MODELS) == set(params.ModelParams().as_dict()) - {"name"}
    assert set(params.SOURCES) == {*sources.SOURCES, "synthetic"}  # the synthetic set is made, not downloaded


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("train", {"lr": -1}, "train.lr must be a number > 0, got -1"),
        ("evaluate", {"test_time_shifts": -1}, "evaluate.test_time_shifts must be an integer >= 0, got -1"),
        ("evaluate", {"shift_step_ms": 0}, "evaluate.shift_step_ms must be a number > 0"),
        ("train", {"epochs": 0}, "train.epochs must be an integer >= 1"),
        ("train", {"batch_size": "big"}, "train.batch_size must be an integer >= 1, got 'big'"),
        ("train", {"device": "gpu"}, "train.device must be a string auto, cpu, mps, cuda or cuda:N"),
        ("train", {"checkpoint": "bset"}, "did you mean 'best'"),
        ("train", {"lrr": 0.1}, "unknown key 'train.lrr' (did you mean 'lr'?)"),
        (
            "data",
            {"source": "fsd"},
            "data.source must be one of synthetic, tiny-speech-commands, speech-commands, speech-commands-v0.01, fsdd, "
            "folder",
        ),
        ("data", {"sha256": "abc"}, "data.sha256 must be a string empty or 64 hex digits"),
        ("data", {"synthetic_train_clips": -5}, "data.synthetic_train_clips must be an integer >= 0, got -5"),
        (
            "preprocess",
            {"sample_rate": 8001},
            "preprocess.sample_rate must be an integer from 1000 to 48000, a multiple of 25",
        ),
        ("model", {"name": "resnet"}, "model.name must be one of m5"),
        ("export", {"calibration_clips": 0}, "export.calibration_clips must be an integer >= 1, got 0"),
        ("export", {"max_int8_drop": -1}, "export.max_int8_drop must be a number >= 0, got -1"),
    ],
)
def test_bad_param_is_refused_by_the_stage(tmp_path, section, values, expected):
    write_params(tmp_path, **{section: values})
    stage_name = {"data": "download", "model": "train"}.get(section, section)
    result = stage(stage_name, tmp_path, check=False)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "params.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


def test_integer_is_accepted_for_a_float_and_defaults_fill_missing_keys(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 1}}))
    config = params.load(params.TrainParams, tmp_path / "params.yaml")
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.epochs == params.TrainParams.epochs == 40


def test_unknown_section_and_broken_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(UserError, match="unknown section 'trian' \\(did you mean 'train'\\?\\)"):
        params.load(params.TrainParams, path)
    path.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        params.load(params.TrainParams, path)
    with pytest.raises(UserError, match="cannot read"):
        params.load(params.TrainParams, tmp_path / "missing.yaml")


@pytest.mark.parametrize("n_mels", [8, 20, 39, 40, 48, 64, 80, 100, 120])
def test_bcresnet_n_mels_is_refused_exactly_when_the_model_cannot_run_on_it(n_mels):
    """The sub-spectral norm rule in params matches what BC-ResNet's layers can actually do."""
    config = {"model": {"name": "bcresnet", "bcresnet": {"n_mels": n_mels}}}
    try:
        section = params.validate(config, params.ModelParams)
    except UserError as error:
        assert "n_mels must halve three times" in str(error)
        with pytest.raises(RuntimeError):
            architectures.build_model(architectures.model_config(section_unchecked(n_mels), 16000), 10)(
                torch.zeros(1, 1, 16000)
            )
    else:
        logits = architectures.build_model(architectures.model_config(section, 16000), 10)(torch.zeros(1, 1, 16000))
        assert logits.shape == (1, 10)


def section_unchecked(n_mels: int) -> params.ModelParams:
    """The model section with BC-ResNet on ``n_mels`` bands, bypassing the rule under test."""
    section = params.validate({"model": {"name": "bcresnet"}}, params.ModelParams)
    return dataclasses.replace(section, bcresnet=dataclasses.replace(section.bcresnet, n_mels=n_mels))


def test_dscnn_takes_no_more_mfccs_than_mels():
    with pytest.raises(UserError, match="n_mfcc must be <= n_mels"):
        params.validate({"model": {"dscnn": {"n_mfcc": 41, "n_mels": 40}}}, params.ModelParams)

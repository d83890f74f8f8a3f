"""Training options: the notebook's run stays one command, schedules have the promised shape, bad values are refused."""

from __future__ import annotations

import pytest
import torch

from spokenwords import params
from spokenwords.cli import UserError
from spokenwords.params import TrainParams
from spokenwords.runtime import COMPILE_MIN_STEPS, use_compile
from spokenwords.training.loop import lr_schedule
from tests.helpers import REPO
from tools.notebook import NOTEBOOK


def test_the_notebook_run_is_the_notebooks_loop_on_m5():
    data = params.read_params(REPO / "params.yaml")
    for section, values in NOTEBOOK.items():
        data[section] = {**data.get(section, {}), **values}
    train = params.validate(data, params.TrainParams)
    assert (train.schedule, train.label_smoothing, train.augment) == ("none", 0.0, False)
    assert (train.lr, train.weight_decay, train.epochs, train.batch_size, train.patience) == (0.01, 1e-4, 10, 256, 0)
    assert params.validate(data, params.ModelParams).name == "m5"
    assert params.validate(data, params.PreprocessParams).sample_rate == 8000
    synthetic = params.validate(data, params.DataParams)
    assert (synthetic.piper_clips, synthetic.kokoro_clips) == (0, 0)


def test_one_cycle_works_with_one_batch_per_epoch_and_refuses_too_few_steps():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = lr_schedule(optimizer, TrainParams(schedule="onecycle", epochs=3, warmup_epochs=1, lr=0.01), 1)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    with pytest.raises(UserError, match="at least 3 optimizer steps"):
        lr_schedule(optimizer, TrainParams(schedule="onecycle", epochs=2, warmup_epochs=1, lr=0.01), 1)


def learning_rates(schedule: str, epochs: int = 10, warmup: float = 2, steps: int = 5) -> list[float]:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    config = TrainParams(schedule=schedule, epochs=epochs, warmup_epochs=warmup, lr=0.01)
    scheduler = lr_schedule(optimizer, config, steps)
    rates = []
    for _ in range(epochs * steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_no_schedule_keeps_the_rate_constant():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    assert lr_schedule(optimizer, TrainParams(schedule="none", epochs=3, warmup_epochs=0, lr=0.01), 4) is None


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedules_warm_up_to_the_peak_then_decay(schedule):
    rates = learning_rates(schedule)
    peak = rates.index(max(rates))
    assert 8 <= peak <= 10, "the peak comes after warmup_epochs (2 epochs of 5 steps)"
    assert max(rates) == pytest.approx(0.01, rel=1e-3)
    assert rates[0] < 0.01 / 4 and rates[-1] < 0.01 / 50
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :], strict=False))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"train": {"warmup_epochs": 0}}, "train: schedule 'onecycle' needs warmup_epochs > 0"),
        ({"train": {"warmup_epochs": 40}}, "train: warmup_epochs must be < epochs"),
        ({"train": {"label_smoothing": 1.0}}, "train.label_smoothing must be a number >= 0 and < 1, got 1.0"),
        ({"train": {"augment": "yes"}}, "train.augment must be true or false, got 'yes'"),
        ({"train": {"patience": -1}}, "train.patience must be an integer >= 0, got -1"),
        ({"train": {"patience": 2.5}}, "train.patience must be an integer >= 0, got 2.5"),
        ({"augment": {"snr_db_min": 30, "snr_db_max": 10}}, "augment: snr_db_min must be <= snr_db_max"),
        ({"model": {"bcresnet": {"win_length": 512}}}, "model.bcresnet: win_length must be <= n_fft"),
        ({"model": {"dscnn": {"normalise": "per-clip"}}}, "model.dscnn.normalise must be one of none, clip, band"),
        ({"model": {"bcresnet": {"widht": 2}}}, "unknown key 'model.bcresnet.widht' (did you mean 'width'?)"),
        ({"model": {"m5": 3}}, "'model.m5' must be a mapping of keys"),
        ({"data": {"split": "speakers"}}, "did you mean 'speaker'"),
    ],
)
def test_bad_training_options_are_refused_with_the_fix(values, expected):
    section = params.SECTIONS[next(iter(values))]
    with pytest.raises(UserError) as error:
        params.validate(values, section)
    assert expected in str(error.value)


def test_compile_auto_only_on_cuda_for_a_run_that_repays_it():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_compile("auto", cpu, COMPILE_MIN_STEPS * 10), "inductor was slower than eager on a CPU"
    assert not use_compile("auto", torch.device("mps"), COMPILE_MIN_STEPS)
    assert not use_compile("auto", cuda, COMPILE_MIN_STEPS - 1), "the notebook's 180 steps cannot repay a compile"
    assert use_compile("auto", cuda, COMPILE_MIN_STEPS)
    assert use_compile("on", cpu, 1) and not use_compile("off", cuda, 10**9)
    with pytest.raises(UserError, match=r"train\.compile must be one of auto, on, off, got 'yes'"):
        params.validate({"train": {"compile": "yes"}}, params.TrainParams)

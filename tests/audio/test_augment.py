"""Training-time augmentation: shapes and dtypes kept, repeatable under a seed, and never applied at evaluation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from spokenwords import params
from spokenwords.audio.augment import Augment, add_noise, content_length, equalise, mask_along, shift, speed
from spokenwords.inference.scoring import batched_logits, move, shifted_probabilities
from spokenwords.models.architectures import build_model, model_config
from spokenwords.models.checkpoint import load_checkpoint
from spokenwords.training.loop import forward_train
from tests.helpers import stage, write_params, write_processed

CONFIG = params.validate({"augment": {"speed": 0.1}}, params.AugmentParams)
CPU = torch.device("cpu")


def short_clips(batch: int = 8, samples: int = 8000, length: int = 3000) -> torch.Tensor:
    """Clips with speech-like content in the first ``length`` samples and digital silence after, as FSDD has."""
    waveform = torch.zeros(batch, 1, samples)
    waveform[..., :length] = torch.randn(batch, 1, length) * 0.1
    return waveform


def test_waveform_and_spectrogram_augmentations_keep_shape_and_dtype():
    augment = Augment(CONFIG, 8000, seed=0, device=CPU)
    waveform = short_clips()
    out = augment.waveforms(waveform)
    assert out.shape == waveform.shape and out.dtype == waveform.dtype and torch.isfinite(out).all()
    features = torch.randn(8, 1, 40, 101)
    for augmented in (augment.log_mel(features), augment.spectrograms(features)):
        assert augmented.shape == features.shape and augmented.dtype == features.dtype


def test_same_seed_repeats_and_another_seed_differs():
    waveform, features = short_clips(), torch.randn(8, 1, 40, 101)
    runs = [Augment(CONFIG, 8000, seed=seed, device=CPU) for seed in (0, 0, 1)]
    outputs = [
        (augment.waveforms(waveform), augment.log_mel(features), augment.spectrograms(features)) for augment in runs
    ]
    assert all(torch.equal(first, again) for first, again in zip(outputs[0], outputs[1], strict=True))
    assert not any(torch.equal(first, other) for first, other in zip(outputs[0], outputs[2], strict=True))


def test_equaliser_adds_one_smooth_bounded_curve_per_clip():
    log_mel = torch.randn(32, 1, 40, 101)
    equalised = equalise(log_mel, max_db=6.0, generator=torch.Generator().manual_seed(0))
    curve = equalised - log_mel
    assert torch.allclose(curve, curve[..., :1].expand_as(curve), atol=1e-6), "the same gain in every frame"
    nepers = curve[:, 0, :, 0]
    assert nepers.abs().max() <= 3 * 6.0 * math.log(10) / 10 + 1e-6, "three cosines of at most 6 dB each"
    assert nepers.abs().max() > 0.5 and len({round(value, 4) for value in nepers[:, 0].tolist()}) == 32
    cosines = torch.cos(math.pi * torch.arange(1, 4)[:, None] * torch.linspace(0, 1, 40)).T
    smooth = cosines @ torch.linalg.lstsq(cosines, nepers.T).solution
    assert torch.allclose(smooth.T, nepers, atol=1e-5), "each curve is a mix of the three slowest cosines"
    flat = Augment(dataclasses.replace(CONFIG, eq_db=0.0), 8000, seed=0, device=CPU)
    assert torch.equal(flat.log_mel(log_mel), log_mel)


def test_shift_moves_content_without_changing_it_and_placement_keeps_short_clips_whole():
    waveform = short_clips(length=3000)
    generator = torch.Generator().manual_seed(0)
    shifted = shift(waveform, max_shift=800, place=False, generator=generator)
    for clip, moved in zip(waveform, shifted, strict=True):
        offset = int(torch.nonzero(moved[0])[0]) - int(torch.nonzero(clip[0])[0])
        assert abs(offset) <= 800
    placed = shift(waveform, max_shift=0, place=True, generator=generator)
    assert torch.equal(content_length(placed) - content_length(waveform) >= 0, torch.ones(8, dtype=torch.bool))
    assert torch.allclose(placed.abs().sum(dim=-1), waveform.abs().sum(dim=-1)), "nothing may fall off the window"
    assert len({int(torch.nonzero(clip[0])[0]) for clip in placed}) > 1, "clips should land at different places"


def test_noise_is_added_at_the_requested_snr():
    waveform = torch.randn(64, 1, 8000)
    noisy = add_noise(waveform, probability=1.0, snr_db=(20.0, 20.0), generator=torch.Generator().manual_seed(0))
    snr = 10 * torch.log10(waveform.pow(2).mean() / (noisy - waveform).pow(2).mean())
    assert snr.item() == pytest.approx(20.0, abs=0.5)
    untouched = add_noise(waveform, probability=0.0, snr_db=(0.0, 0.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(untouched, waveform)


def test_masks_zero_bands_no_wider_than_asked():
    features = torch.ones(16, 1, 40, 101)
    masked = mask_along(features, -2, count=1, share=0.125, generator=torch.Generator().manual_seed(0))
    zeroed_bands = (masked[:, 0, :, 0] == 0).sum(dim=-1)
    assert zeroed_bands.max() <= 5 and zeroed_bands.sum() > 0
    assert torch.equal(masked, masked[..., :1].expand_as(masked)), "a frequency mask spans every frame"


def test_forward_train_without_augmentation_is_the_plain_forward():
    config = model_config(params.validate({"model": {"name": "dscnn"}}, params.ModelParams), sample_rate=8000)
    model = build_model(config, n_output=10).eval()
    waveform = torch.randn(3, 1, 8000)
    assert torch.equal(forward_train(model, waveform, None), model(waveform))


def test_augmented_training_repeats_and_evaluation_is_untouched(tmp_path):
    for run in ("a", "b"):
        write_processed(tmp_path / run)
        write_params(
            tmp_path / run,
            notebook=True,
            model={"name": "dscnn"},
            train={"epochs": 2, "batch_size": 16, "device": "cpu", "augment": True, "schedule": "cosine"},
        )
        stage("train", tmp_path / run)
    metrics = [json.loads((tmp_path / run / "metrics/train.json").read_text()) for run in ("a", "b")]
    assert metrics[0] == metrics[1]
    model, _ = load_checkpoint(tmp_path / "a/models/model.pt")
    waveforms = torch.randn(5, 1, 8000)
    logits = batched_logits(model, waveforms, 2)
    assert torch.equal(logits, batched_logits(model, waveforms, 2)), "evaluation must draw no random numbers"
    assert torch.allclose(logits, batched_logits(model, waveforms, 5), atol=1e-5), "nor depend on the batch"


def test_speed_perturbation_stretches_the_clip_in_time():
    waveform = short_clips(batch=32, length=4000)
    played = speed(waveform, max_change=0.2, generator=torch.Generator().manual_seed(0))
    assert played.shape == waveform.shape and played.dtype == waveform.dtype
    lengths = content_length(played).float() / 4000
    assert 0.8 <= lengths.min() < 0.95 and 1.05 < lengths.max() <= 1.26, "both faster and slower clips"


def test_test_time_shifts_average_the_probabilities_of_moved_copies():
    ramp = torch.arange(1.0, 11.0).view(1, 1, 10)
    assert move(ramp, torch.tensor([3])).flatten().tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    assert move(ramp, torch.tensor([-2])).flatten().tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 0, 0]
    assert torch.equal(move(ramp, torch.tensor([0])), ramp)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1000, 10))  # sees where the sound sits
    clips = short_clips(batch=5, samples=1000, length=400)
    plain = shifted_probabilities(model, clips, 2, shifts=0, step=200).mean(dim=0)
    assert torch.allclose(plain, batched_logits(model, clips, 2).softmax(dim=1), atol=1e-6)
    averaged = shifted_probabilities(model, clips, 3, shifts=1, step=200).mean(dim=0)
    copies = [
        batched_logits(model, move(clips, torch.full((5,), offset)), 5).softmax(dim=1) for offset in (-200, 0, 200)
    ]
    assert torch.allclose(averaged, sum(copies) / 3, atol=1e-6)
    assert not torch.allclose(averaged, plain, atol=1e-4), "the shifted copies must be scored too"
    assert torch.allclose(averaged.sum(dim=1), torch.ones(5), atol=1e-5)

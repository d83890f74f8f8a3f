"""Decoding, mixing, resampling and locating the word in a recording, on files written here."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from spokenwords.audio.torch_shaping import BadAudio, NoSpeech, locate, prepare, prepare_many
from tests.helpers import REPO, tone, write_wav


def dominant_frequency(waveform: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform.flatten().numpy()))
    return float(np.fft.rfftfreq(waveform.numel(), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_resampling_keeps_pitch_and_length(tmp_path, rate):
    path = write_wav(tmp_path / "tone.wav", tone(440, rate, 1.0), rate)
    waveform = prepare(path, 8000, 1.0)
    assert waveform.shape == (1, 8000) and waveform.dtype == torch.float32
    assert dominant_frequency(waveform, 8000) == pytest.approx(440, abs=2)
    assert waveform.abs().max() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("rate", [44101, 7993, 383_999])
def test_odd_sample_rates_resample_in_bounded_memory(tmp_path, rate):
    """An exact kernel for 383999 -> 8000 Hz would take 12 GB; the clip must cost well under 1 GB."""
    path = write_wav(tmp_path / "odd.wav", tone(440, rate, 1.0), rate)
    script = (
        "import resource, sys; from pathlib import Path; from spokenwords.audio.torch_shaping import prepare; "
        "prepare(Path(sys.argv[1]), 8000, 1.0); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert int(result.stdout) < 1_000_000, f"peak RSS {int(result.stdout) // 1024} MB"
    assert dominant_frequency(prepare(path, 8000, 1.0), 8000) == pytest.approx(440, abs=2)


def test_short_clip_is_centred_and_zero_padded_both_sides(tmp_path):
    path = write_wav(tmp_path / "short.wav", tone(300, 16000, 0.25), 16000)
    waveform = prepare(path, 8000, 1.0)
    assert waveform.shape == (1, 8000)
    loud = waveform[0].nonzero().flatten()
    assert 2950 <= loud.min() <= 3050 and 4950 <= loud.max() <= 5050  # 2,000 samples centred in 8,000
    assert waveform[0, 3100:4900].abs().max() > 0.4


@pytest.mark.parametrize("start_seconds", [0.0, 1.3, 6.55])
def test_the_word_is_found_anywhere_in_a_long_noisy_recording(tmp_path, start_seconds):
    """A 0.4 s burst at any place in 8 s of quiet noise comes out centred, as if it had been recorded alone."""
    rng = np.random.default_rng(0)
    samples = (0.005 * rng.standard_normal(8000 * 8)).astype(np.float32)
    start = int(start_seconds * 8000)
    samples[start : start + 3200] += tone(500, 8000, 0.4)
    waveform = prepare(write_wav(tmp_path / "long.wav", samples, 8000), 8000, 1.0)
    loud = (waveform[0].abs() > 0.1).nonzero().flatten()
    assert abs((loud.min() + loud.max()).item() / 2 - 4000) <= 80  # the burst's centre within 10 ms of the middle
    assert loud.max() - loud.min() >= 3150


def test_an_hour_long_recording_costs_only_the_searched_minute(tmp_path):
    samples = np.concatenate([np.full(8000 * 90, 0.01, dtype=np.float32), tone(300, 8000, 1.0, 0.5)])
    samples = np.concatenate([samples, np.full(8000 * 3509, 0.01, dtype=np.float32)])
    path = write_wav(tmp_path / "hour.wav", samples, 8000)
    waveform = prepare(path, 8000, 1.0)  # the tone is past the first minute, so only the hum is searched
    assert waveform.shape == (1, 8000)
    assert waveform.abs().max() == pytest.approx(0.01, abs=1e-3)


def test_locate_keeps_a_full_window_when_the_word_fills_it():
    waveform = torch.ones(1, 8000) * 0.5
    assert torch.equal(locate(waveform, 8000, 8000), waveform)


def test_channels_are_averaged(tmp_path):
    left, right = tone(440, 8000, 1.0, 0.4), np.zeros(8000, dtype=np.float32)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 8000)
    waveform = prepare(path, 8000, 1.0)
    assert waveform.shape == (1, 8000)
    assert waveform.abs().max() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_every_wav_sample_format_decodes_to_the_same_signal(tmp_path, subtype):
    path = write_wav(tmp_path / f"{subtype}.wav", tone(440, 8000, 1.0), 8000, subtype)
    assert torch.allclose(prepare(path, 8000, 1.0)[0], torch.from_numpy(tone(440, 8000, 1.0)), atol=1e-2)


def test_flac_and_ogg(tmp_path):
    for name, subtype in (("clip.flac", "PCM_16"), ("clip.ogg", "VORBIS")):
        path = write_wav(tmp_path / name, tone(440, 16000, 1.0), 16000, subtype)
        assert dominant_frequency(prepare(path, 8000, 1.0), 8000) == pytest.approx(440, abs=2)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not readable audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not readable audio"),
        (bytes(range(256)) * 40, "not readable audio"),
    ],
)
def test_unreadable_files_are_reported(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(BadAudio, match=reason):
        prepare(path, 8000, 1.0)


def test_zero_length_nan_and_missing(tmp_path):
    with pytest.raises(BadAudio, match="zero-length audio"):
        prepare(write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 8000), 8000, 1.0)
    samples = tone(440, 8000, 1.0)
    samples[100] = np.nan
    with pytest.raises(BadAudio, match="NaN or infinite"):
        prepare(write_wav(tmp_path / "nan.wav", samples, 8000, "FLOAT"), 8000, 1.0)
    with pytest.raises(BadAudio, match="no such file"):
        prepare(tmp_path / "missing.wav", 8000, 1.0)


def test_silence_is_no_speech_and_unicode_names_are_fine(tmp_path):
    path = write_wav(tmp_path / "dir with spaces" / "sïlence ünïcode.wav", np.zeros(4000, dtype=np.float32), 8000)
    with pytest.raises(NoSpeech, match="no speech found"):
        prepare(path, 8000, 1.0)
    quiet_hum = write_wav(tmp_path / "hum.wav", tone(50, 8000, 3.0, amplitude=0.0005), 8000)
    with pytest.raises(NoSpeech, match="no speech found"):
        prepare(quiet_hum, 8000, 1.0)
    assert prepare(write_wav(tmp_path / "ünïcode wörd.wav", tone(440, 8000, 0.5), 8000), 8000, 1.0).abs().max() > 0.4


@pytest.mark.parametrize("workers", [1, 2])
def test_clips_from_worker_processes_are_the_clips_prepared_in_process(tmp_path, workers):
    """The workers send NumPy arrays back: what arrives must be bit for bit the tensor ``prepare`` makes, in order,
    with bad files answered in their place.
    """
    paths = [
        write_wav(tmp_path / f"{index}.wav", tone(300 + 40 * index, rate, 0.4 + 0.1 * index), rate)
        for index, rate in enumerate((8000, 16000, 44100, 22050, 8000, 48000))
    ]
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    paths.insert(3, tmp_path / "bad.wav")
    results = list(prepare_many(paths, 16000, 1.0, workers))
    assert [reason.split(" (")[0] for _, reason in results][3] == "not readable audio"
    assert results[3][0] is None
    for path, (clip, reason) in zip(paths, results, strict=True):
        if path.name != "bad.wav":
            expected = prepare(path, 16000, 1.0)
            assert reason == "" and clip.dtype == expected.dtype and clip.shape == expected.shape == (1, 16000)
            assert torch.equal(clip, expected)

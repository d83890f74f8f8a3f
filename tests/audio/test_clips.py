"""The numpy audio path of the ONNX predictor against the torch one of preprocess and predict: the same clips."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
import torchaudio

from spokenwords.audio import shaping, torch_shaping
from spokenwords.inference.scoring import move, shifted_probabilities
from tests.helpers import FSDD_ARCHIVE, tone, write_wav


@pytest.mark.parametrize(
    ("orig", "new"), [(44100, 16000), (8000, 16000), (22050, 8000), (48000, 16000), (16000, 8000), (11025, 16000)]
)
def test_resample_is_torchaudios(orig, new):
    samples = np.random.default_rng(orig + new).standard_normal(orig // 3 + 7).astype(np.float32) * 0.3
    expected = torchaudio.transforms.Resample(orig, new)(torch.from_numpy(samples)).numpy()
    kernel, *_ = shaping.resample_kernel(orig, new)
    reference = torchaudio.functional.functional._get_sinc_resample_kernel(orig, new, np.gcd(orig, new))[0]
    np.testing.assert_array_equal(kernel, reference[:, 0].numpy())  # the same filter taps, bit for bit
    result = shaping.resample(samples, orig, new)
    assert result.shape == expected.shape and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=2e-6)


@pytest.mark.parametrize("case", ["short", "exact", "late word", "early word", "two words", "noise"])
def test_locate_is_audio_locate(case):
    rate, length = 8000, 8000
    rng = np.random.default_rng(0)
    word = tone(440, rate, 0.4) * np.hanning(int(rate * 0.4)).astype(np.float32)
    quiet = 0.002 * rng.standard_normal(rate * 3).astype(np.float32)
    samples = {
        "short": word,
        "exact": np.resize(word, length),
        "late word": np.concatenate([quiet[: int(rate * 2.3)], word, quiet[:100]]),
        "early word": np.concatenate([word[1000:], quiet]),
        "two words": np.concatenate([quiet[:5000], 0.5 * word, quiet[:9000], word, quiet[:3000]]),
        "noise": 0.2 * rng.standard_normal(rate * 2).astype(np.float32),
    }[case]
    expected = torch_shaping.locate(torch.from_numpy(samples)[None], length, rate)[0].numpy()
    np.testing.assert_array_equal(shaping.locate(samples, length, rate), expected)


def test_silence_is_no_speech_in_both():
    silence = np.full(16000, 1e-4, dtype=np.float32)
    with pytest.raises(shaping.NoSpeech):
        shaping.locate(silence, 8000, 8000)
    with pytest.raises(torch_shaping.NoSpeech):
        torch_shaping.locate(torch.from_numpy(silence)[None], 8000, 8000)


def test_shifted_copies_are_the_ones_evaluate_scores():
    clip = np.random.default_rng(1).standard_normal(800).astype(np.float32)
    copies = shaping.shifted_copies(clip, shifts=2, step=30)
    for index, offset in enumerate(range(-60, 61, 30)):
        expected = move(torch.from_numpy(clip)[None, None], torch.tensor([offset]))[0, 0].numpy()
        np.testing.assert_array_equal(copies[index], expected)

    class Identity(torch.nn.Module):  # probabilities that show which copy is which
        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            return waveform.flatten(1)

    scored = shifted_probabilities(Identity(), torch.from_numpy(clip)[None, None], 1, 2, 30)[:, 0]
    expected = torch.from_numpy(copies).softmax(dim=-1)
    torch.testing.assert_close(scored, expected)


def test_prepare_agrees_on_files_of_every_shape(tmp_path):
    rng = np.random.default_rng(2)
    word = tone(300, 44100, 0.5) * np.hanning(22050).astype(np.float32)
    files = [
        write_wav(tmp_path / "stereo.wav", np.stack([word, 0.5 * word], axis=1), 44100),
        write_wav(tmp_path / "late.flac", np.concatenate([np.zeros(30000), word[::2], np.zeros(9000)]), 22050),
        write_wav(tmp_path / "odd-rate.wav", 0.3 * rng.standard_normal(9000), 11025, subtype="FLOAT"),
        write_wav(tmp_path / "short.wav", tone(500, 16000, 0.3), 16000),
    ]
    if FSDD_ARCHIVE.is_file():  # real recordings: 8 kHz speech with its own silences and noise
        with tarfile.open(FSDD_ARCHIVE) as archive:
            for name in ("0_george_0.wav", "7_jackson_12.wav", "9_theo_3.wav"):
                member = archive.getmember(f"free-spoken-digit-dataset-1.0.10/recordings/{name}")
                (tmp_path / name).write_bytes(archive.extractfile(member).read())
                files.append(tmp_path / name)
    for path in files:
        for rate in (8000, 16000):
            expected = torch_shaping.prepare(path, rate, 1.0)[0].numpy()
            result = shaping.prepare(path, rate, 1.0)
            assert result.shape == expected.shape, path
            np.testing.assert_allclose(result, expected, atol=2e-6, err_msg=str(path))

"""The frozen speech embedding, the head trained on it, and the `embed` stage that caches it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spokenwords import params
from spokenwords.audio.copies import band_limit, channel_copy
from spokenwords.cli import UserError
from spokenwords.models import embedding
from spokenwords.models.architectures import EmbeddingClassifier, build_model, count_parameters, model_config
from spokenwords.models.checkpoint import load_checkpoint
from tests.helpers import PARAMETERS, stage, tone, write_params, write_processed

EMBEDDING_RUN = {
    "model": {"name": "embedding"},
    "embed": {"copies": 1},
    "train": {"epochs": 3, "warmup_epochs": 1.0, "batch_size": 8, "device": "cpu"},
}


def test_one_second_at_16_khz_gives_three_windows_of_96():
    waveforms = torch.from_numpy(np.stack([tone(300, 16000, 1.0), tone(900, 16000, 1.0)])).unsqueeze(1)
    vectors = embedding.embed(waveforms)
    assert vectors.shape == (2, 3, 96) and embedding.windows(16000) == 3
    assert torch.isfinite(vectors).all() and not torch.allclose(vectors[0], vectors[1])
    assert torch.equal(embedding.embed(waveforms[:1]), vectors[:1])  # a clip's embedding ignores its batch


def test_the_sliding_graph_gives_every_window_what_the_wheel_graph_gives_it():
    import onnxruntime

    mels = np.random.default_rng(0).normal(0, 1, (2, 76 + 5 * 8, 32, 1)).astype(np.float32)  # 6 windows
    wheel = onnxruntime.InferenceSession(str(embedding.model_dir() / "embedding_model.onnx"))
    per_window = [wheel.run(None, {"input_1": mels[:, start : start + 76]})[0] for start in range(0, 41, 8)]
    sliding = embedding.sessions()[1].run(None, {"input_1": mels})[0]
    assert sliding.shape == (2, 6, 1, 96)
    np.testing.assert_allclose(sliding[:, :, 0], np.concatenate(per_window, axis=1)[:, :, 0], rtol=0, atol=1e-4)


def test_a_longer_clip_gives_a_window_every_80_ms():
    clip = torch.from_numpy(tone(500, 16000, 1.37)).reshape(1, 1, -1)
    vectors = embedding.embed(clip)
    assert vectors.shape == (1, embedding.windows(clip.shape[-1]), 96) == (1, 8, 96)
    assert torch.equal(vectors[:, :3], embedding.embed(clip[..., :16000]))  # the first second's windows as alone


def test_a_graph_other_than_the_embedding_is_refused_by_name():
    with pytest.raises(UserError, match=r"melspectrogram\.onnx is not the embedding graph"):
        embedding.sliding_graph(embedding.model_dir() / "melspectrogram.onnx")


def test_clips_shorter_than_one_window_are_refused():
    with pytest.raises(UserError, match=r"at least 0\.78 s"):
        embedding.windows(12000)


def test_the_head_has_its_parameter_count_and_keeps_only_its_own_weights():
    config = model_config(params.validate({"model": {"name": "embedding"}}, params.ModelParams), sample_rate=16000)
    model = build_model(config, n_output=10)
    assert count_parameters(model) == PARAMETERS["embedding"]
    assert all(name.startswith("head.") for name in model.state_dict())
    waveforms = torch.randn(3, 1, 16000) * 0.1
    model.eval()
    assert torch.allclose(model(waveforms), model.classify(embedding.embed(waveforms)))


def test_the_embedding_model_refuses_8_khz_audio():
    with pytest.raises(UserError, match=r"preprocess\.sample_rate to 16000"):
        EmbeddingClassifier(sample_rate=8000)


def high_share(waveform: torch.Tensor, above_hz: float, rate: int = 16000) -> float:
    """The share of a clip's energy above ``above_hz``."""
    power = torch.fft.rfft(waveform.flatten().double()).abs().square()
    frequencies = torch.fft.rfftfreq(waveform.shape[-1], 1 / rate)
    return float(power[frequencies > above_hz].sum() / power.sum())


def test_a_band_limit_removes_what_lies_above_its_cutoff_and_keeps_the_rest():
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16000))).float() * 0.1
    narrow = band_limit(noise, 16000, 3500.0)
    assert narrow.shape == noise.shape
    assert high_share(noise, 4000) > 0.4 and high_share(narrow, 4000) < 1e-3
    below = torch.fft.rfftfreq(16000, 1 / 16000) < 3000
    kept = (
        torch.fft.rfft(narrow.flatten()).abs().square()[below].sum()
        / torch.fft.rfft(noise.flatten()).abs().square()[below].sum()
    )
    assert 0.95 < float(kept) < 1.05


def test_band_limited_copies_lose_their_highs_only_when_asked():
    clip = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 16000))).float() * 0.1
    always = params.validate({"embed": {"band_limit_prob": 1.0, "band_limit_hz_max": 3500.0}}, params.EmbedParams)
    never = params.validate({}, params.EmbedParams)
    for seed in range(3):
        assert high_share(channel_copy(clip, 16000, always, np.random.default_rng(seed)), 4000) < 1e-3
        assert high_share(channel_copy(clip, 16000, never, np.random.default_rng(seed)), 4000) > 0.05


def test_a_band_limit_range_upside_down_or_out_of_reach_is_refused_by_name():
    with pytest.raises(UserError, match="band_limit_hz_min must be <= band_limit_hz_max"):
        params.validate({"embed": {"band_limit_hz_min": 6000.0, "band_limit_hz_max": 4000.0}}, params.EmbedParams)
    with pytest.raises(UserError, match=r"band_limit_hz_min.*>= 1000"):
        params.validate({"embed": {"band_limit_hz_min": 100.0}}, params.EmbedParams)


def test_a_channel_copy_keeps_the_length_and_repeats_under_its_seed():
    config = params.validate({}, params.EmbedParams)
    clip = torch.from_numpy(tone(400, 16000, 0.5)).unsqueeze(0)
    clip = torch.nn.functional.pad(clip, (4000, 4000))
    copies = [channel_copy(clip, 16000, config, np.random.default_rng(seed)) for seed in (0, 0, 1)]
    assert all(copy.shape == (1, 16000) for copy in copies)
    assert torch.equal(copies[0], copies[1]) and not torch.equal(copies[0], copies[2])
    assert 10 ** (-31 / 20) <= copies[0].abs().max() <= 10 ** (-1 / 20) + 1e-6


def test_embedding_a_batch_gives_each_clip_what_it_gets_alone():
    audio = (0.1 * np.random.default_rng(0).standard_normal((9, 16000))).astype(np.float32)
    alone = np.concatenate([embedding.embed_batch(audio[index : index + 1]) for index in range(len(audio))])
    assert np.array_equal(embedding.embed_batch(audio), alone)


def test_embed_stage_repeats_byte_for_byte_on_any_number_of_workers_and_train_evaluate_use_it(tmp_path, monkeypatch):
    for run, workers in (("a", "1"), ("b", "2")):
        monkeypatch.setenv("OMP_NUM_THREADS", workers)  # the embed stage's pool size
        write_processed(tmp_path / run, clips_per_label=7, samples=16000, sample_rate=16000)
        write_params(tmp_path / run, **EMBEDDING_RUN, evaluate={"device": "cpu"})
        stage("embed", tmp_path / run)
    files = ("train.pt", "validation.pt", "test.pt", "info.json")
    assert all(
        (tmp_path / "a/data/embedded" / name).read_bytes() == (tmp_path / "b/data/embedded" / name).read_bytes()
        for name in files
    ), "70 training clips are two chunks: one worker or two give the same bytes"
    train = torch.load(tmp_path / "a/data/embedded/train.pt", weights_only=True)
    assert train["embeddings"].shape == (140, 3, 96)  # 70 clips and one augmented copy of each
    assert torch.equal(train["labels"][:70], train["labels"][70:])
    processed = torch.load(tmp_path / "a/data/processed/train.pt", weights_only=True)
    clips = torch.from_numpy(np.load(tmp_path / "a/data/processed/train.npy"))
    assert torch.equal(train["embeddings"][:70], embedding.embed(clips)), "the clips themselves come first, in order"
    assert len(processed["labels"]) == 70
    info = json.loads((tmp_path / "a/data/embedded/info.json").read_text())
    assert info["splits"]["train"] == {"clips": 70, "embedded": 140} and info["windows_per_clip"] == 3

    stage("train", tmp_path / "a")
    stage("evaluate", tmp_path / "a")
    model, checkpoint = load_checkpoint(tmp_path / "a/models/model.pt")
    assert isinstance(model, EmbeddingClassifier) and checkpoint["audio"] == {"sample_rate": 16000, "samples": 16000}
    assert json.loads((tmp_path / "a/metrics/eval.json").read_text())["clips"] == 70


def test_embed_stage_does_nothing_for_a_waveform_model(tmp_path):
    write_processed(tmp_path)
    write_params(tmp_path, notebook=True)
    stage("embed", tmp_path)
    assert sorted(path.name for path in (tmp_path / "data/embedded").iterdir()) == ["info.json"]
    assert json.loads((tmp_path / "data/embedded/info.json").read_text()) == {"model": "m5", "embedded": False}


def test_embed_stage_refuses_8_khz_clips_with_the_fix(tmp_path):
    write_processed(tmp_path)
    write_params(tmp_path, **EMBEDDING_RUN)
    result = stage("embed", tmp_path, check=False)
    assert result.returncode == 1 and "preprocess.sample_rate to 16000" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data/embedded").exists()


def test_train_refuses_waveform_augmentation_for_the_embedding_model(tmp_path):
    write_processed(tmp_path, clips_per_label=2, samples=16000, sample_rate=16000)
    write_params(tmp_path, **EMBEDDING_RUN)
    stage("embed", tmp_path)
    write_params(tmp_path, **{**EMBEDDING_RUN, "train": {**EMBEDDING_RUN["train"], "augment": True}})
    result = stage("train", tmp_path, check=False)
    assert result.returncode == 1 and "train.augment" in result.stderr and "Traceback" not in result.stderr

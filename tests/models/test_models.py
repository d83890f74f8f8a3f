"""The model, the checkpoint format and device selection."""

from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
import torch

from spokenwords import params
from spokenwords.audio.features import LogMel
from spokenwords.audio.torch_shaping import prepare
from spokenwords.cli import UserError
from spokenwords.inference.scoring import shifted_probabilities
from spokenwords.models.architectures import M5, SpectrogramModel, build_model, count_parameters, model_config
from spokenwords.models.checkpoint import load_checkpoint, save_checkpoint
from spokenwords.runtime import select_device, use_amp
from tests.helpers import PARAMETERS, predictor, tone, write_params, write_wav


def test_m5_has_the_notebooks_parameter_count_and_shapes():
    model = M5()
    assert count_parameters(model) == PARAMETERS["m5"]
    assert model(torch.randn(4, 1, 8000)).shape == (4, 10)
    assert model.first_layer.kernel_size == (80,) and model.first_layer.stride == (16,)
    assert [layer.out_channels for layer in model.modules() if isinstance(layer, torch.nn.Conv1d)] == [32, 32, 64, 64]


def test_registry_builds_from_params():
    model = build_model({"name": "m5", "n_channel": 16, "stride": 8}, n_output=12)
    assert model(torch.randn(2, 1, 8000)).shape == (2, 12)


def test_device_auto_picks_what_is_available():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert select_device("auto").type == expected
    assert select_device("cpu") == torch.device("cpu")
    assert use_amp("auto", torch.device("cpu")) is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error():
    with pytest.raises(UserError, match="CUDA is not available here"):
        select_device("cuda:0")
    with pytest.raises(UserError, match="needs a CUDA device"):
        use_amp("on", torch.device("cpu"))


def test_checkpoint_round_trip_through_predict(tmp_path):
    torch.manual_seed(0)
    model = M5().eval()
    labels = [f"word{index}" for index in range(10)]
    save_checkpoint(
        tmp_path / "model.pt",
        model,
        {"name": "m5", "n_channel": 32, "stride": 16},
        labels,
        {"sample_rate": 8000, "samples": 8000},
    )
    loaded, checkpoint = load_checkpoint(tmp_path / "model.pt")
    waveform = torch.randn(3, 1, 8000)
    assert torch.equal(loaded(waveform), model(waveform))
    assert checkpoint["label_names"] == labels

    stereo_44k = write_wav(tmp_path / "stereo.wav", torch.randn(44100, 2).numpy() * 0.1, 44100)
    mono_8k = write_wav(tmp_path / "mono.wav", tone(500, 8000, 0.7), 8000)
    (tmp_path / "empty.wav").write_bytes(b"")
    result = predictor(
        "predict",
        tmp_path,
        "--json",
        "--model",
        "model.pt",
        "stereo.wav",
        "empty.wav",
        "mono.wav",
        "missing.wav",
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == ["stereo.wav", "empty.wav", "mono.wav", "missing.wav"]
    assert lines[1]["error"].startswith("not readable audio") and lines[3]["error"] == "no such file"
    for line, path in ((lines[0], stereo_44k), (lines[2], mono_8k)):
        assert line["label"] in labels and len(line["top3"]) == 3
        expected = model(prepare(path, 8000, 1.0).unsqueeze(0)).softmax(-1)[0]
        assert line["probability"] == pytest.approx(expected.max().item(), abs=1e-5)
        assert line["label"] == labels[expected.argmax()]
    assert "error: empty.wav: not readable audio" in result.stderr


def test_predict_answers_no_speech_for_silence_and_finds_a_late_word(tmp_path):
    torch.manual_seed(0)
    model = M5().eval()
    labels = [f"word{index}" for index in range(10)]
    save_checkpoint(tmp_path / "model.pt", model, {"name": "m5"}, labels, {"sample_rate": 8000, "samples": 8000})
    write_wav(tmp_path / "silence.wav", np.zeros(24000, np.float32), 8000)
    word = tone(500, 8000, 0.5)
    late = np.concatenate([np.zeros(int(8000 * 1.3), np.float32), word, np.zeros(8000 * 2, np.float32)])
    write_wav(tmp_path / "late.wav", late, 8000)
    write_wav(tmp_path / "alone.wav", word, 8000)
    result = predictor("predict", tmp_path, "--json", "--model", "model.pt", "silence.wav", "late.wav", "alone.wav")
    silence, found, alone = (json.loads(line) for line in result.stdout.splitlines())
    assert silence["label"] is None and silence["no_speech"] and "no speech found" in silence["reason"]
    assert found["label"] == alone["label"] and found["probability"] == pytest.approx(alone["probability"], abs=1e-4)
    text = predictor("predict", tmp_path, "--model", "model.pt", "silence.wav").stdout
    assert text.startswith("silence.wav: no speech found")


def test_predict_uses_the_test_time_shifts_that_evaluate_scores(tmp_path):
    torch.manual_seed(0)
    model = M5().eval()
    labels = [f"word{index}" for index in range(10)]
    config = {"name": "m5", "n_channel": 32, "stride": 16}
    save_checkpoint(tmp_path / "model.pt", model, config, labels, {"sample_rate": 8000, "samples": 8000})
    write_wav(tmp_path / "mono.wav", tone(500, 8000, 0.5), 8000)
    waveform = prepare(tmp_path / "mono.wav", 8000, 1.0).unsqueeze(0)
    write_params(tmp_path, evaluate={"test_time_shifts": 2, "shift_step_ms": 50})

    def predicted(*options: str) -> float:
        result = predictor("predict", tmp_path, "--json", "--model", "model.pt", *options, "mono.wav")
        return json.loads(result.stdout)["probability"]

    averaged = shifted_probabilities(model, waveform, 1, shifts=2, step=400).mean(dim=0)[0].max().item()
    plain = model(waveform).softmax(-1)[0].max().item()
    assert abs(averaged - plain) > 1e-5, "an untrained model is nearly uniform, but the shifts must still show"
    assert predicted() == pytest.approx(averaged, abs=1e-6), "the default comes from params.yaml's evaluate section"
    assert predicted("--test-time-shifts", "0") == pytest.approx(plain, abs=1e-6)
    bad = predictor("predict", tmp_path, "--test-time-shifts", "-1", "mono.wav", check=False)
    assert bad.returncode == 2 and "--test-time-shifts must be >= 0" in bad.stderr and "Traceback" not in bad.stderr


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Exploit(), "model": {}, "label_names": [], "audio": {}}, path)
    with pytest.raises(UserError, match="not a safe model checkpoint"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(UserError, match="not a safe model checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("section", "parameters"),
    [
        ({"name": "m5"}, PARAMETERS["m5"]),
        ({"name": "dscnn"}, PARAMETERS["dscnn"]),
        ({"name": "bcresnet", "bcresnet": {"width": 1.0}}, 9_166),
        ({"name": "bcresnet"}, PARAMETERS["bcresnet"]),
        ({"name": "bcresnet", "bcresnet": {"width": 2.0}}, 27_154),
    ],
)
def test_each_model_has_its_parameter_count_and_output_shape_at_8_khz(section, parameters):
    config = model_config(params.validate({"model": section}, params.ModelParams), sample_rate=8000)
    model = build_model(config, n_output=10)
    assert count_parameters(model) == parameters
    assert model(torch.randn(4, 1, 8000)).shape == (4, 10)
    assert model.eval()(torch.randn(1, 1, 8000)).shape == (1, 10)


def test_model_config_keeps_only_the_chosen_models_settings():
    section = params.validate({"model": {"name": "dscnn"}}, params.ModelParams)
    config = model_config(section, sample_rate=8000)
    assert config["name"] == "dscnn" and config["sample_rate"] == 8000 and config["n_mfcc"] == 10
    assert "width" not in config and "n_channel" not in config
    m5 = params.validate({"model": {"name": "m5"}}, params.ModelParams)
    assert model_config(m5, 8000) == {"name": "m5", "n_channel": 32, "stride": 16}
    default = model_config(params.validate({}, params.ModelParams), 16000)
    assert default == {"name": "embedding", "hidden": 256, "dropout": 0.5, "sample_rate": 16000}


@pytest.mark.parametrize("name", ["dscnn", "bcresnet"])
def test_spectrogram_models_compute_their_features_inside_and_round_trip(tmp_path, name):
    torch.manual_seed(0)
    config = model_config(params.validate({"model": {"name": name}}, params.ModelParams), sample_rate=8000)
    model = build_model(config, n_output=10).eval()
    assert isinstance(model, SpectrogramModel)
    waveform = torch.randn(2, 1, 8000)
    features = model.frontend(waveform)
    assert features.dim() == 4 and features.shape[:2] == (2, 1)
    assert torch.allclose(model.classify(features), model(waveform))
    save_checkpoint(tmp_path / "model.pt", model, config, [str(n) for n in range(10)], {"sample_rate": 8000})
    loaded, _ = load_checkpoint(tmp_path / "model.pt")
    assert torch.equal(loaded(waveform), model(waveform))


@pytest.mark.parametrize("mode", ["clip", "band"])
def test_clip_normalisation_ignores_the_recording_level(mode):
    waveform = torch.randn(1, 1, 8000)
    features = LogMel(8000, n_fft=256, win_length=240, hop_length=80, n_mels=40, log_offset=1e-9, normalise=mode)
    assert torch.allclose(features(waveform), features(10 * waveform), atol=1e-3)


def test_floor_makes_digital_silence_and_quiet_background_alike():
    torch.manual_seed(0)
    speech = torch.zeros(1, 1, 8000)
    speech[..., :3000] = 0.3 * torch.randn(1, 1, 3000)
    background = speech + 1e-4 * torch.randn(1, 1, 8000)  # 70 dB below the speech
    floored = LogMel(8000, n_fft=256, win_length=240, hop_length=80, n_mels=40, floor_db=40, normalise="none")
    plain = LogMel(8000, n_fft=256, win_length=240, hop_length=80, n_mels=40, normalise="none")
    features = floored(speech)
    assert features.max() - features.min() <= 40 * math.log(10) / 10 + 1e-4
    assert torch.allclose(features[..., 60:], floored(background)[..., 60:], atol=1e-3)
    assert not torch.allclose(plain(speech)[..., 60:], plain(background)[..., 60:])


def m5_pair(negative_scales: bool) -> tuple[M5, M5]:
    """Two identical M5s in training mode, BatchNorm weights varied (some negative: those channels pool minima)."""
    torch.manual_seed(0)
    model = M5()
    with torch.no_grad():
        for norm in (layer for layer in model.modules() if isinstance(layer, torch.nn.BatchNorm1d)):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.5)
            if negative_scales:
                norm.weight[::3] *= -1
    return model.train(), copy.deepcopy(model).train()


def outputs_and_gradients(model: M5, forward, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits, the gradient of a weighted sum of them for every parameter, and every buffer after one step."""
    logits = forward(waveforms)
    (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
    gradients = {f"{name}.grad": parameter.grad for name, parameter in model.named_parameters()}
    return {"logits": logits.detach(), **gradients, **dict(model.named_buffers())}


@pytest.mark.parametrize("negative_scales", [False, True])
@pytest.mark.parametrize("silence", [False, True])
def test_m5_fast_training_route_is_the_plain_layer_sequence(negative_scales, silence):
    """Logits, every gradient and the running statistics match the plain layers to float rounding.

    Random waveforms give conv outputs without ties; zero-padded ones (silence) tie every pooling window in the
    padding, where the fast route must send the gradient to the first maximum, as MaxPool1d does.
    """
    fast, plain = m5_pair(negative_scales)
    assert [type(layer) for layer in plain.features[:4]] == [
        torch.nn.Conv1d,
        torch.nn.BatchNorm1d,
        torch.nn.ReLU,
        torch.nn.MaxPool1d,
    ]
    waveforms = torch.randn(24, 1, 8000)
    if silence:
        waveforms[:, :, 5000:] = 0
    got = outputs_and_gradients(fast, fast.train_forward, waveforms)
    expected = outputs_and_gradients(plain, plain.reference, waveforms)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if name.endswith("num_batches_tracked"):
            assert torch.equal(got[name], value)
        elif name.startswith("features.") and name.endswith(".bias.grad") and int(name.split(".")[1]) % 4 == 0:
            # a conv bias before BatchNorm has a gradient of exactly zero: both sides are rounding noise
            weight = expected[name.replace(".bias.", ".weight.")].abs().max()
            assert got[name].abs().max() < 1e-4 * weight and value.abs().max() < 1e-4 * weight
        else:
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5 * float(value.abs().max()))


def test_m5_forward_takes_the_fast_route_only_to_train_on_the_cpu():
    fast, plain = m5_pair(negative_scales=False)
    waveforms = torch.randn(8, 1, 8000)
    fast.eval(), plain.eval()
    assert torch.equal(fast(waveforms), plain.reference(waveforms)), "evaluation uses the layers as they are"
    fast.train(), plain.train()
    with torch.no_grad():
        assert torch.equal(fast(waveforms), plain.reference(waveforms)), "so does a training-mode pass without grad"
    logits = fast(waveforms)
    assert logits.grad_fn is not None and not torch.equal(logits, plain.reference(waveforms)), (
        "with grad, the fast route runs: equal to rounding only"
    )
    torch.testing.assert_close(logits, plain.reference(waveforms))


def test_m5_checkpoint_keys_are_the_notebook_layers():
    """Old checkpoints load: the fast route added no parameters or buffers."""
    keys = list(M5().state_dict())
    assert keys[:7] == [
        "features.0.weight",
        "features.0.bias",
        "features.1.weight",
        "features.1.bias",
        "features.1.running_mean",
        "features.1.running_var",
        "features.1.num_batches_tracked",
    ]
    assert keys[-2:] == ["classifier.weight", "classifier.bias"] and len(keys) == 4 * 7 + 2

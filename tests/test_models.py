"""The model, the checkpoint format and device selection."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from stages.audio import prepare
from stages.cli import UserError
from stages.models import M5, build_model, count_parameters, load_checkpoint, save_checkpoint
from stages.runtime import select_device, use_amp
from tests.helpers import stage, tone, write_wav


def test_m5_has_the_notebooks_parameter_count_and_shapes():
    model = M5()
    assert count_parameters(model) == 25_290
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
    result = stage(
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

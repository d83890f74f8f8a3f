"""The export stage and the torch-free ONNX predictor: real torch, real onnxruntime, real files."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchaudio
from torch import nn

from spokenwords import params
from spokenwords.cli import UserError
from spokenwords.models import onnx_export
from spokenwords.models.architectures import MODELS, build_model, model_config
from spokenwords.models.checkpoint import save_checkpoint
from spokenwords.predict_onnx import OnnxModel, softmax
from tests.helpers import (
    FSDD_ARCHIVE,
    commit,
    copy_project,
    dvc,
    predictor,
    run,
    stage,
    tone,
    write_params,
    write_processed,
    write_wav,
)

LABELS = [f"word{index}" for index in range(10)]
# Runs the ONNX predictor with torch and torchaudio unimportable: any import of them fails the run.
WITHOUT_TORCH = """
import runpy, sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio"):
            raise ImportError(f"{name} is blocked: the ONNX predictor must not import it")
        return None

sys.meta_path.insert(0, NoTorch())
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__")
"""
TINY_MODELS = {
    "m5": {"n_channel": 8},
    "dscnn": {"channels": 8, "blocks": 1},
    "bcresnet": {"width": 1.0},
    "embedding": {"hidden": 16},
    "ensemble": {"embedding": {"hidden": 16}, "dscnn": {"channels": 8, "blocks": 1}},
}


def tiny_model(name: str, rate: int, classes: int) -> nn.Module:
    """An untrained, seeded model ``name`` at its ``TINY_MODELS`` size, in eval mode."""
    section = params.validate({"model": {"name": name, name: TINY_MODELS[name]}}, params.ModelParams)
    torch.manual_seed(0)
    return build_model(model_config(section, rate), classes).eval()


def first_two(features: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The first two clips of each graph input, as the tensors the exporter traces."""
    return {name: torch.from_numpy(values[:2]) for name, values in features.items()}


def without_torch(module: str, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` in ``cwd`` with torch and torchaudio blocked from import."""
    return run([sys.executable, "-c", WITHOUT_TORCH, module, *args], cwd, check=check)


def project(root: Path, name: str, rate: int) -> Path:
    """A folder with tiny processed splits and an untrained (seeded) checkpoint of model ``name``."""
    # untrained, scored on 30 clips: one prediction int8 changes is 3.3 points, so the drop limit is off here
    write_params(
        root, model={"name": name, name: TINY_MODELS[name]}, export={"latency_clips": 5, "max_int8_drop": 100.0}
    )
    write_processed(root, clips_per_label=3, samples=rate, sample_rate=rate, label_names=tuple(LABELS))
    torch.manual_seed(0)
    config = model_config(params.load(params.ModelParams, root / "params.yaml"), rate)
    model = build_model(config, len(LABELS)).eval()
    save_checkpoint(root / "models/model.pt", model, config, LABELS, {"sample_rate": rate, "samples": rate})
    return root


def recordings(root: Path, rate: int) -> list[str]:
    """Files of every shape predict accepts, plus one silent, one corrupt and one missing."""
    word = tone(300, 44100, 0.5) * np.hanning(22050).astype(np.float32)
    write_wav(root / "stereo.wav", np.stack([word, 0.5 * word], axis=1), 44100)
    late = np.concatenate([np.zeros(int(rate * 1.3)), tone(700, rate, 0.4), np.zeros(rate)])
    write_wav(root / "late.wav", late, rate)
    write_wav(root / "silence.wav", np.zeros(rate, np.float32), rate)
    (root / "corrupt.wav").write_bytes(b"RIFF not really")
    names = ["stereo.wav", "late.wav", "silence.wav", "corrupt.wav", "missing.wav"]
    if FSDD_ARCHIVE.is_file():
        with tarfile.open(FSDD_ARCHIVE) as archive:
            member = archive.getmember("free-spoken-digit-dataset-1.0.10/recordings/3_lucas_7.wav")
            (root / "fsdd.wav").write_bytes(archive.extractfile(member).read())
        names.append("fsdd.wav")
    return names


@pytest.fixture(
    scope="module",
    params=[("dscnn", 8000), ("embedding", 16000), ("ensemble", 16000)],
    ids=["dscnn", "embedding", "ensemble"],
)
def exported(request, tmp_path_factory):
    """A project whose model went through the export stage: a spectrogram model, the embedding head and the ensemble
    of the two (one graph that takes both the embeddings and the waveform).
    """
    name, rate = request.param
    root = project(tmp_path_factory.mktemp(name), name, rate)
    stage("export", root)
    return root, name, rate


def test_export_writes_both_models_and_the_metrics(exported):
    root, name, _ = exported
    metrics = json.loads((root / "metrics/export.json").read_text())
    assert metrics["model"] == name and metrics["test_clips"] == 30 and metrics["calibration_clips"] == 30
    fields = {"model", "input", "opset", "test_clips", "calibration_clips", "pytorch", "float32", "int8"}
    assert set(metrics) - {"feature_step"} == fields | {"int8_size_ratio"}  # the same fields for every model
    for kind, path in (("float32", "models/model.onnx"), ("int8", "models/model.int8.onnx")):
        assert metrics[kind]["size_bytes"] == (root / path).stat().st_size
        assert 0 <= metrics[kind]["accuracy"] <= 1
    assert metrics["float32"]["agreement"] == 1.0
    latency = json.loads((root / "logs/export_latency.json").read_text())  # untracked: it changes on every run
    assert all(latency[kind]["latency_ms"] > 0 for kind in ("pytorch", "float32", "int8"))
    assert ("feature_step" in metrics) == ("feature_step" in latency) == (name in ("embedding", "ensemble"))
    int8 = onnx.load(str(root / "models/model.int8.onnx"))
    int8_ops = {node.op_type for node in int8.graph.node}
    assert "QuantizeLinear" in int8_ops and int8_ops & {"QLinearConv", "QGemm", "QLinearMatMul"}
    assert sorted(path.name for path in (root / "models").iterdir()) == ["model.int8.onnx", "model.onnx", "model.pt"]


def test_the_written_files_hold_short_names_and_no_restated_defaults(exported):
    root, name, _ = exported
    inputs = {"embedding": ["embeddings"], "ensemble": ["embeddings", "waveform"]}.get(name, ["waveform"])
    for path in ("models/model.onnx", "models/model.int8.onnx"):
        graph = onnx.load(str(root / path)).graph
        assert [value.name for value in graph.input] == inputs and [value.name for value in graph.output] == ["logits"]
        outer = {value.name for value in (*graph.input, *graph.output)}
        names = {name for node in graph.node for name in (*node.input, *node.output)} - outer - {""}
        assert names and max(map(len, names)) <= 3 and not any(node.name for node in graph.node)
        defaults = {"auto_pad": b"NOTSET", "group": 1, "ceil_mode": 0, "storage_order": 0}
        restated = [
            (node.op_type, attribute.name)
            for node in graph.node
            for attribute in node.attribute
            if attribute.name in defaults and onnx.helper.get_attribute_value(attribute) == defaults[attribute.name]
        ]
        assert not restated


def test_float32_onnx_is_the_pytorch_model_at_any_batch_size(exported):
    root, _, rate = exported
    from spokenwords.data.processed_splits import load_split
    from spokenwords.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(root / "models/model.pt")
    onnx_model = OnnxModel(root / "models/model.onnx")
    assert onnx_model.label_names == LABELS and onnx_model.sample_rate == rate and onnx_model.samples == rate
    waveforms = load_split(root / "data/processed/test.pt")["waveforms"][:5]
    with torch.inference_mode():
        expected = model(waveforms).numpy()
    for batch in (1, 5):
        logits = np.concatenate([onnx_model.logits(clip[:, 0].numpy()) for clip in waveforms.split(batch)])
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_onnx_predict_runs_without_torch_and_matches_predict(exported):
    root, _, rate = exported
    names = recordings(root, rate)
    for options in ([], ["--test-time-shifts", "2", "--shift-step-ms", "40"]):
        torch_run = predictor("predict", root, "--json", *options, *names, check=False)
        onnx_run = without_torch("spokenwords.predict_onnx", root, "--json", *options, *names, check=False)
        assert onnx_run.returncode == torch_run.returncode == 1, onnx_run.stderr
        assert "Traceback" not in onnx_run.stderr and "is blocked" not in onnx_run.stderr
        assert onnx_run.stderr.splitlines() == [line for line in torch_run.stderr.splitlines() if "error:" in line]
        for ours, theirs in zip(onnx_run.stdout.splitlines(), torch_run.stdout.splitlines(), strict=True):
            ours, theirs = json.loads(ours), json.loads(theirs)
            assert ours.keys() == theirs.keys() and ours["file"] == theirs["file"]
            assert ours.get("label") == theirs.get("label") and ours.get("error") == theirs.get("error")
            assert ours.get("probability", 0) == pytest.approx(theirs.get("probability", 0), abs=1e-4)
            for mine, other in zip(ours.get("top3", []), theirs.get("top3", []), strict=True):
                assert mine["probability"] == pytest.approx(other["probability"], abs=1e-4)
    text = without_torch("spokenwords.predict_onnx", root, "late.wav", "silence.wav").stdout.splitlines()
    assert text[0].startswith("late.wav: word") and text[1].startswith("silence.wav: no speech found")


def test_the_torch_blocker_catches_a_torch_import(tmp_path):
    """The predictor's proof is only as good as the blocker: the PyTorch predictor must fail under it."""
    result = without_torch("spokenwords.predict", tmp_path, "missing.wav", check=False)
    assert result.returncode != 0 and "torch is blocked" in result.stderr


def test_a_corrupt_or_foreign_onnx_file_is_a_clear_error(tmp_path):
    write_wav(tmp_path / "word.wav", tone(500, 8000, 0.5), 8000)
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage, not a protobuf")
    identity = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "foreign",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 10])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10])],
    )
    onnx.save(onnx.helper.make_model(identity), str(tmp_path / "foreign.onnx"))
    for name, expected in (
        ("corrupt.onnx", "error: corrupt.onnx is not a valid ONNX model ("),
        ("foreign.onnx", "error: foreign.onnx was not written by the export stage: its metadata lacks label_names"),
        ("absent.onnx", "error: absent.onnx is missing: run `dvc repro export` first"),
    ):
        result = without_torch("spokenwords.predict_onnx", tmp_path, "--model", name, "word.wav", check=False)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith(expected), result.stderr
        assert "Traceback" not in result.stderr


class Eigen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(self.mix(x)).real


class Unexportable(nn.Module):
    """A model with a layer (``odd``) that uses an op ONNX has no translation for."""

    def __init__(self) -> None:
        super().__init__()
        self.odd = Eigen()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.odd(waveform).mean(dim=1)


def test_an_op_onnx_cannot_express_is_named_with_its_layer_and_nothing_is_written(tmp_path):
    with pytest.raises(UserError) as raised:
        onnx_export.to_onnx(Unexportable().eval(), {"waveform": torch.randn(2, 8, 8)}, tmp_path / "model.onnx")
    message = str(raised.value)
    assert "layer 'odd' (Eigen) uses aten.linalg_eig" in message and "opset 18" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "spectrogram",
    [
        {"n_fft": 320, "win_length": 320, "hop_length": 160},  # DS-CNN's
        {"n_fft": 256, "win_length": 240, "hop_length": 80},  # BC-ResNet's: a window shorter than the frame
    ],
)
def test_the_exported_spectrogram_is_torchaudios(spectrogram):
    reference = torchaudio.transforms.Spectrogram(**spectrogram)
    assert onnx_export.plain_power_spectrogram(reference)
    waveform = 0.3 * torch.randn(3, 1, 8000)
    expected = reference(waveform)
    result = onnx_export.DftSpectrogram(reference)(waveform)
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize(("n_stft", "sample_rate", "n_mels"), [(161, 16000, 40), (129, 16000, 40), (201, 8000, 20)])
def test_the_exported_mel_filterbank_is_torchaudios_bit_for_bit(n_stft, sample_rate, n_mels):
    reference = torchaudio.transforms.MelScale(n_mels=n_mels, sample_rate=sample_rate, n_stft=n_stft)
    assert onnx_export.plain_mel_scale(reference)
    mel_scale = onnx_export.TriangularMelScale(reference)
    assert torch.equal(mel_scale.filterbank(), reference.fb)
    assert sum(buffer.numel() for buffer in mel_scale.buffers()) == n_mels + 2 + n_stft
    spectrogram = torch.rand(2, 1, n_stft, 50)
    torch.testing.assert_close(mel_scale(spectrogram), reference(spectrogram))


@pytest.mark.parametrize("name", ["dscnn", "bcresnet"])
def test_every_spectrogram_model_is_exported_with_the_dft_and_filterbank_front_end(name):
    config = model_config(params.validate({"model": {"name": name}}, params.ModelParams), 16000)
    model = build_model(config, 10).eval()
    module, inputs = onnx_export.exportable(model)
    assert inputs == ("waveform",) and module is not model
    replaced = (torchaudio.transforms.Spectrogram, torchaudio.transforms.MelScale)
    assert not any(isinstance(layer, replaced) for layer in module.modules())
    waveform = 0.1 * torch.randn(2, 1, 16000)
    with torch.inference_mode():
        torch.testing.assert_close(module(waveform), model(waveform), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_exports_with_another_class_count(name, tmp_path):
    """Every model, with 12 classes instead of the ten digits, through the export code: both files answer
    ``[clips, 12]``, and the float32 file's probabilities, from the torch-free predictor's feature path, are PyTorch's.
    """
    classes, rate = 12, 16000
    model = tiny_model(name, rate, classes)
    clips = 0.1 * torch.randn(5, 1, rate, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(clips).softmax(dim=-1).numpy()
    assert expected.shape == (5, classes)
    module, inputs = onnx_export.exportable(model)
    calibration = onnx_export.graph_inputs(inputs, clips)
    labels = [f"word{index}" for index in range(classes)]
    metadata = {"label_names": json.dumps(labels), "sample_rate": str(rate), "samples": str(rate)}
    work = onnx_export.write_models(
        module, first_two(calibration), calibration, tmp_path, {**metadata, "input": ",".join(inputs)}
    )
    for kind, path in work.items():
        onnx_model = OnnxModel(path)
        assert onnx_model.label_names == labels and onnx_model.session.get_outputs()[0].shape[-1] == classes
        probabilities = softmax(onnx_model.logits(clips[:, 0].numpy()))
        assert probabilities.shape == (5, classes) and np.allclose(probabilities.sum(axis=-1), 1, atol=1e-5)
        if kind == "float32":
            np.testing.assert_allclose(probabilities, expected, atol=1e-5)
            assert (probabilities.argmax(axis=-1) == expected.argmax(axis=-1)).all()


def test_an_int8_model_that_loses_too_much_fails_naming_both_accuracies():
    onnx_export.check_int8(0.9, 0.895, max_drop=1.0)  # half a point: allowed
    onnx_export.check_int8(0.9, 0.89, max_drop=1.0)  # exactly the limit (1.0000000000000009 in floating point): allowed
    with pytest.raises(UserError, match=r"from 90\.00 % \(float32\) to 88\.00 % \(int8\), 2\.00 points"):
        onnx_export.check_int8(0.9, 0.88, max_drop=1.0)


@pytest.mark.slow
def test_dvc_repro_runs_the_export_stage_and_then_has_nothing_to_do(tmp_path):
    """The stage as dvc.yaml declares it: deps, params and outs, in a real DVC project (m5, tiny splits)."""
    root = copy_project(tmp_path / "project")
    project(root, "m5", 8000)
    commit(root, "tiny m5 project")
    result = dvc(root, "repro", "--single-item", "export")
    assert "Running stage 'export'" in result.stdout
    metrics = json.loads((root / "metrics/export.json").read_text())
    assert metrics["model"] == "m5" and metrics["float32"]["agreement"] == 1.0
    assert "Data and pipelines are up to date." in dvc(root, "repro", "--single-item", "export").stdout
    write_params(
        root, model={"name": "m5", "m5": TINY_MODELS["m5"]}, export={"latency_clips": 6, "max_int8_drop": 100.0}
    )
    assert "Running stage 'export'" in dvc(root, "repro", "--single-item", "export").stdout


@pytest.mark.parametrize(("name", "rate"), [("dscnn", 8000), ("ensemble", 16000)])
def test_int8_leaves_the_spectrogram_front_end_float32(name, rate, tmp_path):
    """The ensemble's front end includes the resampler in front of DS-CNN: 8-bit audio would lose the word."""
    model = tiny_model(name, rate, classes=10)
    module, inputs = onnx_export.exportable(model)
    calibration = onnx_export.graph_inputs(
        inputs, 0.1 * torch.randn(8, 1, rate, generator=torch.Generator().manual_seed(0))
    )
    onnx_export.to_onnx(module, first_two(calibration), tmp_path / "model.onnx")
    front_end = set(onnx_export.front_end_nodes(onnx.load(str(tmp_path / "model.onnx"))))
    float32 = onnx.load(str(tmp_path / "model.onnx")).graph.node
    assert {node.op_type for node in float32 if node.name in front_end} >= {"Conv", "MatMul", "Log"}  # DFT, mels, log
    front_convs = [node for node in float32 if node.op_type == "Conv" and node.name in front_end]
    assert len(front_convs) == (2 if name == "ensemble" else 1)  # the DFT, and the ensemble's resampler
    onnx_export.quantise(tmp_path / "model.onnx", tmp_path / "int8.onnx", calibration, sorted(front_end))
    int8 = onnx.load(str(tmp_path / "int8.onnx")).graph.node
    assert sorted(node.op_type for node in int8 if node.name in front_end) == sorted(
        node.op_type for node in float32 if node.name in front_end
    )  # every front-end node kept, float32
    body = [node for node in float32 if node.op_type == "Conv" and node.name not in front_end]
    assert body and len([node for node in int8 if node.op_type == "QLinearConv"]) == len(body)  # every body conv int8

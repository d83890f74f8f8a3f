"""Broken and hostile ONNX models given to the predictors, built with the real ``onnx`` package: each is refused in
one line, before onnxruntime, or any file the model points at, is read; nothing is written and no process is left.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from spokenwords.inference.onnx_model import ALLOWED_OPS, MAX_DIMENSION
from tests.helpers import predictor, tone, write_wav
from tests.inference.test_predict import predict, processes_with

RATE = 8000
LABELS = ["yes", "no", "up"]
METADATA = {"label_names": json.dumps(LABELS), "sample_rate": str(RATE), "samples": str(RATE), "input": "waveform"}
WORDS = ["word0.wav", "word1.wav", "word2.wav"]
WEIGHTS = (0.01 * np.random.default_rng(0).standard_normal((RATE, len(LABELS)))).astype(np.float32)


def small_model(batch: str | int = "batch") -> onnx.ModelProto:
    """A real model that predict_onnx accepts: ``[batch, 1, 8000]`` waveforms, a MatMul with its one weight
    initializer ``w``, and the mean over the channel axis as ``[batch, 3]`` logits; the export stage's metadata.
    """
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["waveform", "w"], ["product"]),
            helper.make_node("ReduceMean", ["product", "axes"], ["logits"], keepdims=0),
        ],
        "small",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [batch, 1, RATE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, len(LABELS)])],
        [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    helper.set_model_props(model, METADATA)
    onnx.checker.check_model(model)
    return model


def external(model: onnx.ModelProto, location: str, length: int = WEIGHTS.nbytes) -> onnx.ModelProto:
    """``model`` with its weights ``w`` said to be in the file ``location`` (relative to the model's folder)."""
    weights = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(weights, location, offset=0, length=length)
    weights.data_location = TensorProto.EXTERNAL
    weights.ClearField("raw_data")
    return model


def write(model: onnx.ModelProto, path: Path) -> Path:
    """The model's own bytes alone (``onnx.save`` would write external data too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    """A working folder with three words to predict, and a folder ``outside`` beside the models' own."""
    for index in range(3):
        write_wav(tmp_path / f"word{index}.wav", tone(300 + 200 * index, RATE, 0.5), RATE)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.bin").write_bytes(WEIGHTS.tobytes())
    os.mkfifo(tmp_path / "outside/fifo")  # reading it would block until a writer comes: a read is a hang
    return tmp_path


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def accepted(folder: Path, model: Path) -> list[dict]:
    result = predict("spokenwords.predict_onnx", folder, "--json", "--model", str(model), *WORDS)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_small_model_answers_and_so_does_it_with_its_weights_in_a_file_beside_it(folder):
    inline = accepted(folder, write(small_model(), folder / "models/inline.onnx"))
    assert [answer["file"] for answer in inline] == WORDS and all(answer["label"] in LABELS for answer in inline)
    (folder / "models/weights.bin").write_bytes(WEIGHTS.tobytes())
    beside = accepted(folder, write(external(small_model(), "weights.bin"), folder / "models/beside.onnx"))
    assert beside == inline
    (folder / "models/data").mkdir()
    (folder / "models/data/weights.bin").write_bytes(WEIGHTS.tobytes())
    below = accepted(folder, write(external(small_model(), "data/weights.bin"), folder / "models/below.onnx"))
    assert below == inline


def op_outside(model: onnx.ModelProto, op: str, domain: str = "") -> onnx.ModelProto:
    model.graph.node.append(helper.make_node(op, ["logits"], ["unused"], domain=domain))
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def with_if(model: onnx.ModelProto) -> onnx.ModelProto:
    """An ``If`` whose branches are graphs: control flow no export has."""
    branch = helper.make_graph(
        [helper.make_node("Identity", ["logits"], ["out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    condition = numpy_helper.from_array(np.array(True), "condition")
    model.graph.initializer.append(condition)
    model.graph.node.append(helper.make_node("If", ["condition"], ["chosen"], then_branch=branch, else_branch=branch))
    return model


def huge_initializer(model: onnx.ModelProto) -> onnx.ModelProto:
    """``w`` claims a million by a million floats, and holds twelve bytes."""
    weights = model.graph.initializer[0]
    del weights.dims[:]
    weights.dims.extend([10**6, 10**6])
    weights.raw_data = b"\0" * 12
    return model


def short_initializer(model: onnx.ModelProto) -> onnx.ModelProto:
    """``w`` declares a fourth column its data does not hold."""
    weights = model.graph.initializer[0]
    weights.dims[1] = 4
    return model


def huge_dimension(model: onnx.ModelProto) -> onnx.ModelProto:
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 10**12
    return model


def huge_expand(model: onnx.ModelProto) -> onnx.ModelProto:
    """An ``Expand`` (an op the exports use) to a constant shape of a trillion rows: terabytes at run time."""
    model.graph.initializer.append(numpy_helper.from_array(np.array([10**12, 3], np.int64), "shape"))
    model.graph.node.append(helper.make_node("Expand", ["logits", "shape"], ["big"]))
    return model


def huge_expand_beside(model: onnx.ModelProto, models: Path) -> onnx.ModelProto:
    """The same shape kept in a file beside the model: checked once that file is read, before onnxruntime runs."""
    model = huge_expand(model)
    shape = model.graph.initializer[-1]
    (models / "shape.bin").write_bytes(shape.raw_data)
    onnx.external_data_helper.set_external_data(shape, "shape.bin", offset=0, length=len(shape.raw_data))
    shape.data_location = TensorProto.EXTERNAL
    shape.ClearField("raw_data")
    return model


def metadata(**changes: str) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    def change(model: onnx.ModelProto) -> onnx.ModelProto:
        del model.metadata_props[:]
        helper.set_model_props(model, {**METADATA, **changes})
        return model

    return change


def link_outside(model: onnx.ModelProto, models: Path) -> onnx.ModelProto:
    (models / "weights.bin").symlink_to(models.parent / "outside/secret.bin")
    return external(model, "weights.bin")


def link_to_fifo(model: onnx.ModelProto, models: Path) -> onnx.ModelProto:
    (models / "weights.bin").symlink_to(models.parent / "outside/fifo")
    return external(model, "weights.bin")


def fifo_inside(model: onnx.ModelProto, models: Path) -> onnx.ModelProto:
    os.mkfifo(models / "pipe.bin")
    return external(model, "pipe.bin")


def longer_than_its_file(model: onnx.ModelProto, models: Path) -> onnx.ModelProto:
    (models / "weights.bin").write_bytes(WEIGHTS.tobytes()[:100])
    return external(model, "weights.bin")


# name: (what makes the model hostile, given the model and its folder; the key fact its refusal states)
HOSTILE = {
    "op If": (lambda model, _: with_if(model), "uses operator 'If' of domain 'ai.onnx'"),
    "op of another domain": (
        lambda model, _: op_outside(model, "Exec", "com.example"),
        "uses operator 'Exec' of domain 'com.example'",
    ),
    "op outside the set": (lambda model, _: op_outside(model, "Identity"), "uses operator 'Identity'"),
    "huge initializer": (lambda model, _: huge_initializer(model), "claims 1,000,000,000,000 values"),
    "initializer short of its shape": (lambda model, _: short_initializer(model), "declares 32,000 values"),
    "huge dimension": (
        lambda model, _: huge_dimension(model),
        f"input 'waveform' declares a dimension of 1,000,000,000,000 (at most {MAX_DIMENSION:,})",
    ),
    "huge constant shape": (lambda model, _: huge_expand(model), "Expand node takes a size of 1,000,000,000,000"),
    "huge constant shape beside it": (huge_expand_beside, "Expand node takes a size of 1,000,000,000,000"),
    "fixed batch": (lambda model, _: small_model(batch=1), "input 'waveform' has a fixed batch size of 1"),
    "labels not JSON": (lambda model, _: metadata(label_names="yes,no")(model), "metadata label_names is 'yes,no'"),
    "absurd clip length": (lambda model, _: metadata(samples=str(10**12))(model), "metadata samples is"),
    "external ../../etc/passwd": (
        lambda model, _: external(model, "../../etc/passwd"),
        "tensor 'w' points at external data '../../etc/passwd', outside the model's folder",
    ),
    "external absolute path": (
        lambda model, _: external(model, "/etc/passwd"),
        "points at external data '/etc/passwd', outside the model's folder",
    ),
    "external FIFO outside": (
        lambda model, _: external(model, "../outside/fifo"),
        "points at external data '../outside/fifo', outside the model's folder",
    ),
    "external link leading outside": (link_outside, "'weights.bin', a link that leads outside the model's folder"),
    "external link to a FIFO outside": (link_to_fifo, "'weights.bin', a link that leads outside the model's folder"),
    "external FIFO inside": (fifo_inside, "'pipe.bin', which is not a regular file"),
    "external file too short": (
        longer_than_its_file,
        "the external data length of tensor 'w' is '96000', not a whole number from 0 to 100",
    ),
    "external file missing": (lambda model, _: external(model, "absent.bin"), "'absent.bin', which is missing"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_model_is_refused_in_one_line_before_anything_it_points_at_is_read(folder, case):
    """Several files, so a pool would start if the refusal came late; a FIFO it reads would hang the run."""
    make, fact = HOSTILE[case]
    models = folder / "models"
    models.mkdir()
    model = write(make(small_model(), models), models / "model.onnx")
    before, marker = files_under(folder), uuid.uuid4().hex
    result = predict("spokenwords.predict_onnx", folder, "--model", str(model), *WORDS, marker=marker, timeout=120)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"error: {model} is refused: ")
    assert fact in result.stderr, result.stderr
    assert files_under(folder) == before and processes_with(marker) == []


def test_a_model_that_is_not_one_is_refused_in_one_line(folder):
    good = small_model().SerializeToString()
    cases = {
        "truncated.onnx": (good[: len(good) // 2], "is not a valid ONNX model (cannot parse it"),
        "random.onnx": (np.random.default_rng(0).bytes(4096), "is not a valid ONNX model ("),
        "empty.onnx": (b"", "is not a valid ONNX model (it holds no graph)"),
        "huge.onnx": (None, "is refused: it is 200 MB, more than the 100 MB predict_onnx takes"),
    }
    for name, (data, fact) in cases.items():
        path = folder / name
        if data is None:
            with path.open("wb") as handle:  # sparse: 200 MB that take no disk, refused from their size alone
                handle.truncate(200 * 2**20)
        else:
            path.write_bytes(data)
        result = predict("spokenwords.predict_onnx", folder, "--model", name, *WORDS)
        assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"error: {name} {fact}"), result.stderr


def test_the_pytorch_predictor_takes_no_onnx_model(folder):
    """``spokenwords.predict`` loads only checkpoints, with ``weights_only``: an ONNX file is refused as one."""
    write(small_model(), folder / "model.onnx")
    result = predictor("predict", folder, "--model", "model.onnx", *WORDS, check=False)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert (
        result.stderr.startswith("error: model.onnx is not a safe model checkpoint (")
        and len(result.stderr.splitlines()) == 1
    )


def test_the_allowed_operators_are_those_of_the_exports():
    """The set is the exports' (tests/models/test_export.py loads every model's through the check): spot checks that it
    holds their front ends and int8 kernels, and none of the ops that read files, loop or make tensors from nothing.
    """
    assert {"Conv", "MatMul", "LayerNormalization", "QLinearConv", "QuantizeLinear"} <= ALLOWED_OPS[""]
    assert ALLOWED_OPS["com.microsoft"] == {"QGemm"}
    assert not {"If", "Loop", "Scan", "Constant", "ConstantOfShape", "Tile", "Resize", "Identity"} & ALLOWED_OPS[""]

"""The exported model on onnxruntime, with no torch: checked before onnxruntime sees it, then run as one object.

A model file is checked first (``checked_model``): it must parse, use only the operators this project's exports use
(``ALLOWED_OPS``), declare sane shapes and sizes, and keep any external data in files inside its own folder; that
data is read only once every check passed. Anything else is refused in one line. The file carries its label names
and audio settings in its metadata; for the ``embedding`` model it is the head, and the feature step is the speech
embedding's own two ONNX graphs, as in training (``spokenwords/models/embedding.py``).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import onnxruntime

from spokenwords.audio.shaping import MAX_SAMPLE_RATE, MAX_SECONDS, MIN_SAMPLE_RATE
from spokenwords.cli import UserError
from spokenwords.inference import predictor
from spokenwords.models import embedding

FLOAT, INT64, EXTERNAL = 1, 7, 1  # TensorProto's FLOAT and INT64 types, and its EXTERNAL data location
# written by the export stage: JSON list of label names, sample rate, clip samples, and the inputs the graph takes
# (comma-separated names)
METADATA = ("label_names", "sample_rate", "samples", "input")
EMBEDDINGS = "embeddings"  # the input of an embedding head: [clips, windows, 96]
WAVEFORM = "waveform"  # the input of a whole waveform model: [clips, 1, samples]
# The operators of every model this project exports, float32 and int8 (m5, dscnn, bcresnet, embedding, ensemble, at
# their default and test sizes and every normalisation): collected from the exported files; tests/models/test_export.py
# exports each model and loads it through this check. By domain ("" is the standard ai.onnx).
ALLOWED_OPS = {
    "": frozenset(
        [
            "Add",
            "BatchNormalization",
            "Cast",
            "Clip",
            "Concat",
            "Conv",
            "Cos",
            "DequantizeLinear",
            "Div",
            "Expand",
            "Gemm",
            "LayerNormalization",
            "Log",
            "MatMul",
            "Max",
            "MaxPool",
            "Min",
            "Mod",
            "Mul",
            "Neg",
            "Pad",
            "Pow",
            "QLinearConv",
            "QLinearMatMul",
            "QuantizeLinear",
            "ReduceMax",
            "ReduceMean",
            "Relu",
            "Reshape",
            "Shape",
            "Sigmoid",
            "Sin",
            "Slice",
            "Softmax",
            "Split",
            "Sqrt",
            "Sub",
            "Transpose",
            "Unsqueeze",
        ]
    ),
    "com.microsoft": frozenset({"QGemm"}),
}
MAX_MODEL_BYTES = 100 * 2**20  # the file and its external data together; this project's models are under 1 MB
MAX_DIMENSION = 2**25  # a declared dimension or constant size: above the 23 million samples of 60 s at 384 kHz
MAX_VALUES = 2**28  # any one tensor (1 GiB of float32)
# Bytes per value of the tensor types a model may hold, by TensorProto data type, and the field that holds them
# when they are not raw bytes.
TENSOR_TYPES = {
    1: (4, "float_data"),  # FLOAT
    2: (1, "int32_data"),  # UINT8
    3: (1, "int32_data"),  # INT8
    4: (2, "int32_data"),  # UINT16
    5: (2, "int32_data"),  # INT16
    6: (4, "int32_data"),  # INT32
    7: (8, "int64_data"),  # INT64
    9: (1, "int32_data"),  # BOOL
    10: (2, "int32_data"),  # FLOAT16
    11: (8, "double_data"),  # DOUBLE
    12: (4, "uint64_data"),  # UINT32
    13: (8, "uint64_data"),  # UINT64
    16: (2, "int32_data"),  # BFLOAT16
}
# The operand that sets how large an op's output is: a constant there is bounded like a declared dimension.
GROWING = {"Expand": 1, "Pad": 1}
SCALAR_ATTRIBUTES = frozenset({1, 2, 3, 6, 7, 8})  # AttributeProto FLOAT, INT, STRING, FLOATS, INTS, STRINGS


def quoted(value: str) -> str:
    """A name from the file, quoted on one line and cut short: it may hold anything."""
    return ascii(value if len(value) <= 80 else value[:80] + "...")


def number(value: str, what: str, low: int, high: int) -> int:
    """``value`` as an integer from ``low`` to ``high``, or a refusal naming ``what``."""
    try:
        parsed = int(value)
    except ValueError:
        parsed = None
    if parsed is None or not low <= parsed <= high:
        raise ValueError(f"{what} is {quoted(value)}, not a whole number from {low} to {high}")
    return parsed


def external_location(folder: Path, tensor) -> tuple[Path, int, int]:
    """The file, offset and length of a tensor's external data, refused unless the file lies inside ``folder``
    (the model's, resolved), also once links are followed, and is a regular file. Reads nothing from it.
    """
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location, name = entries.get("location", ""), quoted(tensor.name)
    if not location or "\0" in location:
        raise ValueError(f"tensor {name} has external data without a usable location")
    parts = location.replace("\\", "/").split("/")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise ValueError(f"tensor {name} points at external data {quoted(location)}, outside the model's folder")
    resolved = Path(os.path.realpath(folder / location))
    if not resolved.is_relative_to(folder):
        raise ValueError(
            f"tensor {name} points at external data {quoted(location)}, a link that leads outside the model's folder"
        )
    try:
        found = resolved.stat()
    except OSError:
        raise ValueError(f"tensor {name} points at external data {quoted(location)}, which is missing") from None
    if not stat.S_ISREG(found.st_mode):
        raise ValueError(f"tensor {name} points at external data {quoted(location)}, which is not a regular file")
    offset = number(entries.get("offset", "0"), f"the external data offset of tensor {name}", 0, found.st_size)
    length = entries.get("length", str(found.st_size - offset))
    return resolved, offset, number(length, f"the external data length of tensor {name}", 0, found.st_size - offset)


def check_tensor(tensor, external: int | None = None) -> None:
    """Refuse a tensor of a type no model holds, of absurd size, or whose data (``external`` bytes of it, when
    elsewhere) does not match the shape it declares.
    """
    name = quoted(tensor.name)
    if tensor.data_type not in TENSOR_TYPES:
        raise ValueError(f"tensor {name} has data type {tensor.data_type}, which no model of this project holds")
    if any(size < 0 for size in tensor.dims):
        raise ValueError(f"tensor {name} declares a negative dimension {list(tensor.dims)}")
    values = int(np.prod(tensor.dims, dtype=object))
    if values > MAX_VALUES:
        raise ValueError(f"tensor {name} claims {values:,} values (at most {MAX_VALUES:,})")
    width, field = TENSOR_TYPES[tensor.data_type]
    stored = external if external is not None else len(tensor.raw_data) if tensor.raw_data else None
    if stored is None and len(getattr(tensor, field)) != values:
        raise ValueError(f"tensor {name} declares {values:,} values but holds {len(getattr(tensor, field)):,}")
    if stored is not None and stored != values * width:
        raise ValueError(
            f"tensor {name} declares {values:,} values ({values * width:,} bytes) but holds {stored:,} bytes"
        )


def check_value(value, kind: str) -> None:
    """Refuse a declared graph input, output or intermediate with an absurd dimension."""
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and not 0 <= dim.dim_value <= MAX_DIMENSION:
            raise ValueError(
                f"{kind} {quoted(value.name)} declares a dimension of {dim.dim_value:,} (at most {MAX_DIMENSION:,})"
            )


def plain(attribute) -> bool:
    """Whether a node attribute is numbers or strings: no exported node carries a tensor or a graph in one."""
    carries = attribute.HasField("t") or attribute.HasField("g") or attribute.HasField("sparse_tensor")
    return attribute.type in SCALAR_ATTRIBUTES and not carries and not (attribute.tensors or attribute.graphs)


def constant_values(tensor) -> np.ndarray:
    """The values of an int64 initializer, its data in the file (checked by ``check_tensor`` first)."""
    return np.frombuffer(tensor.raw_data, "<i8") if tensor.raw_data else np.array(tensor.int64_data, dtype=np.int64)


def check_metadata(metadata: dict[str, str]) -> dict:
    """The export stage's metadata, parsed, or a refusal naming the key that makes no sense."""
    try:
        labels = json.loads(metadata["label_names"])
    except ValueError:
        labels = None
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"its metadata label_names is {quoted(metadata['label_names'])}, not a JSON list of names")
    rate = number(metadata["sample_rate"], "its metadata sample_rate", MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
    samples = number(metadata["samples"], "its metadata samples", 1, round(rate * MAX_SECONDS))
    inputs = metadata["input"].split(",")
    if not inputs or len(set(inputs)) != len(inputs) or not set(inputs) <= {EMBEDDINGS, WAVEFORM}:
        raise ValueError(f"its metadata input is {quoted(metadata['input'])}, not {EMBEDDINGS} and/or {WAVEFORM}")
    return {"label_names": labels, "sample_rate": rate, "samples": samples, "input": inputs}


def check_graph(model, settings: dict) -> None:
    """Refuse what no exported model holds (functions, subgraphs, tensor attributes, sparse tensors, operators
    outside ``ALLOWED_OPS``), absurd shapes and sizes, and inputs and outputs other than the metadata says.
    """
    graph = model.graph
    if model.functions or graph.sparse_initializer or model.training_info:
        raise ValueError("it holds functions, sparse tensors or training graphs, which no model of this project has")
    for node in graph.node:
        if node.op_type not in ALLOWED_OPS.get(node.domain if node.domain != "ai.onnx" else "", ()):
            raise ValueError(
                f"it uses operator {quoted(node.op_type)} of domain {quoted(node.domain or 'ai.onnx')}, which no "
                "model of this project uses (see docs/deployment.md for the operators predict_onnx runs)"
            )
        if not all(plain(attribute) for attribute in node.attribute):
            raise ValueError(f"its {node.op_type} node carries a tensor or a graph as an attribute")
    for kind, values in (("input", graph.input), ("output", graph.output), ("value", graph.value_info)):
        for value in values:
            check_value(value, kind)
    constants = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in constants]
    if [value.name for value in inputs] != settings["input"]:
        names = ",".join(value.name for value in inputs)
        raise ValueError(f"its inputs are {quoted(names)}, but its metadata says {','.join(settings['input'])}")
    samples, classes = settings["samples"], len(settings["label_names"])
    for value in inputs:
        shape = value.type.tensor_type.shape.dim
        if value.type.tensor_type.elem_type != FLOAT or len(shape) != 3:
            raise ValueError(f"its input {quoted(value.name)} is not a float32 tensor of three dimensions")
        if shape[0].HasField("dim_value"):
            raise ValueError(
                f"its input {quoted(value.name)} has a fixed batch size of {shape[0].dim_value}; predict_onnx needs "
                "the dynamic batch axis the export stage writes"
            )
        expected = [1, samples] if value.name == WAVEFORM else [None, embedding.EMBEDDING_SIZE]
        for dim, size in zip(shape[1:], expected, strict=True):
            if dim.HasField("dim_value") and size is not None and dim.dim_value != size:
                raise ValueError(f"its input {quoted(value.name)} does not take clips of {samples} samples")
    outputs = [value.type.tensor_type.shape.dim for value in graph.output]
    if not outputs or len(outputs[0]) != 2 or outputs[0][1].dim_value not in (0, classes):
        raise ValueError(f"its first output is not the logits of its {classes} labels")


def check_constant_sizes(graph) -> None:
    """Refuse a constant size beyond ``MAX_DIMENSION`` given to an op that grows its output (``GROWING``): a model
    may declare sane shapes and still ask onnxruntime for terabytes at run time. Runs once external data is read.
    """
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        position = GROWING.get(node.op_type, len(node.input))
        tensor = constants.get(node.input[position]) if position < len(node.input) else None
        if tensor is not None and tensor.data_type == INT64:
            largest = int(np.abs(constant_values(tensor)).max(initial=0))
            if largest > MAX_DIMENSION:
                raise ValueError(f"its {node.op_type} node takes a size of {largest:,} (at most {MAX_DIMENSION:,})")


def first_line(error: Exception) -> str:
    """The first line of an error from a library, or its type when it says nothing."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def checked_model(path: Path) -> tuple[bytes, dict]:
    """The model's bytes for onnxruntime, its external data read into them, and its parsed metadata, once the file
    passed every check; else a ``UserError`` naming what is wrong. Only the model file itself is read before every
    structural check passed, external data's locations included; an external file is read only then.
    """
    shown = predictor.display(path)
    if not path.exists():
        raise UserError(f"{shown} is missing: run `dvc repro export` first")
    if not path.is_file():
        raise UserError(f"{shown} is refused: it is not a regular file")
    limit = MAX_MODEL_BYTES // 2**20
    size = path.stat().st_size
    if size <= MAX_MODEL_BYTES:
        with path.open("rb") as handle:  # at most the limit, should the file grow meanwhile
            data = handle.read(MAX_MODEL_BYTES + 1)
    if size > MAX_MODEL_BYTES or len(data) > MAX_MODEL_BYTES:
        raise UserError(
            f"{shown} is refused: it is {size / 2**20:,.0f} MB, more than the {limit} MB predict_onnx takes"
        )
    model = embedding.onnx_protos().ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:  # protobuf's DecodeError, or RuntimeError from its C++ parser
        raise UserError(f"{shown} is not a valid ONNX model (cannot parse it: {first_line(error)})") from None
    if not model.graph.node:
        raise UserError(f"{shown} is not a valid ONNX model (it holds no graph)")
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    missing = [key for key in METADATA if key not in metadata]
    if missing:
        raise UserError(f"{shown} was not written by the export stage: its metadata lacks {', '.join(missing)}")
    folder = path.parent.resolve()
    try:
        outside = []
        for tensor in model.graph.initializer:
            if tensor.data_location == EXTERNAL or tensor.external_data:
                outside.append((tensor, *external_location(folder, tensor)))
                check_tensor(tensor, outside[-1][3])
            else:
                check_tensor(tensor)
        if len(data) + sum(length for *_, length in outside) > MAX_MODEL_BYTES:
            raise ValueError(f"its external data makes it larger than {limit} MB, the most predict_onnx takes")
        settings = check_metadata(metadata)
        check_graph(model, settings)
        for tensor, location, offset, length in outside:
            with location.open("rb") as handle:
                handle.seek(offset)
                tensor.raw_data = handle.read(length)
            if len(tensor.raw_data) != length:
                raise ValueError(f"its external data file {quoted(location.name)} changed while it was read")
            tensor.data_location = 0
            del tensor.external_data[:]
        check_constant_sizes(model.graph)
    except ValueError as refusal:
        raise UserError(f"{shown} is refused: {refusal}") from None
    return (model.SerializeToString() if outside else data), settings


class OnnxModel:
    """An exported model in an onnxruntime session, with the metadata the export stage wrote into it."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        data, settings = checked_model(path)
        self.path = path
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads  # 0: onnxruntime's default, every core
        try:
            self.session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for every kind of bad file
            raise UserError(f"{predictor.display(path)} is not a valid ONNX model ({first_line(error)})") from None
        self.label_names: list[str] = settings["label_names"]
        self.sample_rate: int = settings["sample_rate"]
        self.samples: int = settings["samples"]
        self.inputs: list[str] = settings["input"]

    def features(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs for ``[clips, samples]`` audio, by name: embeddings, waveforms, or both (an ensemble)."""
        return {
            name: embedding.embed_batch(clips) if name == EMBEDDINGS else clips[:, None].astype(np.float32)
            for name in self.inputs
        }

    def logits_of(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Logits ``[clips, classes]`` of a batch of the graph's inputs; a graph that fails or answers in another
        shape ends the run in one line.
        """
        count = len(next(iter(features.values())))
        try:
            logits = self.session.run(None, features)[0]
        except Exception as error:  # onnxruntime's untyped errors: a graph that cannot run on real inputs
            raise UserError(f"{predictor.display(self.path)} failed on the audio ({first_line(error)})") from None
        if logits.shape != (count, len(self.label_names)):
            raise UserError(
                f"{predictor.display(self.path)} answered {list(logits.shape)} for {count} clips, not "
                f"{len(self.label_names)} logits per clip"
            )
        return logits

    def logits(self, clips: np.ndarray) -> np.ndarray:
        """Logits ``[clips, classes]`` of ``[clips, samples]`` prepared audio."""
        return self.logits_of(self.features(clips))


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)

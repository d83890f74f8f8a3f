"""Stage `export`: the trained model as ONNX, float32 and int8 (``spokenwords.models.onnx_export``), scored on the
test split through onnxruntime against PyTorch; the stage fails, writing no model, if int8 loses more than
``export.max_int8_drop`` points of test accuracy.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

import torch

from spokenwords import params
from spokenwords.cli import run
from spokenwords.data.processed_splits import check_fits, load_split
from spokenwords.fileio import atomic_path, ensure_space, write_json
from spokenwords.inference.onnx_model import OnnxModel
from spokenwords.models.checkpoint import load_checkpoint
from spokenwords.models.onnx_export import (
    check_int8,
    examples_of,
    export_metrics,
    exportable,
    file_size,
    graph_inputs,
    latency_calls,
    median_ms,
    onnx_metadata,
    onnx_predictions,
    pytorch_predictions,
    spread,
    write_models,
)
from spokenwords.params import ExportParams
from spokenwords.paths import EXPORT_LATENCY, EXPORT_METRICS, INT8_MODEL, MODEL, ONNX_MODEL, split_file


def main() -> None:
    config = params.load(ExportParams)
    torch.set_num_threads(config.threads)
    model, checkpoint = load_checkpoint(MODEL)
    module, inputs = exportable(model)
    train, test = load_split(split_file("train")), load_split(split_file("test"))
    check_fits(MODEL, checkpoint, split_file("test"), test)
    calibration_clips = train["waveforms"][spread(config.calibration_clips, len(train["labels"]))]
    test_features, calibration = graph_inputs(inputs, test["waveforms"]), graph_inputs(inputs, calibration_clips)
    actual = test["labels"].numpy()
    predicted = {"pytorch": pytorch_predictions(model, inputs, test_features)}
    with tempfile.TemporaryDirectory(prefix="export-") as folder:
        metadata = onnx_metadata(checkpoint, inputs)
        work = write_models(module, examples_of(test_features), calibration, folder, metadata)
        onnx_models = {kind: OnnxModel(path, threads=config.threads) for kind, path in work.items()}
        predicted |= {kind: onnx_predictions(onnx_model, test_features) for kind, onnx_model in onnx_models.items()}
        accuracy = {kind: float((labels == actual).mean()) for kind, labels in predicted.items()}
        check_int8(accuracy["float32"], accuracy["int8"], config.max_int8_drop)
        latency_clips = test["waveforms"][: config.latency_clips, 0].numpy()
        with torch.inference_mode():
            latency = median_ms(latency_calls(model, onnx_models, inputs), latency_clips)
        sizes = {kind: file_size(path) for kind, path in work.items()}
        ensure_space(ONNX_MODEL.parent, sum(sizes.values()))  # both or neither: not a new float32 beside an old int8
        for kind, target in (("float32", ONNX_MODEL), ("int8", INT8_MODEL)):
            with atomic_path(target) as tmp:
                shutil.copyfile(work[kind], tmp)
    # Latencies differ on every run, so they go to an untracked log, as train's epoch seconds do: a rerun of the
    # pipeline then reproduces a clean `git status`.
    runtimes = {kind: {"latency_ms": milliseconds} for kind, milliseconds in latency.items()}
    write_json(EXPORT_LATENCY, {"latency_clips": len(latency_clips), "threads": config.threads, **runtimes})
    write_json(EXPORT_METRICS, export_metrics(checkpoint, inputs, calibration, actual, predicted, sizes))
    summary = ", ".join(
        f"{kind} {100 * accuracy[kind]:.2f} % ({sizes[kind] / 1024:.0f} kB, {latency[kind]:.2f} ms)" for kind in work
    )
    print(
        f"{ONNX_MODEL}, {INT8_MODEL}: test accuracy {summary}; PyTorch {100 * accuracy['pytorch']:.2f} % "
        f"({latency['pytorch']:.2f} ms per clip)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)

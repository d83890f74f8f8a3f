"""The teaching notebook's exact run as a DVC experiment: ``python -m tools.notebook`` (or ``make notebook``).

M5 (25,290 parameters) on 8 kHz waveforms with the notebook's loop: Adam, lr 0.01, weight decay 1e-4, batch 256,
10 epochs, no schedule, no label smoothing; the synthetic data without Piper or Kokoro clips. Every other setting is
``params.yaml``'s. The tests and benchmarks train with these same values
(``tools.project.write_params(notebook=True)``).
"""

from __future__ import annotations

import subprocess
import sys

NOTEBOOK: dict[str, dict] = {
    "data": {"piper_clips": 0, "kokoro_clips": 0},
    "preprocess": {"sample_rate": 8000},
    "model": {"name": "m5"},
    "train": {
        "epochs": 10,
        "batch_size": 256,
        "lr": 0.01,
        "weight_decay": 0.0001,
        "schedule": "none",
        "warmup_epochs": 0.0,
        "label_smoothing": 0.0,
        "augment": False,
    },
}


def overrides() -> list[str]:
    """``-S section.key=value`` arguments for ``dvc exp run``."""
    return [
        argument
        for section, values in NOTEBOOK.items()
        for key, value in values.items()
        for argument in ("-S", f"{section}.{key}={str(value).lower() if isinstance(value, bool) else value}")
    ]


def main() -> None:
    command = [sys.executable, "-m", "dvc", "exp", "run", "-n", "notebook", *overrides(), *sys.argv[1:]]
    print(" ".join(command[2:]), file=sys.stderr)
    sys.exit(subprocess.call(command))


if __name__ == "__main__":
    main()

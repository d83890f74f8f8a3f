"""Stage `train`: train the configured model (``spokenwords.training.loop``), on one process or several
(``train.processes``), and write the model, its history and metrics. An ensemble is saved as one model.
"""

from __future__ import annotations

import statistics
import sys

from spokenwords import params
from spokenwords.cli import run
from spokenwords.fileio import write_json, write_text
from spokenwords.models.checkpoint import save_checkpoint
from spokenwords.params import AugmentParams, ModelParams, TrainParams
from spokenwords.paths import HISTORY, MODEL, TRAIN_METRICS, TRAIN_TIMING
from spokenwords.runtime import select_device
from spokenwords.training.distributed import check_launch, current_world, launch
from spokenwords.training.loop import Trained, ensemble_metrics, history_csv, member_metrics, train


def write_outputs(trained: Trained, config: TrainParams) -> None:
    """The stage's outputs, each written atomically: model, history, metrics, and the timing log. An ensemble's
    history is its members' one after the other, its epochs numbered on.
    """
    save_checkpoint(MODEL, trained.model, trained.config_of_model, trained.label_names, trained.audio)
    history, epoch_seconds = [], []
    for result in trained.fitted:
        history += [{**row, "epoch": row["epoch"] + len(history)} for row in result.history]
        epoch_seconds += result.epoch_seconds
    write_text(HISTORY, history_csv(history))
    if trained.config_of_model["name"] == "ensemble":
        metrics = ensemble_metrics(trained.model, trained.config_of_model, trained.fitted, config, trained.device)
    else:
        metrics = member_metrics(trained.fitted[0])
    write_json(TRAIN_METRICS, metrics)
    median = statistics.median(epoch_seconds)
    write_json(
        TRAIN_TIMING,
        {
            "device": str(trained.device),
            "epoch_seconds": [round(value, 3) for value in epoch_seconds],
            "median": median,
        },
    )
    kept = ", ".join(f"epoch {result.kept['epoch']}" for result in trained.fitted)
    print(f"saved {MODEL} ({kept}); median {median:.2f}s per epoch", file=sys.stderr)


def main() -> None:
    config = params.load(TrainParams)
    world = current_world()
    if config.processes > 1 and world.size == 1:
        check_launch(config.processes, config.batch_size, select_device(config.device))
        launch(config.processes)
        return
    trained = train(config, params.load(ModelParams), params.load(AugmentParams))
    if trained is not None:  # the main process writes the outputs
        write_outputs(trained, config)
        trained.clear_states()


if __name__ == "__main__":
    run(main)

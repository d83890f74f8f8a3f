"""Ctrl-C and SIGTERM during synthesis: every worker stops at once, none is left behind, and data/raw is not written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import environment, write_params


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_an_interrupted_synthesis_stops_every_worker_and_writes_nothing(tmp_path, how):
    write_params(tmp_path, data={"synthetic_clips": 2000, "piper_clips": 200, "kokoro_clips": 40})
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.download"],
        cwd=tmp_path,
        env=environment(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job has
        # and Ctrl-C's default action, as a foreground job has: a test run started in the background of a script
        # inherits SIGINT ignored, and so would the stage
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any((tmp_path / "data").glob(".raw.*/*/*.wav")):
        workers = psutil.Process(process.pid).children(recursive=True) or workers
        time.sleep(0.1)
    assert workers, "the pool's workers were running"

    sent = time.monotonic()
    if how == "sigterm":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    _, stderr = process.communicate(timeout=30)
    stopped = time.monotonic() - sent

    assert stopped < 10, f"took {stopped:.1f} s to stop"
    assert process.returncode == 130, stderr
    assert "interrupted: no output was written" in stderr and "Traceback" not in stderr
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"orphan workers: {alive}"
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir()), "no data/raw, no temp folder"

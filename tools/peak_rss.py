"""Run a Python module as ``python -m`` would and record the peak memory of its own process and of its workers.

    python -m tools.peak_rss REPORT.json stages.preprocess

Writes both peaks, in MB, into ``REPORT.json`` however the module exits (before interpreter shutdown, which adds a
roughly constant 100 MB or so as modules are torn down). The main process's peak is its ``VmHWM``: ``ru_maxrss``
would also count the resident set of the process that started it, which the kernel carries over an ``exec``. A
worker's peak (``ru_maxrss`` of the children waited for) counts the pages it shares with the main process since the
fork, as every RSS does.
"""

from __future__ import annotations

import json
import resource
import runpy
import sys
from pathlib import Path


def peaks_mb() -> dict[str, float]:
    """Peak RSS of this process, and the largest of the child processes it has waited for (0 if none)."""
    status = Path("/proc/self/status").read_text()
    high_water_kb = int(status.split("VmHWM:")[1].split()[0])
    return {
        "main_mb": high_water_kb / 1024,
        "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def main() -> None:
    report, module, *arguments = sys.argv[1:]
    sys.argv = [module, *arguments]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        Path(report).write_text(json.dumps(peaks_mb()) + "\n")


if __name__ == "__main__":
    main()

"""What both predictors share, torch-free: the options, preparing files on worker processes, batching the clips
through the model, and the per-file answers they print.

``spokenwords/predict.py`` (the PyTorch checkpoint) and ``spokenwords/predict_onnx.py`` (the exported model, no torch)
differ only in how a file becomes a clip and a batch of clips becomes rankings; one loop here keeps their output and
exit codes the same. With more than one file, files are decoded, resampled and cut (the costly, per-file part) on a pool
of worker processes, one per core, each on one thread, while the main process runs the model on batches of clips on one
thread. The workers run at most about two batches ahead of the model and results are taken in input order, so memory
does not grow with the number of files and every answer is printed in the order given, a batch at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np

from spokenwords import params
from spokenwords.audio.shaping import BadAudio, NoSpeech
from spokenwords.cli import UserError
from spokenwords.params import EvaluateParams

Ranking = list[tuple[str, float]]
BATCH = 32  # files per model call: enough to amortise a call, small enough to stream answers
CHUNK = 8  # files per task sent to a worker: amortises the pickling of a task and its result
# OpenBLAS's call that sets its thread count, as NumPy's wheel (scipy-openblas, 64-bit) and a plain build name it
OPENBLAS_THREADS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")


class Prepared(NamedTuple):
    """One file's prepared clip, or why there is none: ``silent`` for a readable file with no word in it (an answer,
    not a failure), else the reason it could not be read.
    """

    clip: np.ndarray | None
    reason: str = ""
    silent: bool = False


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--json``, the speed options, and the test-time shift options, defaulting to params.yaml's ``evaluate``
    section when there is one, so a prediction matches what was scored.
    """
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument(
        "--batch", type=int, default=BATCH, metavar="N", help="files per model call (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes that read and prepare the files (default: one per core, none on one core; 0: none)",
    )
    scored = params.load(EvaluateParams) if params.PARAMS_FILE.is_file() else EvaluateParams()
    parser.add_argument(
        "--test-time-shifts",
        type=int,
        default=scored.test_time_shifts,
        metavar="N",
        help="average over 2N+1 shifted copies (default: evaluate.test_time_shifts, %(default)s)",
    )
    parser.add_argument(
        "--shift-step-ms",
        type=float,
        default=scored.shift_step_ms,
        metavar="MS",
        help="the shift between copies (default: evaluate.shift_step_ms, %(default)s)",
    )


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, refusing negative shift counts, non-positive steps and batches, and negative worker counts;
    ``args.workers`` becomes the number of worker processes to start (0 for one file: a pool would only cost).
    """
    args = parser.parse_args(argv)
    if args.test_time_shifts < 0 or args.shift_step_ms <= 0:
        parser.error("--test-time-shifts must be >= 0 and --shift-step-ms > 0")
    if args.batch < 1 or (args.workers is not None and args.workers < 0):
        parser.error("--batch must be >= 1 and --workers >= 0")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = (cores if cores > 1 else 0) if args.workers is None else args.workers  # one core: nothing to overlap
    chunks = -(-len(args.files) // CHUNK)
    args.workers = min(wanted, chunks) if len(args.files) > 1 else 0
    return args


def one_thread() -> None:
    """Run the model on one thread in this process, for when the workers already keep every core busy: onnxruntime's
    spinning threads, or torch's, would only take time from them. ``spokenwords.models.embedding`` reads the variable
    when it makes its sessions; torch must be told too (``torch.set_num_threads``).
    """
    os.environ["OMP_NUM_THREADS"] = "1"


def prepare_safely(prepare: Callable[[Path], np.ndarray], path: Path) -> Prepared:
    """``prepare(path)``, or why it gave no clip."""
    try:
        return Prepared(prepare(path))
    except NoSpeech as silence:
        return Prepared(None, str(silence), silent=True)
    except BadAudio as error:
        return Prepared(None, str(error))


def _prepare_chunk(prepare: Callable[[Path], np.ndarray], paths: list[Path]) -> list[Prepared]:
    return [prepare_safely(prepare, path) for path in paths]


def _worker_start() -> None:
    # Ctrl-C reaches the whole process group: the main process stops the pool, the workers must not print tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_blas_thread()


def one_blas_thread() -> None:
    """Give NumPy's OpenBLAS one thread in this process: it runs a large product (a 44.1 kHz resampling kernel) on a
    thread per core, a count read when it was loaded, before a worker was forked. Set through OpenBLAS's own call,
    in the library found among those loaded; where there is none (another BLAS, no ``/proc``), nothing changes.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and "openblas" in Path(fields[5]).name:
                library = ctypes.CDLL(fields[5])
                for name in OPENBLAS_THREADS:
                    if hasattr(library, name):
                        getattr(library, name)(1)
                        return


def prepared(
    files: list[Path], prepare: Callable[[Path], np.ndarray], workers: int, batch: int = BATCH
) -> Iterator[Prepared]:
    """Every file prepared, in order: in this process when ``workers`` is 0, else on that many forked processes
    (``prepare`` must then pickle: a module-level function or a ``functools.partial`` of one), which work up to two
    batches of ``batch`` files ahead of the one taken. A worker that dies (a crash in a decoder, the kernel's OOM
    killer) ends the run with one line naming the first file it may have held.
    """
    if not workers:
        yield from (prepare_safely(prepare, path) for path in files)
        return
    chunks = (files[start : start + CHUNK] for start in range(0, len(files), CHUNK))
    window = workers + 2 * -(-batch // CHUNK)  # chunks in flight: every worker busy while the model runs
    # fork: the workers start in milliseconds with the parent's modules loaded (a fresh interpreter would import
    # torch again); the model is loaded on one thread, so no thread pool is running in the parent to be copied
    pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_worker_start)
    pending: deque[tuple[list[Path], Future]] = deque()
    try:
        for chunk in islice(chunks, window):
            pending.append((chunk, pool.submit(_prepare_chunk, prepare, chunk)))
        while pending:
            results = pending[0][1].result()
            for chunk in islice(chunks, 1):
                pending.append((chunk, pool.submit(_prepare_chunk, prepare, chunk)))
            pending.popleft()
            yield from results
    except BrokenProcessPool:  # from a result or a submission: the files from the oldest unfinished chunk on are lost
        first = pending[0][0][0] if pending else files[0]
        raise UserError(
            f"a worker process died (killed, or crashed by one of the files from {display(first)} on); "
            "run again with --workers 0 to find a file that crashes the decoder"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def text(value: str) -> str:
    """``value`` as valid Unicode for JSON: a lone surrogate (an undecodable byte of a name) as a ``\\udcff`` escape."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def name_fields(path: Path) -> dict[str, str]:
    """The JSON fields naming a file: ``file``, the name as text, exact whenever it is valid UTF-8 (JSON escapes
    newlines, quotes and the rest); and only for a name that is not, ``file_bytes``, its bytes in hex, since each
    undecodable byte shows as U+FFFD in ``file``: ``bytes.fromhex(line["file_bytes"])`` is the name.
    """
    raw = os.fsencode(path)
    name = raw.decode("utf-8", "replace")
    return {"file": name} if name.encode("utf-8") == raw else {"file": name, "file_bytes": raw.hex()}


def display(path: Path) -> str:
    """The name for a line of text: undecodable bytes as ``\\xff`` and control characters (a newline in a name) as
    Python escapes, so each answer stays on one line.
    """
    name = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in name)


def report(path: Path, result: Prepared, ranking: Ranking | None, as_json: bool) -> None:
    """Print one file's answer: its ranking, "no speech found", or its error (on stderr, and in ``--json`` also as
    an ``error`` line on stdout).
    """
    if ranking is not None:
        if as_json:
            top3 = [{"label": label, "probability": round(p, 6)} for label, p in ranking]
            answer = {"label": ranking[0][0], "probability": round(ranking[0][1], 6), "top3": top3}
            print(json.dumps({**name_fields(path), **answer}))
        else:
            alternatives = ", ".join(f"{label} {p:.3f}" for label, p in ranking)
            print(f"{display(path)}: {ranking[0][0]} ({ranking[0][1]:.3f})  top 3: {alternatives}")
    elif result.silent:
        if as_json:
            print(json.dumps({**name_fields(path), "label": None, "no_speech": True, "reason": text(result.reason)}))
        else:
            print(f"{display(path)}: {result.reason}")
    else:
        if as_json:
            print(json.dumps({**name_fields(path), "error": text(result.reason)}))
        print(f"error: {display(path)}: {text(result.reason)}", file=sys.stderr)


def answer(
    files: list[Path],
    prepare: Callable[[Path], np.ndarray],
    rank: Callable[[np.ndarray], list[Ranking]],
    as_json: bool,
    batch: int = BATCH,
    workers: int = 0,
) -> int:
    """Print each file's answer in input order, ``batch`` files at a time, and return how many failed.

    ``prepare`` turns a file into a ``[samples]`` clip (see ``prepared`` for ``workers``), ``rank`` a ``[clips,
    samples]`` batch into one ranking per clip. A batch's lines are flushed as soon as it is ranked. Ctrl-C stops
    the workers and ends the run with 130 and one line saying how many files were answered.
    """
    failures, answered = 0, 0
    group: list[tuple[Path, Prepared]] = []

    def flush() -> None:
        nonlocal answered
        clips = [result.clip for _, result in group if result.clip is not None]
        rankings = iter(rank(np.stack(clips)) if clips else [])
        for path, result in group:
            report(path, result, next(rankings) if result.clip is not None else None, as_json)
        sys.stdout.flush()
        answered += len(group)
        group.clear()

    try:
        with contextlib.closing(prepared(files, prepare, workers, batch)) as results:
            for path, result in zip(files, results, strict=True):
                if result.clip is None and not result.silent:
                    failures += 1
                group.append((path, result))
                if len(group) == batch:
                    flush()
        flush()
    except KeyboardInterrupt:
        print(f"interrupted: {answered:,} of {len(files):,} files answered", file=sys.stderr)
        sys.exit(130)
    return failures

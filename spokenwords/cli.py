"""Entry-point plumbing: user errors end in one clear line on stderr, never a traceback.

A full disk, an exceeded quota or a read-only place is the user's to fix too: ``run`` turns such an ``OSError``,
wherever it is raised and however a library wrapped it, into one line; ``spokenwords.fileio`` raises the more precise
``NoSpace``, which names the output and the bytes it needs.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import sys
from collections.abc import Callable, Collection
from pathlib import Path

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
CANNOT_WRITE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class UserError(Exception):
    """A problem the user can fix (bad param, bad file, bad archive); shown without a traceback."""


def os_error_in(error: BaseException | None, errnos: Collection[int]) -> OSError | None:
    """The first ``OSError`` with one of ``errnos`` in ``error``'s chain of causes and contexts.

    Libraries wrap a failed write: ``torch.save`` raises a ``RuntimeError`` whose context is the ``OSError``.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in errnos:
            return error
        error = error.__cause__ or error.__context__
    return None


def free_bytes(path: str | Path) -> int:
    """Bytes free to this user on the filesystem that holds ``path`` (or would: its nearest existing folder)."""
    place = Path(path).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free


def size_text(count: int) -> str:
    """``1.5 MB (1,500,000 bytes)``: decimal units, as ``df -H`` and file managers show them, and the exact count."""
    if count < 1000:
        return f"{count:,} bytes"
    units = ("kB", "MB", "GB", "TB")
    exponent = min(len(units), (len(str(count)) - 1) // 3)
    return f"{count / 1000**exponent:.1f} {units[exponent - 1]} ({count:,} bytes)"


class NoSpace(UserError):
    """No room on the disk (or in the quota) for ``path``, which needs ``needed`` bytes when known."""

    def __init__(self, path: str | Path, needed: int | None = None, quota: bool = False) -> None:
        self.path, self.needed, self.quota = Path(path), needed, quota
        if quota:  # the disk's free space says nothing about what is left of a quota
            room = f": it needs {size_text(needed)}" if needed is not None else ""
            super().__init__(f"disk quota exceeded for {path}{room}; free some of your quota and rerun")
            return
        free = free_bytes(path)
        if needed is not None and needed > free:
            room = f"it needs {size_text(needed)} and {size_text(free)} is free"
        else:  # unknown, or an estimate the write outgrew: all that is sure is that the free space is too little
            room = f"it needs more than the {size_text(free)} free"
        super().__init__(f"no space left on device for {path}: {room}; free some space and rerun")


def environment_error(error: BaseException) -> UserError | None:
    """One line for a full disk, an exceeded quota or a place this user may not write, else ``None``."""
    if (full := os_error_in(error, NO_SPACE)) is not None:
        written = full.filename2 or full.filename  # a copy names its source, then the file it was writing
        if written is None:  # a buffered write names no file, so not the disk either
            return UserError(f"{(full.strerror or 'no space left on device').lower()}; free some space and rerun")
        return NoSpace(written, quota=full.errno == errno.EDQUOT)
    if (denied := os_error_in(error, CANNOT_WRITE)) is not None:
        return UserError(f"{denied.filename or 'a file'}: {(denied.strerror or str(denied)).lower()}")
    return None


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end has closed: polling its writing end then reports an error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # no file descriptor behind sys.stdout
        return False


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main`` and turn ``UserError``, a full or read-only disk and Ctrl-C into a message and an
    exit code, and a reader of stdout that has gone (``predict ... | head``) into a quiet stop.
    """
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        if not stdout_reader_gone():  # another pipe broke (a worker's): a fault, not the user's reader leaving
            raise
        # as a Unix tool that SIGPIPE ends: no message, 128 + SIGPIPE; stdout goes to /dev/null so that Python's
        # flush at exit does not fail on the closed pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
    except Exception as error:
        line = environment_error(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)

"""Atomic writes: a killed stage leaves the previous complete file or none, never half of one.

A write that finds the disk full, the quota spent or the place read-only removes its temporary file (giving the space
back) and raises one line that names the output, not the temporary: ``NoSpace`` says how many bytes it needs where
that is known, and ``ensure_space`` refuses before writing when the free space is already too little.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from spokenwords.cli import CANNOT_WRITE, NO_SPACE, NoSpace, UserError, free_bytes, os_error_in

# A write that fails with no errno (libsndfile's "System error") while less than this is free was a full disk.
NEARLY_FULL = 1 << 20


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_space(path: str | Path, needed: int) -> None:
    """Refuse, before writing anything, an output of ``needed`` bytes at ``path`` that the disk has no room for."""
    if free_bytes(path) < needed:
        raise NoSpace(path, needed)


def _output_name(inner: Path, tmp: Path | None, path: Path) -> Path:
    """What the user knows ``inner`` as: its place in the finished output ``path`` if it lies in the temporary
    ``tmp``, else ``path`` itself (a scratch file beside it, such as a download being unpacked).
    """
    if tmp is not None and inner.absolute().is_relative_to(tmp.absolute()):
        return path / inner.absolute().relative_to(tmp.absolute())
    return path


@contextlib.contextmanager
def _output_errors(path: Path, tmp: Callable[[], Path | None], needed: int | None, remove: Callable[[], None]):
    """Turn a full disk or a read-only place met while writing ``path`` (through the temporary ``tmp()``) into one
    line that names ``path``. ``remove`` deletes the temporary, whatever happens: after the disk was seen full and
    before the message is made, so the message counts the space it gave back.
    """
    try:
        yield
    except NoSpace as error:  # a check or a write inside this one: name the output, not a temporary
        remove()
        raise NoSpace(_output_name(error.path, tmp(), path), error.needed, error.quota) from None
    except UserError:
        raise
    except Exception as error:
        temporary = tmp()
        full = os_error_in(error, NO_SPACE)
        silent = isinstance(error, RuntimeError) or (isinstance(error, OSError) and error.errno is None)
        nearly_full = full is None and silent and free_bytes(temporary or path) < NEARLY_FULL
        denied = os_error_in(error, CANNOT_WRITE)
        ours = denied is not None and _is_ours(denied.filename, temporary, path)
        if full is None and not nearly_full and not ours:
            raise
        remove()
        if ours:
            raise UserError(f"cannot write {path}: {(denied.strerror or str(denied)).lower()}") from None
        raise NoSpace(path, needed, quota=full is not None and full.errno == errno.EDQUOT) from None
    finally:
        remove()


def _is_ours(filename: Any, tmp: Path | None, path: Path) -> bool:
    """Whether a refused ``filename`` is this output, its temporary, something in them or a folder made for them (not
    an input the stage reads).
    """
    if not isinstance(filename, str | Path):
        return False
    name, target = Path(filename).absolute(), path.absolute()
    inside = [target] + ([tmp.absolute()] if tmp is not None else [])
    return (
        any(name.is_relative_to(place) for place in inside)
        or target.is_relative_to(name)  # a folder made for it
        or (name.parent == target.parent and name.name.startswith(f".{path.name}."))  # its temporary
    )


@contextlib.contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``needed``, the bytes the file will take when known, is checked against the free space before anything is
    written, and named if the disk fills anyway.
    """
    path = Path(path)
    made: list[Path] = []

    def remove() -> None:
        for tmp in made:
            tmp.unlink(missing_ok=True)

    with _output_errors(path, lambda: made[0] if made else None, needed, remove):
        path.parent.mkdir(parents=True, exist_ok=True)
        if needed is not None:
            ensure_space(path.parent, needed)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        made.append(tmp)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(0o666 & ~current_umask())  # mkstemp's private 0600 is not what a plain write gives
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` only on success.

    A stage that knows the size of what it will write calls ``ensure_space`` on the folder, and a refusal or a
    full disk inside is named as ``path`` (or the file's place in it), never the temporary.
    """
    path = Path(path)
    made: list[Path] = []

    def remove() -> None:
        for tmp in made:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    with _output_errors(path, lambda: made[0] if made else None, None, remove):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        made.append(tmp)
        yield tmp
        tmp.chmod(0o777 & ~current_umask())
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path, needed=len(text.encode("utf-8"))) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_torch(path: str | Path, data: Any) -> None:
    """``torch.save`` atomically and reproducibly.

    Given a path, torch names the archive's root folder after the file, so the random temporary name would make
    every save differ in bytes (and in DVC's hash); through a file handle the name is always ``archive``.
    """
    with atomic_path(path, needed=tensor_bytes(data)) as tmp, open(tmp, "wb") as handle:
        torch.save(data, handle)


def tensor_bytes(data: Any) -> int:
    """The bytes of the tensors in ``data`` (dicts, lists and tuples searched), each storage once: what
    ``torch.save`` writes at least, as it saves a view's whole storage.
    """
    storages: dict[tuple[int, int], int] = {}
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor) and item.layout == torch.strided:
            storage = item.untyped_storage()
            storages[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        elif isinstance(item, dict):
            pending += item.values()
        elif isinstance(item, list | tuple):
            pending += item
    return sum(storages.values())

"""Safe archive extraction: every member is checked before anything is written, so a hostile or damaged
archive leaves the destination empty instead of half-filled, and never writes outside it."""

from __future__ import annotations

import contextlib
import gzip
import lzma
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from spokenwords.cli import NO_SPACE, NoSpace, UserError
from spokenwords.fileio import ensure_space

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
ZIP_SUFFIXES = (".zip",)
SUPPORTED = ", ".join(TAR_SUFFIXES + ZIP_SUFFIXES)
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
CHUNK = 1 << 20
# Exceptions that mean the archive's bytes are damaged (truncated download, bad CRC, garbage).
DAMAGED = (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class Member:
    """The facts the safety checks need about one member, the same for tar and zip."""

    name: str  # as stored in the archive, for messages
    parts: tuple[str, ...]  # its path below dest, without "." or empty components
    kind: str  # "file", "dir", "symlink" or "hardlink"
    size: int = 0
    link: str = ""  # link target as stored


def extract(archive: Path, dest: Path, *, max_members: int = 200_000, max_bytes: int = 20 * 2**30) -> None:
    """Safely extract a .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz or .zip archive into dest (an existing empty folder).

    All members are validated before the first write; if writing still fails (a damaged member, a full
    disk, Ctrl-C) dest is emptied again, so callers never see a partial tree.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise UserError(f"archive {archive} not found")
    if any(dest.iterdir()):
        raise UserError(f"cannot extract {archive}: {dest} must be an empty folder")
    extract_format = _extract_zip if _is_zip(archive) else _extract_tar
    try:
        with _user_errors(archive, dest):
            extract_format(archive, dest, max_members, max_bytes)
    except BaseException:
        _empty(dest)
        raise


def _is_zip(archive: Path) -> bool:
    """Tell the format by suffix, else by content (downloads may lack a suffix)."""
    name = archive.name.lower()
    if name.endswith(ZIP_SUFFIXES):
        return True
    if name.endswith(TAR_SUFFIXES):
        return False
    with _user_errors(archive, archive.parent):
        if zipfile.is_zipfile(archive):
            return True
        if tarfile.is_tarfile(archive):
            return False
    raise UserError(f"{archive} is not a supported archive: expected one of {SUPPORTED} (or an extracted folder)")


@contextlib.contextmanager
def _user_errors(archive: Path, dest: Path) -> Iterator[None]:
    """Turn library exceptions into UserErrors that say whether the archive or the disk is at fault."""
    try:
        yield
    except tarfile.FilterError as error:
        raise _refusal(archive, error.tarinfo.name, f"is refused by tarfile's data filter ({error})") from None
    except DAMAGED as error:
        raise _damaged(archive, error) from None
    except OSError as error:
        if error.errno is None:  # bz2 reports bad compressed data as an OSError without an errno
            raise _damaged(archive, error) from None
        if error.errno in NO_SPACE:
            raise NoSpace(dest) from None
        raise UserError(f"cannot extract {archive} into {dest}: {error}") from None


def _damaged(archive: Path, error: BaseException) -> UserError:
    detail = str(error) or type(error).__name__
    return UserError(f"{archive} is corrupt or truncated ({detail}); delete it and download it again")


def _refusal(archive: Path, name: str, why: str) -> UserError:
    return UserError(f"refusing to extract {archive}: member {name!r} {why}")


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _extract_tar(archive: Path, dest: Path, max_members: int, max_bytes: int) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members: list[Member] = []
        for info in tar:  # one at a time, so a bomb of millions of headers stops at the limit
            if len(members) == max_members:
                raise _refusal(archive, info.name, f"is past the limit of {max_members} members (an archive bomb?)")
            members.append(_tar_member(archive, info))
        _check(archive, members, max_bytes)
        # the declared sizes, checked against the free space: tar reads exactly these, zip refuses more (below)
        ensure_space(dest, sum(member.size for member in members))
        tar.errorlevel = 2  # raise on every problem instead of logging and carrying on
        tar.extractall(dest, filter="data")  # the stdlib's own checks, on top of ours


def _tar_member(archive: Path, info: tarfile.TarInfo) -> Member:
    parts = _parts(archive, info.name)
    if info.isreg():
        return Member(info.name, parts, "file", info.size)
    if info.isdir():
        return Member(info.name, parts, "dir")
    if info.issym():
        return Member(info.name, parts, "symlink", link=info.linkname)
    if info.islnk():
        return Member(info.name, parts, "hardlink", link=info.linkname)
    if info.ischr() or info.isblk():
        raise _refusal(archive, info.name, "is a device file")
    if info.isfifo():
        raise _refusal(archive, info.name, "is a FIFO")
    raise _refusal(archive, info.name, f"has the unsupported tar type {info.type!r}")


def _extract_zip(archive: Path, dest: Path, max_members: int, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as bundle:
        infos = bundle.infolist()
        if len(infos) > max_members:
            name = infos[max_members].filename
            raise _refusal(archive, name, f"is past the limit of {max_members} members (an archive bomb?)")
        members = [_zip_member(archive, info) for info in infos]
        _check(archive, members, max_bytes)
        ensure_space(dest, sum(member.size for member in members))
        written = 0
        for info, member in zip(infos, members, strict=True):
            target = dest.joinpath(*member.parts)
            if member.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            # Count what decompression really yields: the declared sizes are the attacker's word.
            with bundle.open(info) as source, open(target, "xb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    if size > info.file_size or written > max_bytes:
                        raise _refusal(archive, info.filename, "inflates past its declared size or the size limit")
                    out.write(chunk)


def _zip_member(archive: Path, info: zipfile.ZipInfo) -> Member:
    parts = _parts(archive, info.filename)
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        raise _refusal(archive, info.filename, "is a symbolic link (links are not allowed in zip archives)")
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _refusal(archive, info.filename, "is a device file, FIFO or socket")
    if info.flag_bits & 0x1:
        raise _refusal(archive, info.filename, "is encrypted")
    if info.compress_type not in ZIP_METHODS:
        raise _refusal(archive, info.filename, f"uses the unsupported compression method {info.compress_type}")
    if info.is_dir():
        return Member(info.filename, parts, "dir")
    return Member(info.filename, parts, "file", info.file_size)


def _split(path: str) -> list[str]:
    """Path components, with both separators: Windows-made archives use backslashes."""
    return [part for part in re.split(r"[/\\]", path) if part not in ("", ".")]


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or bool(PureWindowsPath(path).drive)


def _parts(archive: Path, name: str) -> tuple[str, ...]:
    if "\x00" in name:
        raise _refusal(archive, name, "contains a NUL character")
    if _is_absolute(name):
        raise _refusal(archive, name, "is an absolute path")
    parts = tuple(_split(name))
    if ".." in parts:
        raise _refusal(archive, name, "contains a '..' component")
    return parts


def _check(archive: Path, members: list[Member], max_bytes: int) -> None:
    """Refuse duplicates, archive bombs and any path or link that could lead outside dest."""
    kinds: dict[tuple[str, ...], str] = {}
    for member in members:
        if not member.parts:
            if member.kind != "dir":
                raise _refusal(archive, member.name, "has an empty name")
            continue  # "./": dest itself
        if member.kind != "dir" and re.split(r"[/\\]", member.name)[-1] in ("", "."):
            # "x/." would be created as x itself: tarfile makes x a folder, then fails to replace it.
            raise _refusal(archive, member.name, f"is a {member.kind} whose name ends like a folder's")
        if member.parts in kinds:
            raise _refusal(archive, member.name, "appears more than once")
        kinds[member.parts] = member.kind
    total = 0
    earlier_files: set[tuple[str, ...]] = set()
    for member in members:
        total += member.size
        if total > max_bytes:
            raise _refusal(archive, member.name, f"takes the uncompressed size past {max_bytes} bytes (a bomb?)")
        # Writing below a link or a file would write wherever the link points, or fail halfway.
        for depth in range(1, len(member.parts)):
            kind = kinds.get(member.parts[:depth])
            if kind not in (None, "dir"):
                where = "/".join(member.parts[:depth])
                raise _refusal(archive, member.name, f"lies below {where!r}, which is a {kind}, not a folder")
        if member.kind == "symlink":
            _check_symlink(archive, member, kinds)
        if member.kind == "hardlink" and _is_absolute(member.link):
            raise _refusal(archive, member.name, f"is a hard link to the absolute path {member.link!r}")
        if member.kind == "hardlink" and tuple(_split(member.link)) not in earlier_files:
            raise _refusal(
                archive, member.name, f"is a hard link to {member.link!r}, not to a file extracted before it"
            )
        if member.kind in ("file", "hardlink"):
            earlier_files.add(member.parts)


def _check_symlink(archive: Path, member: Member, kinds: dict[tuple[str, ...], str]) -> None:
    """Resolve the target by name alone; passing through another link is refused, as it defeats that."""
    if not member.link or "\x00" in member.link:
        raise _refusal(archive, member.name, "is a link with an empty or invalid target")
    if _is_absolute(member.link):
        raise _refusal(archive, member.name, f"is a link to the absolute path {member.link!r}")
    where = list(member.parts[:-1])
    steps = _split(member.link)
    for index, step in enumerate(steps):
        if step != "..":
            where.append(step)
            if index < len(steps) - 1 and kinds.get(tuple(where)) == "symlink":
                raise _refusal(archive, member.name, f"is a link through another link ({'/'.join(where)!r})")
        elif where:
            where.pop()
        else:
            raise _refusal(archive, member.name, f"is a link to {member.link!r}, outside the destination")

"""Safe extraction: good archives extract; hostile or damaged ones are refused and leave no file anywhere."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spokenwords.cli import UserError
from spokenwords.data.archives import extract

TAR_MODES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz"}

Entry = tuple[tarfile.TarInfo, bytes]


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data


def write_tar(path: Path, entries: list[Entry]) -> Path:
    mode = next(mode for suffix, mode in TAR_MODES.items() if path.name.endswith(suffix))
    with tarfile.open(path, mode) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def write_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names some tests need
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
            for name, data in entries:
                bundle.writestr(name, data)
    return path


def zip_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def tree(root: Path) -> set[str]:
    """Every path below root, links not followed: the before/after picture that shows stray writes."""
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(os.path.relpath(os.path.join(folder, name), root) for name in dirs + files)
    return found


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """An empty destination two levels below the pytest temp root, so ../ and ../../ land in watched folders."""
    path = tmp_path / "dest"
    path.mkdir()
    return path


def assert_refused(archive: Path, dest: Path, *words: str, **limits: int) -> None:
    watched = dest.parent.parent
    before = tree(watched)
    with pytest.raises(UserError) as caught:
        extract(archive, dest, **limits)
    message = str(caught.value)
    assert str(archive) in message
    for word in words:
        assert word in message
    assert list(dest.iterdir()) == []
    assert tree(watched) == before


@pytest.mark.parametrize("suffix", list(TAR_MODES))
def test_good_tar_extracts(tmp_path: Path, dest: Path, suffix: str) -> None:
    archive = write_tar(
        tmp_path / f"good{suffix}",
        [
            entry("./", kind=tarfile.DIRTYPE),
            entry("./data", kind=tarfile.DIRTYPE),
            entry("./data/a.txt", b"alpha"),
            entry("data/sub/b.bin", bytes(range(256))),
            entry("data/link", kind=tarfile.SYMTYPE, link="sub/b.bin"),
            entry("data/hard", kind=tarfile.LNKTYPE, link="data/a.txt"),
        ],
    )
    extract(archive, dest)
    assert (dest / "data/a.txt").read_bytes() == b"alpha"
    assert (dest / "data/sub/b.bin").read_bytes() == bytes(range(256))
    assert os.readlink(dest / "data/link") == "sub/b.bin"
    assert (dest / "data/link").read_bytes() == bytes(range(256))
    assert (dest / "data/hard").read_bytes() == b"alpha"
    assert tree(dest) == {"data", "data/a.txt", "data/sub", "data/sub/b.bin", "data/link", "data/hard"}


def test_good_zip_extracts(tmp_path: Path, dest: Path) -> None:
    archive = write_zip(
        tmp_path / "good.zip",
        [("data/", b""), ("data/a.txt", b"alpha"), ("data/sub/b.bin", bytes(range(256)) * 100), ("c.txt", b"")],
    )
    extract(archive, dest)
    assert (dest / "data/a.txt").read_bytes() == b"alpha"
    assert (dest / "data/sub/b.bin").read_bytes() == bytes(range(256)) * 100
    assert tree(dest) == {"data", "data/a.txt", "data/sub", "data/sub/b.bin", "c.txt"}


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_format_is_sniffed_when_the_name_has_no_suffix(tmp_path: Path, dest: Path, kind: str) -> None:
    built = tmp_path / f"built.{kind}"
    if kind == "zip":
        write_zip(built, [("a.txt", b"alpha")])
    else:
        write_tar(built, [entry("a.txt", b"alpha")])
    archive = built.rename(tmp_path / "download")
    extract(archive, dest)
    assert (dest / "a.txt").read_bytes() == b"alpha"


def test_unknown_format_lists_the_supported_ones(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "data.rar"
    archive.write_bytes(b"Rar!\x1a\x07\x00" + bytes(100))
    assert_refused(archive, dest, "not a supported archive", ".tar.gz", ".zip")


def test_missing_archive_and_non_empty_dest_are_refused(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        extract(tmp_path / "absent.tar.gz", dest)
    archive = write_tar(tmp_path / "good.tar", [entry("a.txt", b"alpha")])
    (dest / "old.txt").write_text("keep")
    with pytest.raises(UserError, match="must be an empty folder"):
        extract(archive, dest)
    assert (dest / "old.txt").read_text() == "keep"


def ok() -> Entry:
    """A harmless first member: proves that refusal happens before anything is written."""
    return entry("ok.txt", b"fine")


# Each attack: members built from `here` (the test's tmp_path, dest's parent), words the refusal names, limits.
TAR_ATTACKS: dict[str, tuple[Callable[[Path], list[Entry]], tuple[str, ...], dict[str, int]]] = {
    "dotdot": (lambda here: [ok(), entry("../escaped.txt", b"x")], ("'../escaped.txt'", "'..'"), {}),
    "nested dotdot": (lambda here: [ok(), entry("a/../../../escaped.txt", b"x")], ("'..'",), {}),
    "absolute": (lambda here: [ok(), entry(str(here.parent / "abs.txt"), b"x")], ("abs.txt", "absolute path"), {}),
    "symlink out": (lambda here: [ok(), entry("link", kind=tarfile.SYMTYPE, link="../..")], ("'link'", "outside"), {}),
    "symlink absolute": (
        lambda here: [ok(), entry("link", kind=tarfile.SYMTYPE, link=str(here.parent))],
        ("'link'", "absolute path"),
        {},
    ),
    "symlink chain": (
        lambda here: [ok(), entry("x", kind=tarfile.SYMTYPE, link="."), entry("y", kind=tarfile.SYMTYPE, link="x/..")],
        ("'y'", "through another link"),
        {},
    ),
    "write through symlink": (
        lambda here: [
            ok(),
            entry("sub", kind=tarfile.DIRTYPE),
            entry("l", kind=tarfile.SYMTYPE, link="sub"),
            entry("l/x.txt", b"x"),
        ],
        ("'l/x.txt'", "symlink, not a folder"),
        {},
    ),
    "hardlink out": (
        lambda here: [ok(), entry("hard", kind=tarfile.LNKTYPE, link="../victim.txt")],
        ("'hard'", "hard link"),
        {},
    ),
    "hardlink absolute": (
        lambda here: [ok(), entry("hard", kind=tarfile.LNKTYPE, link=str(here / "victim.txt"))],
        ("'hard'", "hard link"),
        {},
    ),
    "hardlink absolute to a member's name": (
        lambda here: [ok(), entry("hard", kind=tarfile.LNKTYPE, link="/ok.txt")],
        ("'hard'", "absolute path"),
        {},
    ),
    "char device": (lambda here: [ok(), entry("null", kind=tarfile.CHRTYPE)], ("'null'", "device"), {}),
    "block device": (lambda here: [ok(), entry("disk", kind=tarfile.BLKTYPE)], ("'disk'", "device"), {}),
    "fifo": (lambda here: [ok(), entry("pipe", kind=tarfile.FIFOTYPE)], ("'pipe'", "FIFO"), {}),
    "duplicate": (lambda here: [ok(), entry("./ok.txt", b"again")], ("'./ok.txt'", "more than once"), {}),
    "file used as folder": (lambda here: [ok(), entry("ok.txt/x", b"x")], ("'ok.txt/x'", "not a folder"), {}),
    "symlink named like a folder": (  # found by the fuzz test: tarfile made "sub" a folder, then failed
        lambda here: [ok(), entry("sub/.", kind=tarfile.SYMTYPE, link=".")],
        ("'sub/.'", "ends like a folder's"),
        {},
    ),
    "too many members": (
        lambda here: [ok()] + [entry(f"{n}.txt", b"x") for n in range(3)],
        ("'2.txt'", "limit of 3 members"),
        {"max_members": 3},
    ),
    "too many bytes": (
        lambda here: [ok(), entry("a.bin", bytes(60)), entry("b.bin", bytes(60))],
        ("'b.bin'", "past 100 bytes"),
        {"max_bytes": 100},
    ),
}


@pytest.mark.parametrize("attack", list(TAR_ATTACKS))
def test_hostile_tar_is_refused_before_any_write(tmp_path: Path, dest: Path, attack: str) -> None:
    build, words, limits = TAR_ATTACKS[attack]
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    archive = write_tar(tmp_path / "evil.tar.gz", build(tmp_path))
    assert_refused(archive, dest, *words, **limits)
    assert victim.read_text() == "original"
    assert victim.stat().st_nlink == 1


ZIP_ATTACKS: dict[str, tuple[list[tuple[str | zipfile.ZipInfo, bytes]], tuple[str, ...], dict[str, int]]] = {
    "dotdot": ([("ok.txt", b"fine"), ("../escaped.txt", b"x")], ("'../escaped.txt'", "'..'"), {}),
    "backslash dotdot": ([("ok.txt", b"fine"), ("a\\..\\..\\escaped.txt", b"x")], ("'..'",), {}),
    "absolute": ([("ok.txt", b"fine"), ("/tmp/abs.txt", b"x")], ("'/tmp/abs.txt'", "absolute path"), {}),
    "drive": ([("ok.txt", b"fine"), ("C:/escaped.txt", b"x")], ("'C:/escaped.txt'", "absolute path"), {}),
    "symlink": (
        [("ok.txt", b"fine"), (zip_info("link", stat.S_IFLNK | 0o777), b"../../escaped")],
        ("'link'", "symbolic link"),
        {},
    ),
    "fifo": ([("ok.txt", b"fine"), (zip_info("pipe", stat.S_IFIFO | 0o644), b"")], ("'pipe'", "FIFO"), {}),
    "duplicate": ([("ok.txt", b"fine"), ("ok.txt", b"again")], ("'ok.txt'", "more than once"), {}),
    "too many members": (
        [("ok.txt", b"fine")] + [(f"{n}.txt", b"x") for n in range(3)],
        ("'2.txt'", "limit of 3 members"),
        {"max_members": 3},
    ),
    "too many bytes": (
        [("ok.txt", b"fine"), ("a.bin", bytes(60)), ("b.bin", bytes(60))],
        ("'b.bin'", "past 100 bytes"),
        {"max_bytes": 100},
    ),
}


@pytest.mark.parametrize("attack", list(ZIP_ATTACKS))
def test_hostile_zip_is_refused_before_any_write(tmp_path: Path, dest: Path, attack: str) -> None:
    entries, words, limits = ZIP_ATTACKS[attack]
    archive = write_zip(tmp_path / "evil.zip", entries)
    assert_refused(archive, dest, *words, **limits)


def test_truncated_tar_gz_is_reported_as_damaged(tmp_path: Path, dest: Path) -> None:
    good = write_tar(tmp_path / "good.tar.gz", [entry("a.bin", os.urandom(50_000)), entry("b.bin", os.urandom(50_000))])
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_refused(archive, dest, "corrupt or truncated", "download it again")


def test_truncated_plain_tar_leaves_no_partial_tree(tmp_path: Path, dest: Path) -> None:
    """A plain tar is only found short while writing, after the first member is out: that must be undone."""
    good = write_tar(tmp_path / "good.tar", [entry("a.bin", bytes(5000)), entry("b.bin", bytes(50_000))])
    archive = tmp_path / "cut.tar"
    archive.write_bytes(good.read_bytes()[:20_000])
    assert_refused(archive, dest, "corrupt or truncated")


def test_garbage_zip_is_reported_as_damaged(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "junk.zip"
    archive.write_bytes(b"PK\x03\x04" + os.urandom(300))
    assert_refused(archive, dest, "corrupt or truncated")


def test_zip_with_a_bad_crc_leaves_no_partial_tree(tmp_path: Path, dest: Path) -> None:
    data = b"second member payload " * 50
    with zipfile.ZipFile(tmp_path / "good.zip", "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("a.txt", b"first")
        bundle.writestr("b.txt", data)
    raw = (tmp_path / "good.zip").read_bytes()
    archive = tmp_path / "flipped.zip"
    archive.write_bytes(raw.replace(data, data.replace(b"second", b"SECOND", 1)))
    assert_refused(archive, dest, "corrupt or truncated", "CRC")


PIECES = st.one_of(
    st.sampled_from(["..", "..", ".", "", "a", "b", "ü", "日本", "a\\..", "C:", "\\"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), min_size=1, max_size=4),
)
NAMES = st.builds(
    lambda lead, pieces: lead + "/".join(pieces), st.sampled_from(["", "", "", "./", "/"]), st.lists(PIECES, max_size=4)
).filter(bool)
MEMBERS = st.lists(st.tuples(NAMES, st.sampled_from(["file", "dir", "symlink"]), NAMES), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=MEMBERS, as_zip=st.booleans())
def test_fuzzed_archives_extract_inside_dest_or_are_refused(members: list[tuple[str, str, str]], as_zip: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dest = root / "a" / "b" / "c" / "d" / "dest"  # deep enough that four ../ still land in root
        dest.mkdir(parents=True)
        if as_zip:  # zip members are never links
            archive = write_zip(root / "fuzz.zip", [(name + "/" * (kind == "dir"), b"x") for name, kind, _ in members])
        else:
            kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}
            tar_entries = [entry(name, b"x", kinds[kind], target) for name, kind, target in members]
            archive = write_tar(root / "fuzz.tar", tar_entries)

        def outside_dest() -> set[str]:
            return {path for path in tree(root) if not (root / path).is_relative_to(dest)}

        before = outside_dest()
        try:
            extract(archive, dest)
        except UserError:
            assert list(dest.iterdir()) == []
        assert outside_dest() == before
        inside = os.path.realpath(dest)
        for path in dest.rglob("*"):
            if path.is_symlink():
                assert os.path.commonpath([os.path.realpath(path), inside]) == inside

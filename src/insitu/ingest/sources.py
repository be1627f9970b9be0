"""What ``insitu ingest`` reads: files, folders and zip archives, one item at a time.

Zip members are read into memory (never extracted to disk), after checks against path
traversal and zip bombs. Nothing here keeps a path: callers HMAC it before storing anything.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SKIPPED_NAMES = frozenset({"DICOMDIR"})
MAX_MEMBER_BYTES = 1024**3
"""Zip members are read into memory: a larger one is refused (extract the archive instead)."""
MAX_ARCHIVE_BYTES = 64 * 1024**3
MAX_RATIO = 200


@dataclass(frozen=True)
class SourceItem:
    """One input: a file on disk (``path``) or bytes from an archive (``data``)."""

    source: str
    path: str | None = None
    data: bytes | None = None
    error: str | None = None

    def read(self) -> bytes:
        """The item's bytes."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError("source item has neither path nor data")
        with open(self.path, "rb") as handle:  # noqa: PTH123 - hot path, avoid Path objects
            return handle.read()


def is_zip(path: Path) -> bool:
    """Whether a file is a zip archive (by content, not by name)."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _unsafe_member_name(name: str) -> bool:
    pure = PurePosixPath(name.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":")


def iter_zip(path: Path) -> Iterator[SourceItem]:
    """The members of a zip archive, each checked before it is read."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        yield SourceItem(source=str(path), error=f"unreadable zip archive: {exc}")
        return
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        total = sum(i.file_size for i in infos)
        if total > MAX_ARCHIVE_BYTES:
            yield SourceItem(
                source=str(path),
                error=f"zip archive refused: it expands to {total} bytes, over the "
                f"{MAX_ARCHIVE_BYTES} byte limit (zip bomb?); split it into smaller archives",
            )
            return
        for info in infos:
            source = f"{path}!/{info.filename}"
            if _unsafe_member_name(info.filename):
                yield SourceItem(
                    source=source,
                    error="zip member refused: its name escapes the archive (path traversal)",
                )
                continue
            if PurePosixPath(info.filename).name in SKIPPED_NAMES:
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > MAX_MEMBER_BYTES:
                yield SourceItem(
                    source=source,
                    error=f"zip member refused: {info.file_size} bytes, over the "
                    f"{MAX_MEMBER_BYTES} byte limit for a member read from an archive; extract "
                    "the archive and ingest the folder",
                )
                continue
            if info.file_size > 1024**2 and ratio > MAX_RATIO:
                yield SourceItem(
                    source=source,
                    error=f"zip member refused: {info.file_size} bytes from "
                    f"{info.compress_size} compressed (ratio {ratio:.0f}, zip bomb?)",
                )
                continue
            try:
                with archive.open(info) as member:
                    data = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
                yield SourceItem(source=source, error=f"unreadable zip member: {exc}")
                continue
            if len(data) > info.file_size:
                yield SourceItem(source=source, error="zip member refused: larger than declared")
                continue
            yield SourceItem(source=source, data=data)


def _walk_files(root: Path, skip: Path | None) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if skip is None or (Path(folder) / d).resolve() != skip)
        for name in sorted(files):
            yield Path(folder) / name


_HINT = "insitu reads regular files only; copy the file itself into the folder"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (insitu never follows links)"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def iter_sources(paths: Iterable[Path], exclude: Path | None = None) -> Iterator[SourceItem]:
    """Every file under the given paths, zip archives opened, in a stable order.

    ``exclude`` (the deployment's own INSITU_HOME) is never read, even when inside a path.
    """
    skip = exclude.resolve() if exclude is not None else None
    for given in paths:
        if not given.exists():
            yield SourceItem(source=str(given), error="no such file or folder")
            continue
        if skip is not None and given.resolve().is_relative_to(skip):
            continue
        candidates = _walk_files(given, skip) if given.is_dir() else iter([given])
        for path in candidates:
            if path.name in SKIPPED_NAMES:
                continue
            try:
                mode = path.lstat().st_mode
            except OSError as exc:
                yield SourceItem(source=str(path), error=f"cannot read: {exc.strerror}")
                continue
            if not stat.S_ISREG(mode):
                # Links, pipes, sockets and devices are never followed or read; each gets a
                # line of its own so that nothing is skipped without the steward seeing it.
                yield SourceItem(source=str(path), error=f"skipped: {_kind(mode)}; {_HINT}")
                continue
            if is_zip(path):
                yield from iter_zip(path)
            else:
                yield SourceItem(source=str(path), path=str(path))


def count_sources(paths: Iterable[Path]) -> int:
    """A quick count of the files under ``paths`` (zip archives count their members)."""
    total = 0
    for given in paths:
        if given.is_dir():
            for _folder, _dirs, files in os.walk(given):
                total += len(files)
        elif given.exists():
            if is_zip(given):
                try:
                    with zipfile.ZipFile(given) as archive:
                        total += sum(1 for i in archive.infolist() if not i.is_dir())
                except (zipfile.BadZipFile, OSError):
                    total += 1
            else:
                total += 1
        else:
            total += 1
    return total

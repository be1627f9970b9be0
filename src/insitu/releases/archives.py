"""The archive check: zip and tar archives (and gzip, bzip2, xz files) are opened and every
file inside goes through all the checks. Refused outright: links inside, names that climb out
(``..``, absolute, backslashes), encrypted members, archives nested deeper than three, and
bombs (a member or the whole over the limits once unpacked, or compressed over 100 to 1)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from insitu.releases.checks import MB, Finding, Item, Run, worst
from insitu.releases.models import Verdict

MAX_DEPTH = 3
MAX_MEMBERS = 10_000
MAX_RATIO = 100


class ArchiveRefusedError(ValueError):
    """An archive that is refused as a whole, with the reason."""


@dataclass(frozen=True)
class Member:
    """A file read out of an archive."""

    name: str
    data: bytes


def check_member_name(name: str) -> None:
    """Refuse names that would land outside the folder they are unpacked into."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in parts[0]:
        raise ArchiveRefusedError(f"the name {name!r} climbs out of the archive (path traversal)")
    if any(ord(c) < 32 for c in name):
        raise ArchiveRefusedError(f"the name {name!r} holds control characters")


def _budget(declared: int, packed: int, total: int, limit: int, request_limit: int) -> None:
    if declared > limit:
        raise ArchiveRefusedError(
            f"a member unpacks to {declared:,} bytes, over the per-file limit"
        )
    if total > request_limit:
        raise ArchiveRefusedError(f"it unpacks to over {request_limit:,} bytes (a zip bomb?)")
    if declared > MB and declared > MAX_RATIO * max(packed, 1):
        raise ArchiveRefusedError(
            f"a member is compressed {declared // max(packed, 1)} to 1 (a zip bomb?)"
        )


def _zip_members(item: Item, run: Run) -> Iterator[Member]:
    with zipfile.ZipFile(item.open()) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveRefusedError(f"it holds {len(infos):,} files, over {MAX_MEMBERS:,}")
        total = 0
        for info in infos:
            check_member_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveRefusedError(f"{info.filename!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise ArchiveRefusedError(
                    f"{info.filename!r} is encrypted, so it cannot be checked"
                )
            if info.is_dir():
                continue
            total += info.file_size
            _budget(info.file_size, info.compress_size, total, run.context.max_file_bytes,
                    run.context.max_request_bytes)  # fmt: skip
            with archive.open(info) as handle:
                data = handle.read(info.file_size + 1)
            if len(data) != info.file_size:  # the header lied about the size
                raise ArchiveRefusedError(f"{info.filename!r} is not the size its header says")
            yield Member(info.filename, data)


def _tar_members(item: Item, run: Run) -> Iterator[Member]:
    with tarfile.open(fileobj=item.open(), mode="r:") as archive:
        total = 0
        for count, info in enumerate(archive):
            if count >= MAX_MEMBERS:
                raise ArchiveRefusedError(f"it holds over {MAX_MEMBERS:,} files")
            check_member_name(info.name)
            if info.issym() or info.islnk():
                raise ArchiveRefusedError(f"{info.name!r} is a link (to {info.linkname!r})")
            if info.isdir():
                continue
            if not info.isfile():
                raise ArchiveRefusedError(f"{info.name!r} is a device, pipe or other special file")
            total += info.size
            _budget(info.size, info.size, total, run.context.max_file_bytes,
                    run.context.max_request_bytes)  # fmt: skip
            handle = archive.extractfile(info)
            assert handle is not None  # noqa: S101 - a regular file
            yield Member(info.name, handle.read(info.size))


def _decompressed(item: Item, run: Run) -> Iterator[Member]:
    """A gzip, bzip2 or xz file (every concatenated stream): its content, unpacked within the
    limits."""
    opener = {"application/gzip": gzip.GzipFile, "application/x-bzip2": bz2.BZ2File}.get(
        item.media_type, lzma.LZMAFile
    )
    limit = run.context.max_file_bytes
    out = bytearray()
    with item.open() as raw, opener(fileobj=raw) as handle:
        while chunk := handle.read(MB):
            out += chunk
            if len(out) > limit:
                raise ArchiveRefusedError(f"it unpacks to over {limit:,} bytes (a bomb?)")
    _budget(len(out), item.size, len(out), limit, run.context.max_request_bytes)
    stem = item.name.rsplit("/", 1)[-1].rsplit("!", 1)[-1]
    for suffix in (".gz", ".tgz", ".bz2", ".xz"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)] + (".tar" if suffix == ".tgz" else "")
    yield Member(stem or "unpacked", bytes(out))


READERS = {
    "application/zip": _zip_members,
    "application/x-tar": _tar_members,
    "application/gzip": _decompressed,
    "application/x-bzip2": _decompressed,
    "application/x-xz": _decompressed,
}


class ArchiveCheck:
    """Opens archives and runs every check on what they hold."""

    name = "archive"

    def check(self, item: Item, run: Run) -> Finding:
        """Refuse an archive that is unsafe to open or holds a refused file."""
        reader = READERS.get(item.media_type)
        if reader is None:
            return Finding(self.name, Verdict.passed, "not an archive")
        if item.depth >= MAX_DEPTH:
            return Finding(self.name, Verdict.refused, f"archives nested over {MAX_DEPTH} deep")
        problems: list[tuple[Verdict, str]] = []
        count = 0
        try:
            for member in reader(item, run):
                count += 1
                inner = Item.of_bytes(f"{item.name}!{member.name}", member.data, item.depth + 1)
                findings = run.inspect(inner)
                verdict = worst(findings)
                if verdict != Verdict.passed:
                    reasons = "; ".join(f.reason for f in findings if f.verdict == verdict)
                    problems.append((verdict, f"{member.name}: {reasons}"))
        except (ArchiveRefusedError, zipfile.BadZipFile, tarfile.TarError, EOFError, OSError,
                zlib.error, lzma.LZMAError) as exc:  # fmt: skip
            return Finding(self.name, Verdict.refused, f"archive refused: {exc}")
        if not problems:
            return Finding(self.name, Verdict.passed, f"the {count} files inside pass")
        verdict = _worst_of(problems)
        shown = "; ".join(text for v, text in problems if v == verdict)[:2000]
        return Finding(self.name, verdict, f"inside the archive: {shown}")


def _worst_of(problems: list[tuple[Verdict, str]]) -> Verdict:
    verdicts = [v for v, _ in problems]
    return Verdict.refused if Verdict.refused in verdicts else Verdict.flagged

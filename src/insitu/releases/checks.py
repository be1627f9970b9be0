"""The automatic checks every file of a release request goes through.

A check is a plug-in: anything with a ``name`` and a ``check(item, run)`` method that returns
one :class:`Finding` (pass, flag for review, or refuse, with the reason in words). The
built-in checks are listed in :data:`BUILT_IN`; a deployment adds its own with
``INSITU_RELEASE_EXTRA_CHECKS`` (``module:attribute`` entries). Checks read only the file and
the :class:`CheckContext` (what the job's datasets hold), never the database, so they run in a
separate, resource-limited process (``insitu.releases.checker``): a file crafted to crash or
exhaust a parser takes down only that process, and then nothing is released.

The checks catch mistakes, not a determined insider (docs/user-guide.md says so): human
review and the ledger are what deter insiders.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from insitu.releases.models import Verdict

MB = 1024 * 1024
LARGE_BINARY_BYTES = 1 * MB
TEXT_TYPES = frozenset({"text/plain", "text/csv", "application/json"})
PICTURE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/tiff", "image/bmp", "image/webp"}
)
ARRAY_TYPES = (
    frozenset({"application/x-npy", "image/x-nifti", "image/x-nrrd", "application/x-hdf5"})
    | PICTURE_TYPES
)
ARCHIVE_TYPES = frozenset(
    {"application/zip", "application/x-tar", "application/gzip", "application/x-bzip2",
     "application/x-xz"}
)  # fmt: skip
UNOPENABLE_TYPES = frozenset(
    {"application/x-7z-compressed", "application/vnd.rar", "application/zstd"}
)
_SEVERITY = {Verdict.passed: 0, Verdict.flagged: 1, Verdict.refused: 2}


@dataclass(frozen=True)
class ImageKind:
    """A frame size the datasets hold, with the range of their stored and modality values."""

    rows: int
    columns: int
    stored_min: float
    stored_max: float
    modality_min: float
    modality_max: float


@dataclass(frozen=True)
class CheckContext:
    """What the checks compare results with: the job's datasets, the limits, the tool's
    declared outputs."""

    identifiers: frozenset[str] = frozenset()
    """Subject pseudonyms and Study/Series/SOP Instance UIDs of the job's datasets."""
    instance_digests: frozenset[str] = frozenset()
    """SHA-256 of every stored instance of the job's datasets."""
    pixel_digests: frozenset[str] = frozenset()
    """SHA-256 of every decoded frame (stored values, little endian) of those instances."""
    image_kinds: tuple[ImageKind, ...] = ()
    declared_outputs: tuple[str, ...] = ()
    """The tool's output patterns, relative to /results."""
    max_file_bytes: int = 200 * MB
    max_request_bytes: int = 1024 * MB
    max_identifiers: int = 10

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (for the checker process)."""
        data = asdict(self)
        for key in ("identifiers", "instance_digests", "pixel_digests"):
            data[key] = sorted(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckContext:
        """The context back from :meth:`to_json`."""
        return cls(
            identifiers=frozenset(data["identifiers"]),
            instance_digests=frozenset(data["instance_digests"]),
            pixel_digests=frozenset(data["pixel_digests"]),
            image_kinds=tuple(ImageKind(**k) for k in data["image_kinds"]),
            declared_outputs=tuple(data["declared_outputs"]),
            max_file_bytes=int(data["max_file_bytes"]),
            max_request_bytes=int(data["max_request_bytes"]),
            max_identifiers=int(data["max_identifiers"]),
        )


@dataclass
class Item:
    """A file under check: a result file on disk, or a member read out of an archive."""

    name: str
    """As the requester will see it: the path in /results, ``archive.zip!member`` inside."""
    size: int
    sha256: str
    path: Path | None = None
    data: bytes | None = None
    depth: int = 0
    """0 for a file of /results; 1 and more inside archives."""
    media_type: str = field(default="")

    def open(self) -> BinaryIO:
        """The content, from the start."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None  # noqa: S101 - one of the two is always set
        return self.path.open("rb")

    def head(self, size: int = 64 * 1024) -> bytes:
        """The first bytes."""
        if self.data is not None:
            return self.data[:size]
        with self.open() as handle:
            return handle.read(size)

    def content(self) -> bytes:
        """All of it (sizes are capped before anything is read whole)."""
        if self.data is not None:
            return self.data
        with self.open() as handle:
            return handle.read()

    @classmethod
    def of_bytes(cls, name: str, data: bytes, depth: int) -> Item:
        """An archive member."""
        item = cls(name, len(data), hashlib.sha256(data).hexdigest(), data=data, depth=depth)
        item.media_type = sniff(item.head(), name)
        return item


@dataclass(frozen=True)
class Finding:
    """One check's verdict on one file, with the reason."""

    check: str
    verdict: Verdict
    reason: str


@runtime_checkable
class Check(Protocol):
    """A release check."""

    name: str

    def check(self, item: Item, run: Run) -> Finding:
        """Its verdict on one file."""
        ...


@dataclass
class Run:
    """What a check gets besides the file: the context, and ``inspect`` for the files
    inside an archive."""

    context: CheckContext
    inspect: Callable[[Item], list[Finding]]


def worst(findings: list[Finding]) -> Verdict:
    """The verdict a file gets: its worst finding's."""
    return max((f.verdict for f in findings), key=_SEVERITY.__getitem__, default=Verdict.passed)


# -- what a file is, by its content -------------------------------------------------------------

_MAGIC = (
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\x28\xb5\x2f\xfd", "application/zstd"),
    (b"\x93NUMPY", "application/x-npy"),
    (b"\x89HDF\r\n\x1a\n", "application/x-hdf5"),
    (b"NRRD000", "image/x-nrrd"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"%PDF-", "application/pdf"),
)
_DICOM_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Modality", "PixelData")


def _looks_like_headless_dicom(head: bytes) -> bool:
    """DICOM without its 128-byte preamble: starts with a group 0002 or 0008 element, and
    pydicom finds identifying attributes in it."""
    if head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    import pydicom

    try:
        dataset = pydicom.dcmread(io.BytesIO(head), force=True, stop_before_pixels=True)
        return any(keyword in dataset for keyword in _DICOM_KEYWORDS)
    except Exception:  # noqa: BLE001 - tolerant reading: bytes pydicom cannot parse are not DICOM
        return False


def _is_nifti(head: bytes) -> bool:
    for order in ("little", "big"):
        size = int.from_bytes(head[:4], order) if len(head) >= 4 else 0
        if size == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
            return True
        if size == 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
            return True
    return False


def sniff(head: bytes, name: str = "") -> str:
    """A file's media type from its first bytes; the name only tells text flavours apart."""
    if head[128:132] == b"DICM":
        return "application/dicom"
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if len(head) > 262 and head[257:262] == b"ustar":
        return "application/x-tar"
    if head[:2] == b"BM" and len(head) > 26 and int.from_bytes(head[14:18], "little") in (
        12, 40, 52, 56, 64, 108, 124):  # fmt: skip
        return "image/bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if _is_nifti(head):
        return "image/x-nifti"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "application/x-python-pickle"
    if _looks_like_headless_dicom(head):
        return "application/dicom"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:  # a character cut at the end of the head is fine
            if exc.start < len(head) - 4:
                return "application/octet-stream"
            text = head[: exc.start].decode("utf-8")
        lowered = name.lower()
        if lowered.endswith((".json", ".jsonl", ".geojson")):
            return "application/json"
        if lowered.endswith((".csv", ".tsv")):
            return "text/csv"
        stripped = text.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                json.loads(text)
            except ValueError:
                return "text/plain"
            return "application/json"
        return "text/plain"
    return "application/octet-stream"


# -- the built-in checks -------------------------------------------------------------------------


def _pass(check: Check, reason: str) -> Finding:
    return Finding(check.name, Verdict.passed, reason)


_EMBEDDED_DICOM = b"DICM\x02\x00"  # the magic, then the first File Meta element's group


def _holds_dicom(handle: BinaryIO) -> bool:
    tail = b""
    while chunk := handle.read(4 * MB):
        if _EMBEDDED_DICOM in tail + chunk:
            return True
        tail = chunk[-len(_EMBEDDED_DICOM) :]
    return False


class DicomCheck:
    """Refuses DICOM, found by its content whatever the file is called, and files with a
    DICOM file inside (appended to a picture, say)."""

    name = "dicom"

    def check(self, item: Item, run: Run) -> Finding:
        """Refuse DICOM."""
        if item.media_type == "application/dicom":
            return Finding(
                self.name,
                Verdict.refused,
                "is a DICOM file (found by its content, not its name): images never leave "
                "insitu; release measurements, plots or models made from them instead",
            )
        with item.open() as handle:
            if _holds_dicom(handle):
                return Finding(
                    self.name,
                    Verdict.refused,
                    f"a {item.media_type} file with a DICOM file inside it: images never leave",
                )
        return _pass(self, f"not DICOM (its content is {item.media_type})")


class CopyOfInstanceCheck:
    """Refuses a file whose bytes equal a stored instance of the job's datasets."""

    name = "instance-copy"

    def check(self, item: Item, run: Run) -> Finding:
        """Refuse copies of instances."""
        if item.sha256 in run.context.instance_digests:
            return Finding(
                self.name,
                Verdict.refused,
                "has exactly the bytes of an image in the job's datasets: images never leave",
            )
        return _pass(self, "is not a copy of any image in the job's datasets")


# Two patterns, not one alternation: each alone lets the regex engine skip ahead (3x faster).
_TOKENS = (re.compile(rb"[0-9][0-9.]{2,63}"), re.compile(rb"S-[A-Z2-7]{16}"))


def _scan_identifiers(handle: BinaryIO, identifiers: frozenset[str], stop_at: int) -> set[str]:
    found: set[str] = set()
    tail = b""
    while chunk := handle.read(4 * MB):
        block = tail + chunk
        for pattern in _TOKENS:
            for match in pattern.finditer(block):
                token = match.group().decode("ascii").rstrip(".")
                if token in identifiers:
                    found.add(token)
        if len(found) > stop_at:
            break
        tail = block[-80:]  # a token cut at the boundary is seen whole in the next block
    return found


class IdentifierCheck:
    """Refuses files naming more of the datasets' pseudonyms or UIDs than the limit allows:
    a table with a row per subject or image links results back to patients."""

    name = "identifiers"

    def check(self, item: Item, run: Run) -> Finding:
        """Count the datasets' identifiers in the file."""
        limit = run.context.max_identifiers
        with item.open() as handle:
            found = _scan_identifiers(handle, run.context.identifiers, limit)
        if len(found) > limit:
            return Finding(
                self.name,
                Verdict.refused,
                f"names {len(found) if len(found) <= limit + 1 else 'over ' + str(limit)} "
                f"pseudonyms or UIDs of the job's datasets (at most {limit} may leave): a "
                "row per subject, study or image links results back to patients; release "
                "aggregates, or drop the identifier column",
            )
        return _pass(self, f"names {len(found)} of the datasets' identifiers (limit {limit})")


class SizeCheck:
    """Refuses a file over the size limit (archive members too)."""

    name = "size"

    def check(self, item: Item, run: Run) -> Finding:
        """Compare with the per-file limit."""
        limit = run.context.max_file_bytes
        if item.size > limit:
            return Finding(
                self.name,
                Verdict.refused,
                f"is {item.size:,} bytes, over the limit of {limit:,} bytes per file: "
                "release a smaller summary, or ask the admins about the limit",
            )
        return _pass(self, f"{item.size:,} bytes, within the limit")


class DeclaredOutputCheck:
    """Flags files of /results that the tool's output contract does not list."""

    name = "declared-output"

    def check(self, item: Item, run: Run) -> Finding:
        """Match the path with the tool's output patterns."""
        if item.depth > 0:
            return _pass(self, "inside an archive: the archive itself is matched")
        patterns = run.context.declared_outputs
        if any(fnmatch.fnmatchcase(item.name, pattern) for pattern in patterns):
            return _pass(self, "listed in the tool's outputs")
        listed = ", ".join(patterns) or "nothing"
        return Finding(
            self.name,
            Verdict.flagged,
            f"the tool's outputs list {listed}, not this file: a reviewer must look at it",
        )


class LargeBinaryCheck:
    """Flags binary files over 1 MB for a reviewer's look."""

    name = "large-binary"

    def check(self, item: Item, run: Run) -> Finding:
        """Flag large non-text files."""
        if item.media_type not in TEXT_TYPES and item.size > LARGE_BINARY_BYTES:
            return Finding(
                self.name,
                Verdict.flagged,
                f"a {item.media_type} file of {item.size / MB:.1f} MB: binaries over 1 MB "
                "are looked at by a reviewer",
            )
        return _pass(self, "text, or a binary of 1 MB or less")


class UnopenableCheck:
    """Refuses containers the checks cannot open (7z, rar, zstd)."""

    name = "unopenable"

    def check(self, item: Item, run: Run) -> Finding:
        """Refuse what cannot be looked into."""
        if item.media_type in UNOPENABLE_TYPES:
            return Finding(
                self.name,
                Verdict.refused,
                f"is a {item.media_type} archive, which the checks cannot open: use zip or "
                "tar (optionally gzip-compressed)",
            )
        return _pass(self, "not an archive the checks cannot open")


def inspector(checks: list[Check], context: CheckContext) -> Callable[[Item], list[Finding]]:
    """A function that runs every check on an item (and, through the archive check, on the
    files inside it)."""

    def inspect(item: Item) -> list[Finding]:
        run = Run(context, inspect)
        findings = []
        for check in checks:
            try:
                findings.append(check.check(item, run))
            except Exception as exc:  # noqa: BLE001 - a check that cannot decide refuses
                findings.append(
                    Finding(
                        check.name,
                        Verdict.refused,
                        f"could not be checked ({type(exc).__name__}: {str(exc)[:200]}): "
                        "nothing unchecked leaves; write it in a plainer format",
                    )
                )
        return findings

    return inspect


def built_in() -> list[Check]:
    """The checks every deployment runs."""
    from insitu.releases.archives import ArchiveCheck
    from insitu.releases.arrays import ArrayCheck

    return [
        SizeCheck(),
        DicomCheck(),
        CopyOfInstanceCheck(),
        ArrayCheck(),
        ArchiveCheck(),
        UnopenableCheck(),
        IdentifierCheck(),
        DeclaredOutputCheck(),
        LargeBinaryCheck(),
    ]


def load_extra(specs: str) -> list[Check]:
    """A deployment's own checks from ``module:attribute`` entries (comma-separated): a class
    (made with no arguments) or an object with ``name`` and ``check``."""
    import importlib

    checks: list[Check] = []
    for spec in filter(None, (s.strip() for s in specs.split(","))):
        module_name, _, attribute = spec.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        check = target() if isinstance(target, type) else target
        if not isinstance(check, Check):
            raise TypeError(f"INSITU_RELEASE_EXTRA_CHECKS: {spec} has no name and check()")
        checks.append(check)
    return checks


def iter_names(findings: list[Finding]) -> Iterator[str]:
    """The checks that did not pass."""
    return (f.check for f in findings if f.verdict != Verdict.passed)

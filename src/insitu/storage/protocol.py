"""The blob store interface: content-addressed (SHA-256), immutable, write-once blobs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFoundError(KeyError):
    """No blob has this digest."""


class BlobStoreError(RuntimeError):
    """The store could not complete an operation; the message says what to check."""


@dataclass(frozen=True)
class StagedBlob:
    """A blob written but not yet published; picklable so that workers can hand it over.

    ``token`` is implementation-specific (a temp file name for the local store).
    """

    digest: str
    size: int
    token: str


def sha256_hex(data: bytes | memoryview) -> str:
    """The store's digest of some bytes."""
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Reject anything that is not a lower-case SHA-256 hex digest (also blocks path tricks)."""
    if not DIGEST_RE.match(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest[:80]!r}")
    return digest


@runtime_checkable
class BlobStore(Protocol):
    """What every blob store implements. ``put`` is atomic and idempotent.

    ``stage`` + ``commit`` is the batch path: many stages (possibly in worker processes),
    then one ``commit`` that makes them all durable and visible together, so that durability
    costs one sync per group rather than one per blob.
    """

    url: str

    def put(self, data: bytes) -> str:
        """Store bytes durably; return their digest."""
        ...

    def stage(self, data: bytes) -> StagedBlob:
        """Write bytes so that a later ``commit`` can publish them."""
        ...

    def commit(self, staged: Sequence[StagedBlob]) -> None:
        """Make staged blobs durable and readable (idempotent)."""
        ...

    def discard(self, staged: Sequence[StagedBlob]) -> None:
        """Drop staged blobs that will not be committed."""
        ...

    def get(self, digest: str) -> bytes:
        """The bytes of a blob; raises BlobNotFoundError."""
        ...

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored."""
        ...

    def size(self, digest: str) -> int:
        """The size in bytes of a stored blob; raises BlobNotFoundError."""
        ...

    def delete(self, digest: str) -> None:
        """Remove a blob (no error if it is absent)."""
        ...

    def digests(self) -> Iterator[str]:
        """Every stored digest, in no particular order."""
        ...

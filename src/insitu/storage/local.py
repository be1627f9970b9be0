"""Local filesystem blob store: ``<root>/sha256/ab/<digest>``, written atomically.

One level of 256 folders (as git does): a second level would mean a new folder for almost
every blob of an ingest, and creating folders costs more than writing the blob's name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from insitu.storage.protocol import (
    DIGEST_RE,
    BlobNotFoundError,
    BlobStoreError,
    StagedBlob,
    check_digest,
    sha256_hex,
)

_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name, use_errno=True) if _libc_name else None


def _sync_filesystem(path: Path) -> None:
    """Flush one filesystem (syncfs(2)); falls back to sync(2) where syncfs is missing."""
    syncfs = getattr(_libc, "syncfs", None) if _libc is not None else None
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


class LocalBlobStore:
    """Content-addressed blobs in a folder. Needs nothing installed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        self._blobs = root / "sha256"
        self._blobs_str = str(self._blobs)
        self._tmp = root / "tmp"
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobStoreError(
                f"cannot create the blob store at {root}: {exc.strerror}; check that "
                "INSITU_STORE_URL or INSITU_HOME points at a writable folder"
            ) from exc

    def _path(self, digest: str) -> Path:
        check_digest(digest)
        return self._blobs / digest[:2] / digest

    def _write_temp(self, data: bytes) -> Path:
        tmp = self._tmp / f"{secrets.token_hex(12)}.part"
        # Blobs never change: read-only from birth, and so are the dataset views' hard links.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return tmp

    def _publish(self, tmp: Path, digest: str) -> None:
        final = self._path(digest)
        if final.exists():
            tmp.unlink(missing_ok=True)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(final)

    def put(self, data: bytes) -> str:
        """Store bytes durably (temp file, fsync, rename, fsync folder)."""
        digest = sha256_hex(data)
        if self.exists(digest):
            return digest
        tmp = self._write_temp(data)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._publish(tmp, digest)
        dir_fd = os.open(self._path(digest).parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return digest

    def stage(self, data: bytes) -> StagedBlob:
        """Write a temp file without syncing; ``commit`` syncs the whole group at once."""
        digest = sha256_hex(data)
        if self.exists(digest):
            return StagedBlob(digest=digest, size=len(data), token="")
        tmp = self._write_temp(data)
        return StagedBlob(digest=digest, size=len(data), token=tmp.name)

    def commit(self, staged: Sequence[StagedBlob]) -> None:
        """Sync the temp files, rename them into place, then sync again for the renames."""
        pending = [s for s in staged if s.token]
        if not pending:
            return
        _sync_filesystem(self.root)
        for blob in pending:
            tmp = self._tmp / blob.token
            if tmp.exists():
                self._publish(tmp, blob.digest)
            elif not self.exists(blob.digest):
                raise BlobStoreError(
                    f"staged blob {blob.digest} vanished before commit; re-run the ingest"
                )
        _sync_filesystem(self.root)

    def discard(self, staged: Sequence[StagedBlob]) -> None:
        """Remove temp files of blobs that will not be committed."""
        for blob in staged:
            if blob.token:
                (self._tmp / blob.token).unlink(missing_ok=True)

    def get(self, digest: str) -> bytes:
        """Read a blob."""
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored."""
        return self._path(digest).is_file()

    def size(self, digest: str) -> int:
        """A blob's size."""
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None

    def link_to(self, digest: str, target: str) -> None:
        """Hard-link a stored blob at ``target`` (zero-copy dataset views); raises
        BlobNotFoundError, or OSError (EXDEV across filesystems)."""
        if not DIGEST_RE.match(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest[:80]!r}")
        try:
            os.link(f"{self._blobs_str}/{digest[:2]}/{digest}", target)
        except FileNotFoundError:
            if not self.exists(digest):
                raise BlobNotFoundError(digest) from None
            raise

    def path_of(self, digest: str) -> Path:
        """Where a stored blob lies (for zero-copy dataset views); raises BlobNotFoundError."""
        path = self._path(digest)
        if not path.is_file():
            raise BlobNotFoundError(digest)
        return path

    def delete(self, digest: str) -> None:
        """Remove a blob."""
        self._path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        """All stored digests."""
        for path in self._blobs.glob("*/*"):
            if path.is_file():
                yield path.name

    def clean_temp(self, older_than_s: float = 3600.0) -> int:
        """Delete temp files a killed process left behind; returns how many were removed.

        Only old ones: a younger temp file may belong to an ingest that is still running.
        """
        removed = 0
        cutoff = time.time() - older_than_s
        for path in self._tmp.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

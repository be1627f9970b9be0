"""One conformance suite that every BlobStore implementation passes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from insitu.storage.local import LocalBlobStore
from insitu.storage.protocol import BlobNotFoundError, BlobStore
from insitu.storage.s3 import S3BlobStore
from insitu.storage.service import open_store


def test_put_get_roundtrip_and_digest(store: BlobStore) -> None:
    data = b"de-identified bytes" * 1000
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data
    assert store.exists(digest)
    assert store.size(digest) == len(data)


def test_put_is_idempotent(store: BlobStore) -> None:
    first = store.put(b"same")
    second = store.put(b"same")
    assert first == second
    assert list(store.digests()).count(first) == 1


def test_missing_blob_raises(store: BlobStore) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(missing)
    with pytest.raises(BlobNotFoundError):
        store.get(missing)
    with pytest.raises(BlobNotFoundError):
        store.size(missing)


def test_stage_then_commit_publishes(store: BlobStore) -> None:
    staged = [store.stage(f"blob {i}".encode()) for i in range(5)]
    store.commit(staged)
    store.commit(staged)  # idempotent
    for i, blob in enumerate(staged):
        assert store.get(blob.digest) == f"blob {i}".encode()
    assert {b.digest for b in staged} <= set(store.digests())


def test_delete_removes_and_tolerates_absent(store: BlobStore) -> None:
    digest = store.put(b"to delete")
    store.delete(digest)
    assert not store.exists(digest)
    store.delete(digest)


def test_rejects_non_digest_keys(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="digest"):
        store.get("../../etc/passwd")


def test_local_stage_is_invisible_until_commit(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    staged = store.stage(b"pending")
    assert not store.exists(staged.digest)
    store.discard([staged])
    store.commit([])
    assert not store.exists(staged.digest)
    assert not list((tmp_path / "blobs" / "tmp").iterdir())


def test_local_leftover_temp_files_are_cleaned(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.stage(b"left behind by a killed process")
    assert store.clean_temp(older_than_s=0) == 1


def test_store_url_selects_implementation(tmp_path: Path) -> None:
    assert isinstance(open_store(f"file://{tmp_path}"), LocalBlobStore)
    assert isinstance(open_store("s3://bucket?endpoint=http://127.0.0.1:1"), S3BlobStore)
    with pytest.raises(Exception, match="unknown scheme"):
        open_store("ftp://nowhere")

"""Blob store selection: the setting ``INSITU_STORE_URL`` picks the implementation."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from insitu.settings import Settings
from insitu.storage.local import LocalBlobStore
from insitu.storage.protocol import BlobStore, BlobStoreError
from insitu.storage.s3 import S3BlobStore


def open_store(
    url: str, s3_access_key: str = "", s3_secret_key: str = ""
) -> LocalBlobStore | S3BlobStore:
    """The store a URL names: ``file:///path`` or ``s3://bucket?endpoint=...``."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        return LocalBlobStore(Path(urlparse(url).path))
    if scheme == "s3":
        return S3BlobStore(url, s3_access_key, s3_secret_key)
    raise BlobStoreError(
        f"INSITU_STORE_URL {url!r} has an unknown scheme; use file:///path or s3://bucket"
    )


def store_from_settings(settings: Settings) -> BlobStore:
    """The deployment's blob store."""
    store: BlobStore = open_store(
        settings.resolved_store_url,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
    )
    return store

"""Storage fixtures: every blob store implementation, the S3 one on a real SeaweedFS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.storage.local import LocalBlobStore
from insitu.storage.protocol import BlobStore
from insitu.storage.s3 import S3BlobStore
from tests.servers import S3Server


# One SeaweedFS server at a time: all S3 tests share one xdist worker (--dist loadgroup).
@pytest.fixture(
    params=["local", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.xdist_group("s3")])]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    s3 = S3BlobStore(f"s3://conformance/{tmp_path.name}?endpoint={server.endpoint}", "any", "any")
    s3.ensure_bucket()
    yield s3

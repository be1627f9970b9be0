"""S3-compatible blob store (boto3): ``s3://bucket/prefix?endpoint=http://host:port``.

S3 PUTs are atomic and durable on success, so staging uploads at once and commit has nothing
left to do. Each process builds its own client (clients cannot be pickled to workers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from insitu.storage.protocol import (
    BlobNotFoundError,
    BlobStoreError,
    StagedBlob,
    check_digest,
    sha256_hex,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class S3BlobStore:
    """Content-addressed blobs in an S3 bucket."""

    def __init__(self, url: str, access_key: str = "", secret_key: str = "") -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise BlobStoreError(f"store URL {url!r} is not of the form s3://bucket[/prefix]")
        query = parse_qs(parsed.query)
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.endpoint = query.get("endpoint", [None])[0]
        self.region = query.get("region", ["us-east-1"])[0]
        self._access_key = access_key or None
        self._secret_key = secret_key or None
        self._client: S3Client | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self) -> S3Client:
        """This process's boto3 client."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=self._access_key,
                aws_secret_access_key=self._secret_key,
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def _key(self, digest: str) -> str:
        check_digest(digest)
        key = f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"
        return f"{self.prefix}/{key}" if self.prefix else key

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (used by ``insitu init``)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, data: bytes) -> str:
        """Upload a blob unless it is there already."""
        digest = sha256_hex(data)
        if not self.exists(digest):
            self.client.put_object(Bucket=self.bucket, Key=self._key(digest), Body=data)
        return digest

    def stage(self, data: bytes) -> StagedBlob:
        """Upload at once: an S3 PUT is already atomic and durable."""
        digest = self.put(data)
        return StagedBlob(digest=digest, size=len(data), token="")

    def commit(self, staged: Sequence[StagedBlob]) -> None:
        """Nothing to do: staged blobs were uploaded whole."""
        del staged

    def discard(self, staged: Sequence[StagedBlob]) -> None:
        """Nothing to do: callers delete unreferenced blobs through ``delete``."""
        del staged

    def get(self, digest: str) -> bytes:
        """Download a blob."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(digest))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobNotFoundError(digest) from None
            raise
        return response["Body"].read()

    def _head(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self._key(digest)))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored."""
        return self._head(digest) is not None

    def size(self, digest: str) -> int:
        """A blob's size."""
        head = self._head(digest)
        if head is None:
            raise BlobNotFoundError(digest)
        return int(head["ContentLength"])

    def delete(self, digest: str) -> None:
        """Remove a blob."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(digest))

    def digests(self) -> Iterator[str]:
        """All stored digests."""
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"].rsplit("/", 1)[-1]

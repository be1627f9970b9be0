"""Uploads through the API: streamed, de-identified, steward only, spool removed."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from insitu.core.platform import Platform
from insitu.web.app import create_app
from tests.factories import encode, minimal_dataset, user_token


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client


def test_steward_uploads_a_file_and_a_zip_and_finds_them(
    platform: Platform, client: TestClient, tmp_path: Path
) -> None:
    token = user_token(platform, "stew", "steward")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"}
    # A spool folder of this test's own: uploads of tests running beside it stay out of it.
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    platform.settings.tmp_dir = spool_dir
    before = set(spool_dir.glob("insitu-upload-*"))
    assert before == set()
    single = client.post(
        "/api/v1/uploads?site=SITE-B",
        content=encode(minimal_dataset(Modality="MR"), pixels=bytes(64)),
        headers=headers,
    )
    assert single.status_code == 201, single.text
    assert single.json()["counts"]["ingested"] == 1
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for _ in range(3):
            zf.writestr(f"DOE_JOHN/{_}.dcm", encode(minimal_dataset(), pixels=bytes(64)))
        zf.writestr("DOE_JOHN/readme.txt", "not dicom")
    response = client.post(
        "/api/v1/uploads?filename=export.zip", content=archive.getvalue(), headers=headers
    )
    report = response.json()
    assert report["counts"]["ingested"] == 3
    assert report["counts"]["failed"] == 1
    assert set(spool_dir.glob("insitu-upload-*")) == before
    found = client.get("/api/v1/catalog/series?modality=MR", headers=headers).json()
    assert found["total"] == 1
    assert found["items"][0]["site"] == "SITE-B"
    batch = client.get(f"/api/v1/ingest/batches/{report['batch_id']}", headers=headers).json()
    assert batch["status"] == "completed"
    assert client.get("/api/v1/ingest/batches/9999", headers=headers).status_code == 404


def test_bad_upload_parameters_are_explained(platform: Platform, client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {user_token(platform, 'stew', 'steward')}"}
    empty = client.post("/api/v1/uploads", content=b"", headers=headers)
    assert empty.status_code == 422
    assert "empty" in empty.json()["detail"]
    options = client.post("/api/v1/uploads?options=nope", content=b"x", headers=headers)
    assert options.status_code == 422
    assert "unknown de-identification option" in options.json()["detail"]
    site = client.post("/api/v1/uploads?site=../x", content=b"x", headers=headers)
    assert site.status_code == 422


def test_upload_size_limit(platform: Platform, client: TestClient) -> None:
    platform.settings.upload_max_bytes = 1000
    headers = {"Authorization": f"Bearer {user_token(platform, 'stew', 'steward')}"}
    response = client.post("/api/v1/uploads", content=b"x" * 5000, headers=headers)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_quarantine_is_listed_with_reasons(platform: Platform, client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {user_token(platform, 'stew', 'steward')}"}
    burned = minimal_dataset(BurnedInAnnotation="YES")
    client.post("/api/v1/uploads", content=encode(burned, pixels=bytes(64)), headers=headers)
    items = client.get("/api/v1/quarantine", headers=headers).json()["items"]
    assert len(items) == 1
    assert "Burned In Annotation" in items[0]["reason"]
    assert client.get("/api/v1/catalog/stats", headers=headers).json()["instances"] == 0


def test_planted_identifiers_in_an_upload_go_through_the_same_engine(
    platform: Platform, client: TestClient
) -> None:
    from tests.ingest import adversarial

    token = user_token(platform, "stew", "steward")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"}
    answer = client.post(
        "/api/v1/uploads?site=SITE-B", content=adversarial.code_sequence_file(), headers=headers
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["counts"]["ingested"] == 1
    for digest in platform.store.digests():
        assert b"QZ4" not in platform.store.get(digest)

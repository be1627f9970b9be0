"""The datasets API end to end: a steward builds and releases, a researcher is granted and uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from insitu.core.platform import Platform
from insitu.ingest import service as ingest
from insitu.ingest.corpus import generate_corpus
from insitu.ingest.deid.table import Options
from insitu.ingest.sources import iter_sources
from insitu.web.app import create_app
from tests.factories import user_token


@pytest.fixture
def client(platform: Platform, tmp_path: Path) -> Iterator[TestClient]:
    corpus = generate_corpus(
        tmp_path / "export", subjects=2, ct_slices=2, mr_slices=1, rows=16, columns=16
    )
    ingest.ingest(platform, iter_sources([corpus.root]), site="SITE-A", options=Options.parse(""))
    with TestClient(create_app(platform)) as test_client:
        yield test_client


def _auth(platform: Platform, name: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_token(platform, name, role)}"}


def test_build_release_grant_use(platform: Platform, client: TestClient) -> None:
    steward = _auth(platform, "sam", "steward")
    researcher = _auth(platform, "rita", "researcher")
    created = client.post(
        "/api/v1/datasets",
        json={
            "name": "ct-only",
            "title": "CT only",
            "tier": "synthetic",
            "query": {"modality": "CT"},
        },
        headers=steward,
    )
    assert created.status_code == 201, created.text
    assert created.json()["provenance"]["instances"] == 4
    # A draft is the stewards' business only.
    assert client.get("/api/v1/datasets/ct-only", headers=researcher).status_code == 403
    assert client.get("/api/v1/datasets", headers=researcher).json() == []
    released = client.post("/api/v1/datasets/ct-only/release", headers=steward).json()
    assert released["state"] == "released"
    assert len(released["content_hash"]) == 64
    granted = client.post("/api/v1/datasets/ct-only/grants", json={"user": "rita"}, headers=steward)
    assert granted.status_code == 201
    use = client.get("/api/v1/datasets/ct-only/use", headers=researcher).json()
    assert use == {"allowed": False, "reason": "accept the dataset's terms of use first"}
    assert client.post("/api/v1/datasets/ct-only/terms", headers=researcher).status_code == 200
    assert client.get("/api/v1/datasets/ct-only/use", headers=researcher).json()["allowed"]
    shown = client.get("/api/v1/datasets/ct-only", headers=researcher).json()
    assert "grants" not in shown  # grants are for stewards' eyes
    edit = client.post("/api/v1/datasets/ct-only/release", headers=steward)
    assert edit.status_code == 409
    invalid = client.post(
        "/api/v1/datasets/ct-only/invalidate", json={"reason": "wrong labels"}, headers=steward
    )
    assert invalid.json()["invalidated_reason"] == "wrong labels"
    use = client.get("/api/v1/datasets/ct-only/use", headers=researcher).json()
    assert use == {"allowed": False, "reason": "the dataset was invalidated: wrong labels"}


def test_published_datasets_are_listed_for_everyone_signed_in(
    platform: Platform, client: TestClient
) -> None:
    steward = _auth(platform, "sam", "steward")
    other = _auth(platform, "olaf", "researcher")
    client.post(
        "/api/v1/datasets",
        json={"name": "mr", "title": "MR", "query": {"modality": "MR"}},
        headers=steward,
    )
    client.post("/api/v1/datasets/mr/release", headers=steward)
    assert client.post("/api/v1/datasets/mr/publish", headers=steward).status_code == 200
    assert [d["name"] for d in client.get("/api/v1/datasets", headers=other).json()] == ["mr"]
    assert client.get("/api/v1/datasets/mr/use", headers=other).json()["allowed"] is False


def test_bad_requests_are_explained(platform: Platform, client: TestClient) -> None:
    steward = _auth(platform, "sam", "steward")
    both = client.post(
        "/api/v1/datasets",
        json={"name": "x1", "title": "X", "query": {}, "series": ["1.2.3"]},
        headers=steward,
    )
    assert both.status_code == 422
    assert "not both" in both.json()["detail"]
    empty = client.post(
        "/api/v1/datasets",
        json={"name": "x2", "title": "X", "query": {"modality": "US"}},
        headers=steward,
    )
    assert empty.status_code == 422
    assert "empty" in empty.json()["detail"]


def test_access_requests_are_approved_with_a_grant_or_refused_with_a_reason(
    platform: Platform, client: TestClient
) -> None:
    steward = _auth(platform, "sam", "steward")
    rita = _auth(platform, "rita", "researcher")
    olaf = _auth(platform, "olaf", "researcher")
    client.post(
        "/api/v1/datasets",
        json={"name": "pub", "title": "P", "query": {"modality": "CT"}},
        headers=steward,
    )
    early = client.post("/api/v1/datasets/pub/requests", json={"purpose": "x"}, headers=rita)
    assert early.status_code == 403  # a draft is not visible to her, so nothing to request
    client.post("/api/v1/datasets/pub/release", headers=steward)
    client.post("/api/v1/datasets/pub/publish", headers=steward)
    asked = client.post(
        "/api/v1/datasets/pub/requests", json={"purpose": "nodule detection"}, headers=rita
    )
    assert asked.status_code == 201
    again = client.post("/api/v1/datasets/pub/requests", json={"purpose": "y"}, headers=rita)
    assert again.status_code == 409
    assert "already asked" in again.json()["detail"]
    other = client.post("/api/v1/datasets/pub/requests", json={"purpose": "z"}, headers=olaf)
    assert client.get("/api/v1/datasets/pub/requests", headers=rita).status_code == 403
    listed = client.get("/api/v1/datasets/pub/requests", headers=steward).json()
    assert {(r["user"], r["state"]) for r in listed} == {("rita", "pending"), ("olaf", "pending")}
    rid, oid = asked.json()["id"], other.json()["id"]
    assert (
        client.post(
            f"/api/v1/datasets/pub/requests/{rid}/approve", json={}, headers=rita
        ).status_code
        == 403
    )
    assert (
        client.post(
            f"/api/v1/datasets/pub/requests/{oid}/refuse", json={}, headers=steward
        ).status_code
        == 422
    )  # a refusal needs a reason
    client.post(
        f"/api/v1/datasets/pub/requests/{oid}/refuse",
        json={"note": "not a member"},
        headers=steward,
    )
    approved = client.post(f"/api/v1/datasets/pub/requests/{rid}/approve", json={}, headers=steward)
    assert approved.json()["state"] == "approved"
    client.post("/api/v1/datasets/pub/terms", headers=rita)
    assert client.get("/api/v1/datasets/pub/use", headers=rita).json()["allowed"]
    assert not client.get("/api/v1/datasets/pub/use", headers=olaf).json()["allowed"]
    twice = client.post(f"/api/v1/datasets/pub/requests/{rid}/approve", json={}, headers=steward)
    assert twice.status_code == 409


def test_statistics_suppress_small_counts_for_non_stewards(
    platform: Platform, client: TestClient
) -> None:
    steward = _auth(platform, "sam", "steward")
    reader = _auth(platform, "rhea", "researcher")
    client.post(
        "/api/v1/datasets", json={"name": "all", "title": "All", "query": {}}, headers=steward
    )
    client.post("/api/v1/datasets/all/release", headers=steward)
    client.post("/api/v1/datasets/all/publish", headers=steward)
    full = client.get("/api/v1/datasets/all/stats", headers=steward).json()
    assert full["subjects"] == 2
    assert full["instances"] == 6
    assert full["by_modality"] == {"CT": 2, "MR": 2}
    assert full["by_age_band"] == {"unknown": 2}  # this corpus was ingested without clinical data
    shown = client.get("/api/v1/datasets/all/stats", headers=reader).json()
    assert shown["subjects"] == "<5"
    assert shown["instances"] == 6
    assert shown["by_modality"] == {"CT": "<5", "MR": "<5"}
    assert shown["bytes"] == full["bytes"]

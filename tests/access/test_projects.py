"""Projects: admins create them, admins and leads manage members, only members see them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.ledger.models import LedgerEntry
from insitu.web.app import create_app
from tests.factories import user_token


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client


@pytest.fixture
def people(platform: Platform) -> dict[str, dict[str, str]]:
    roles = {"admin": "admin", "lena": "researcher", "max": "researcher", "eve": "researcher"}
    return {
        name: {"Authorization": f"Bearer {user_token(platform, name, role)}"}
        for name, role in roles.items()
    }


def _project_events(platform: Platform) -> list[dict[str, Any]]:
    with session_scope(platform.sessions) as session:
        rows = session.scalars(select(LedgerEntry).order_by(LedgerEntry.index))
        return [ledger.entry_as_dict(e) for e in rows if e.event_type.startswith("access.project")]


def test_membership_is_managed_by_admins_and_leads(
    platform: Platform, client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    created = client.post(
        "/api/v1/projects",
        json={"name": "lung-ai", "title": "Lung nodules", "idp_group": "/consortia/lung"},
        headers=people["admin"],
    )
    assert created.status_code == 201, created.text
    refused = client.post("/api/v1/projects", json={"name": "mine"}, headers=people["lena"])
    assert refused.status_code == 403
    lead = client.post(
        "/api/v1/projects/lung-ai/members",
        json={"user": "lena", "role": "lead"},
        headers=people["admin"],
    )
    assert lead.status_code == 200
    added = client.post(
        "/api/v1/projects/lung-ai/members", json={"user": "max"}, headers=people["lena"]
    )
    assert added.json()["members"] == [
        {"user": "lena", "role": "lead"},
        {"user": "max", "role": "member"},
    ]
    # A plain member cannot manage, and an outsider cannot even see.
    assert (
        client.post(
            "/api/v1/projects/lung-ai/members", json={"user": "eve"}, headers=people["max"]
        ).status_code
        == 403
    )
    assert client.get("/api/v1/projects/lung-ai", headers=people["eve"]).status_code == 403
    assert client.get("/api/v1/projects/no-such", headers=people["eve"]).json() == {
        "detail": "no project 'no-such' of yours"
    }
    assert client.get("/api/v1/projects", headers=people["eve"]).json() == []
    assert [p["name"] for p in client.get("/api/v1/projects", headers=people["max"]).json()] == [
        "lung-ai"
    ]
    removed = client.delete("/api/v1/projects/lung-ai/members/max", headers=people["lena"])
    assert removed.json()["members"] == [{"user": "lena", "role": "lead"}]
    kinds = [e["type"] for e in _project_events(platform)]
    assert kinds == [
        "access.project.created",
        "access.project.member_added",
        "access.project.member_added",
        "access.project.member_removed",
    ]
    assert "lena" not in str(_project_events(platform))  # pseudonymous ids only


def test_bad_project_requests_change_nothing(
    platform: Platform, client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    assert (
        client.post(
            "/api/v1/projects", json={"name": "Bad Name"}, headers=people["admin"]
        ).status_code
        == 422
    )
    client.post("/api/v1/projects", json={"name": "p1"}, headers=people["admin"])
    assert (
        client.post("/api/v1/projects", json={"name": "p1"}, headers=people["admin"]).status_code
        == 422
    )
    unknown = client.post(
        "/api/v1/projects/p1/members", json={"user": "ghost"}, headers=people["admin"]
    )
    assert unknown.status_code == 422
    assert len(_project_events(platform)) == 1

"""Errors met in a browser are pages that say what happened and what to do next; API and
DICOMweb clients keep their JSON errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from insitu.core.platform import Platform
from insitu.web import errors
from insitu.web.app import create_app
from tests.factories import user_token

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client


def _as(platform: Platform, name: str, role: str) -> dict[str, str]:
    return BROWSER | {"Authorization": f"Bearer {user_token(platform, name, role)}"}


def test_unknown_pages_say_so_and_where_to_go(client: TestClient) -> None:
    answer = client.get("/no-such-page", headers=BROWSER)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "Nothing here" in answer.text
    assert "start again from the dataset list" in answer.text
    assert 'href="/explore"' in answer.text


def test_refused_forms_answer_a_page_naming_the_reason(
    platform: Platform, client: TestClient
) -> None:
    researcher = _as(platform, "rhea", "researcher")
    refused = client.post("/admin/users/rhea/role", data={"role": "admin"}, headers=researcher)
    assert refused.status_code == 403
    assert "You may not do this" in refused.text
    assert "ask the dataset&#39;s stewards" in refused.text
    assert "rhea · researcher" in refused.text  # still signed in: the page knows who you are
    admin = _as(platform, "ada", "admin")
    missing = client.post("/admin/users/nobody/role", data={"role": "steward"}, headers=admin)
    assert missing.status_code == 404
    assert "no account &#39;nobody&#39;" in missing.text
    wrong = client.post("/admin/users/rhea/role", data={"role": "emperor"}, headers=admin)
    assert wrong.status_code == 422
    assert "The form has a problem" in wrong.text
    assert "role: Input should be" in wrong.text  # the field, named
    anonymous = client.post("/admin/users/rhea/role", data={"role": "admin"}, headers=BROWSER)
    assert anonymous.status_code == 401
    assert 'href="/login"' in anonymous.text


def test_machines_keep_json_errors(platform: Platform, client: TestClient) -> None:
    researcher = _as(platform, "rhea", "researcher")
    api = client.get("/api/v1/audit/access-log", headers=researcher)
    assert api.status_code == 403
    assert api.headers["content-type"] == "application/json"
    assert "detail" in api.json()
    wado = client.get("/dicomweb/studies/1.2.3", headers=researcher)
    assert wado.status_code == 403
    assert "detail" in wado.json()
    plain = client.post("/admin/users/rhea/role", data={"role": "admin"})  # Accept: */*
    assert plain.json()["detail"]


def test_server_errors_show_no_internals(platform: Platform) -> None:
    app = FastAPI()
    app.state.platform = platform

    @app.get("/broken")
    def broken() -> None:
        raise RuntimeError("secret internals /var/lib/insitu")

    errors.install(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/broken", headers=BROWSER)
        assert page.status_code == 500
        assert "Something went wrong" in page.text
        assert "tell the platform&#39;s operator" in page.text
        assert "secret internals" not in page.text
        data = client.get("/broken")
        assert data.status_code == 500
        assert "secret internals" not in data.text

"""Browser sign-in over HTTP: cookies, CSRF, open redirects, lockout, sign-out."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from insitu.access import service as access
from insitu.access.models import ApiToken, Role
from insitu.access.permissions import SESSION_COOKIE, csrf_token_for
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.web.app import create_app

PASSWORD = "a long enough secret"


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with session_scope(platform.sessions) as session:
        user = access.create_user(session, "nina", Role.steward)
        access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)
    with TestClient(create_app(platform), follow_redirects=False) as test_client:
        yield test_client


def _form(client: TestClient, next_path: str = "/") -> dict[str, str]:
    page = client.get(f"/login?next={next_path}")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return {"csrf_token": match.group(1), "name": "nina", "password": PASSWORD, "next": next_path}


def _tokens(platform: Platform) -> int:
    with session_scope(platform.sessions) as session:
        return session.scalar(select(func.count(ApiToken.id))) or 0


def test_sign_in_sets_a_strict_session_cookie_and_shows_the_home_page(
    client: TestClient, platform: Platform
) -> None:
    assert client.get("/").headers["location"] == "/login?next=/"
    answer = client.post("/login", data=_form(client, "/docs"))
    assert answer.status_code == 303
    assert answer.headers["location"] == "/docs"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if SESSION_COOKIE in h)
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http in this test; see the https test
    home = client.get("/")
    assert home.status_code == 200
    assert "Welcome, nina" in home.text


def test_the_session_cookie_is_secure_over_https(platform: Platform) -> None:
    with TestClient(
        create_app(platform), base_url="https://testserver", follow_redirects=False
    ) as secure:
        with session_scope(platform.sessions) as session:
            user = access.create_user(session, "tls", Role.researcher)
            access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)
        form = _form(secure)
        form["name"] = "tls"
        answer = secure.post("/login", data=form)
        cookie = next(h for h in answer.headers.get_list("set-cookie") if SESSION_COOKIE in h)
        assert "Secure" in cookie


def test_a_form_post_without_its_csrf_token_is_refused(
    client: TestClient, platform: Platform
) -> None:
    before = _tokens(platform)
    form = _form(client)
    form["csrf_token"] = "forged"
    answer = client.post("/login", data=form)
    assert answer.status_code == 403
    assert "did not come from this site" in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    assert _tokens(platform) == before


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"]
)
def test_next_cannot_redirect_off_site(client: TestClient, target: str) -> None:
    form = _form(client)
    form["next"] = target
    answer = client.post("/login", data=form)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"


def test_cookie_requests_that_change_things_need_the_csrf_token(
    client: TestClient, platform: Platform
) -> None:
    client.post("/login", data=_form(client))
    session_token = client.cookies[SESSION_COOKIE]
    before = _tokens(platform)
    refused = client.post("/api/v1/tokens", json={"label": "x"})
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert _tokens(platform) == before
    allowed = client.post(
        "/api/v1/tokens",
        json={"label": "x"},
        headers={"X-CSRF-Token": csrf_token_for(platform, session_token)},
    )
    assert allowed.status_code == 201
    assert client.get("/api/v1/whoami").json()["name"] == "nina"  # reads need no CSRF token


def test_sign_out_needs_the_csrf_token_and_revokes_the_session(
    client: TestClient, platform: Platform
) -> None:
    client.post("/login", data=_form(client))
    session_token = client.cookies[SESSION_COOKIE]
    assert client.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    assert client.get("/").status_code == 200
    answer = client.post("/logout", data={"csrf_token": csrf_token_for(platform, session_token)})
    assert answer.status_code == 303
    client.cookies.set(SESSION_COOKIE, session_token)  # a stolen copy of the cookie
    assert client.get("/api/v1/whoami").status_code == 401


def test_wrong_passwords_show_the_form_again_and_lock(client: TestClient) -> None:
    for _ in range(access.MAX_FAILED_LOGINS - 1):
        form = _form(client)
        form["password"] = "not the password"
        answer = client.post("/login", data=form)
        assert answer.status_code == 401
        assert "wrong account name or password" in answer.text
    form = _form(client)
    form["password"] = "not the password"
    assert client.post("/login", data=form).status_code == 403
    assert client.post("/login", data=_form(client)).status_code == 403  # locked

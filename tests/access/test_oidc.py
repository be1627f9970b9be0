"""OpenID Connect sign-in end to end: Chromium, insitu and a real oidc-provider on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from insitu.access import service as access
from insitu.access.models import Role, User
from insitu.core.platform import Platform, open_platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.ledger.models import LedgerEntry
from tests.conftest import make_settings
from tests.servers import free_port, live_app, oidc_provider
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS

ACCOUNTS = {
    "olga": {"roles": ["steward", "offline_access"], "groups": ["/consortia/lung"]},
    "norole": {"roles": ["offline_access"], "groups": []},
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
]


@dataclass
class Site:
    url: str
    platform: Platform


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    port = free_port()
    with oidc_provider(f"http://127.0.0.1:{port}/login/oidc/callback", ACCOUNTS) as provider:
        (tmp_path / "home").mkdir()
        settings = make_settings(
            tmp_path / "home",
            oidc_issuer=provider.issuer,
            oidc_client_id=provider.client_id,
            oidc_client_secret=provider.client_secret,
        )
        platform = open_platform(settings)
        with session_scope(platform.sessions) as session:
            access.create_project(session, "lung", "", ledger.HOST_ACTOR, "/consortia/lung")
        with live_app(platform, port=port) as url:
            yield Site(url, platform)
        platform.close()


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_context().new_page()
        browser.close()


def _sign_in_at_the_provider(page: Any, username: str) -> None:
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    consent = page.locator("button[type=submit]")
    if consent.count():
        consent.first.click()


def test_first_oidc_login_creates_the_user_with_roles_and_projects(
    site: Site, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if "oidc/callback" in r.url else None)
    page.goto(site.url + "/login")
    page.click("text=Sign in with your institution")
    state_cookie = next(c for c in page.context.cookies() if c["name"] == "insitu_oidc")
    _sign_in_at_the_provider(page, "olga")
    expect(page.get_by_role("heading", name="Welcome, olga")).to_be_visible()
    page.screenshot(path=str(tmp_path / "oidc-home.png"))
    with session_scope(site.platform.sessions) as session:
        user = session.scalars(select(User).where(User.name == "olga")).one()
        assert user.role == Role.steward
        assert user.idp_subject is not None
        lung = access.get_project(session, "lung")
        assert lung is not None
        assert access.project_role(session, lung, user.id) is not None
        kinds = [e.event_type for e in session.scalars(select(LedgerEntry))]
    assert "access.login" in kinds
    assert "access.project.member_added" in kinds
    # Replaying the callback is refused: without the browser's state cookie by insitu...
    url = callbacks[-1]
    replay = httpx.get(url, follow_redirects=False)
    assert replay.status_code == 403
    assert "no sign-in in progress" in replay.text
    # ...and with a copy of it, by the provider: the authorization code was used already.
    cookie = f"insitu_oidc={state_cookie['value']}"
    replay = httpx.get(url, headers={"cookie": cookie}, follow_redirects=False)
    assert replay.status_code == 403
    assert "refused the authorization code" in replay.text


def test_a_user_without_an_insitu_role_is_refused(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(site.url + "/login/oidc")
    _sign_in_at_the_provider(page, "norole")
    expect(page.get_by_role("alert")).to_contain_text("no insitu role")
    with session_scope(site.platform.sessions) as session:
        assert session.scalars(select(User).where(User.name == "norole")).first() is None


def test_next_cannot_send_an_oidc_sign_in_off_site(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(site.url + "/login/oidc?next=//evil.example/steal")
    _sign_in_at_the_provider(page, "olga")
    expect(page.get_by_role("heading", name="Welcome, olga")).to_be_visible()
    assert page.url == site.url + "/"

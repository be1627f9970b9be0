"""The release pages: who sees what, the reviewer's form (with its CSRF token), and a real
Chromium walking a review, with screenshots."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from insitu.access import service as access
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.web.app import create_app
from tests.releases.conftest import Desk
from tests.releases.test_smuggling import HONEST
from tests.servers import live_app
from tests.web.test_browser import CHROMIUM, _shot, page

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PASSWORD = "a long enough secret"
__all__ = ["page"]  # the browser fixture


@pytest.fixture
def client(desk: Desk) -> Iterator[TestClient]:
    with session_scope(desk.platform.sessions) as session:
        for name in ("rita", "sue", "otto"):
            user = access.get_user(session, name)
            assert user is not None
            access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)
    with TestClient(create_app(desk.platform)) as test_client:
        yield test_client


def _sign_in(client: TestClient, name: str) -> None:
    client.cookies.clear()
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    answer = client.post("/login", data={"name": name, "password": PASSWORD,
                                         "csrf_token": token.group(1)})  # fmt: skip
    assert answer.status_code == 200, answer.text


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


@SQLITE
def test_pages_as_each_person(desk: Desk, client: TestClient) -> None:
    release_id = desk.collect(desk.job({**HONEST, "notes.md": b"# notes\n"}))
    url = f"/releases/{release_id}"
    gone = client.get(url, follow_redirects=False)
    assert gone.status_code == 303
    assert gone.headers["location"] == f"/login?next={url}"

    _sign_in(client, "otto")  # a steward, not of lung
    refused = client.get(url)
    assert refused.status_code == 403
    assert "You cannot see this release request" in refused.text

    _sign_in(client, "rita")  # the requester: no form, no previews, no downloads yet
    mine = client.get(url).text
    assert "notes.md" in mine
    assert "the tool&#39;s outputs list" in mine
    assert "Approve" not in mine
    assert "/preview" not in mine
    assert "Download" not in mine
    own_vote = client.post(f"{url}/vote", data={"decision": "approve", "csrf_token": _csrf(mine)})
    assert own_vote.status_code == 403

    _sign_in(client, "sue")
    queue = client.get("/releases").text
    assert f'href="/releases/{release_id}"' in queue
    review = client.get(url).text
    assert "classifier@1.0.0" in review  # what made the results
    assert review.count("/preview") == 3  # metrics.json, roc.png, notes.md; not the model
    forged = client.post(f"{url}/vote", data={"decision": "approve"})
    assert forged.status_code == 403  # no CSRF token
    voted = client.post(f"{url}/vote", follow_redirects=False,
                        data={"decision": "approve", "comment": "aggregates only",
                              "csrf_token": _csrf(review)})  # fmt: skip
    assert voted.status_code == 303
    assert "approved" in client.get(url).text

    _sign_in(client, "rita")
    approved = client.get(url).text
    assert approved.count(">Download</a>") == len(HONEST) + 1


@SQLITE
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
def test_a_review_in_chromium(desk: Desk, client: TestClient, page: object, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    desk.collect(desk.job({"per_subject.csv": b"subject\n", "scan.txt": desk.instance()}))
    release_id = desk.collect(desk.job({**HONEST, "notes.md": b"# notes\n"}))
    with live_app(desk.platform) as site:
        page.goto(f"{site}/releases")
        page.fill("#name", "sue")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.goto(f"{site}/releases")
        page.get_by_role("link", name=f"Release {release_id}").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("in review")
        with page.expect_popup() as popup:
            page.get_by_role("link", name="Open metrics.json in the browser").click()
        expect(popup.value.locator("body")).to_contain_text('"auc": 0.81')
        popup.value.close()
        page.fill("#comment", "Aggregates and a plot; the notes are harmless.")
        assert _shot(page, tmp_path, "release-review").stat().st_size > 20_000
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("approved")
        page.click("text=Sign out")
        page.goto(f"{site}/releases/{release_id - 1}")
        page.fill("#name", "rita")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        expect(page.get_by_role("alert")).to_contain_text("What to change")
        _shot(page, tmp_path, "release-refused")

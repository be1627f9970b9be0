"""My work in the browser: the submit form shows the preflight before queueing, the job page
follows the job (live log, cancel) and links its release. In Chromium, with the real
scheduler and bubblewrap sandbox: submit from the form, watch it finish, see the release."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from insitu.access import service as access
from insitu.db import session_scope
from insitu.jobs.scheduler import Scheduler
from insitu.ledger import service as ledger
from insitu.web.app import create_app
from tests.jobs.conftest import Site, needs_sandbox, shared_tmp, site, tools_root
from tests.servers import live_app
from tests.web.test_browser import CHROMIUM, _shot, page

pytestmark = [needs_sandbox, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
__all__ = ["page", "shared_tmp", "site", "tools_root"]  # fixtures
PASSWORD = "a long enough secret"


def _headers(site: Site, name: str) -> dict[str, str]:
    with session_scope(site.platform.sessions) as session:
        user = access.get_user(session, name)
        assert user is not None
        access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)
        return {"Authorization": f"Bearer {access.issue_token(session, user)}"}


def test_the_form_checks_before_it_queues(site: Site) -> None:
    rita, stan = _headers(site, "rita"), _headers(site, "stan")
    with TestClient(create_app(site.platform)) as client:
        form = client.get("/work/jobs-new", headers=rita)
        assert form.status_code == 200
        assert "hello@1.0.0" in form.text
        assert ">lung<" in form.text
        assert "nogrant" not in form.text  # only datasets Rita may use
        wrong = {"tool": "hello@1.0.0", "dataset": "lung", "flavor": "no-gpu",
                 "command": "python /data/lung/run.py", "action": "check"}  # fmt: skip
        checked = client.post("/work/jobs-new", data=wrong, headers=rita)
        assert checked.status_code == 422
        assert "fix these first" in checked.text
        assert "/data/lung-v1" in checked.text  # the fix, named
        good = wrong | {"command": ""}
        assert "ready to submit" in client.post("/work/jobs-new", data=good, headers=rita).text
        assert client.get("/work/jobs", headers=rita).text.count("Job ") == 0  # nothing queued
        queued = client.post("/work/jobs-new", data=good | {"action": "submit"}, headers=rita,
                             follow_redirects=False)  # fmt: skip
        assert queued.status_code == 303
        job_url = queued.headers["location"]
        job_id = int(job_url.rsplit("/", 1)[1])
        shown = client.get(job_url, headers=rita).text
        assert "queued" in shown
        assert "Cancel the job" in shown
        assert client.get(job_url, headers=stan).status_code == 404  # not Stan's job
        assert client.post(f"{job_url}/cancel", headers=stan).status_code == 403
        assert client.get(job_url, follow_redirects=False).status_code == 303
        assert "cancelled" in client.post(f"{job_url}/cancel", headers=rita).text
        assert f'href="/work/jobs/{job_id}"' in client.get("/work/jobs", headers=rita).text


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
def test_submit_watch_and_see_the_release_in_chromium(
    site: Site, page: object, tmp_path: Path
) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    _headers(site, "rita")
    scheduler = Scheduler(site.platform, interval_s=0.1)
    scheduler.start()
    try:
        with live_app(site.platform) as url:
            page.goto(f"{url}/work/jobs-new")
            page.fill("#name", "rita")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.get_by_label("Tool", exact=True).select_option("hello@1.0.0")
            page.get_by_label("Dataset", exact=True).select_option("lung")
            page.get_by_role("button", name="Check").click()
            expect(page.get_by_role("heading", level=2)).to_have_text("Preflight: ready to submit")
            page.set_viewport_size({"width": 1280, "height": 800})
            _shot(page, tmp_path, "job-form")
            page.get_by_role("button", name="Submit").click()
            expect(page.locator("#job-state")).to_have_text("succeeded", timeout=30_000)
            expect(page.locator("#log")).to_contain_text("hello")
            expect(page.locator("#release-link")).to_be_visible()
            _shot(page, tmp_path, "job-done")
            page.locator("#release-link").click()
            expect(page.get_by_role("heading", level=1)).to_contain_text("in review")
            expect(page.get_by_text("out.txt")).to_be_visible()
    finally:
        scheduler.stop()

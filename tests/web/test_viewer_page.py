"""The series viewer page: who may open it, and a real Chromium scrolling, windowing and
zooming with the keyboard and the controls (screenshot ``viewer.png``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from insitu.access import service as access
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.web.app import create_app
from tests.servers import live_app
from tests.web.test_browser import CHROMIUM, _shot, page
from tests.web.test_dicomweb import Viewer, _uids, viewer

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PASSWORD = "a long enough secret"
__all__ = ["page", "viewer"]  # fixtures


def _passwords(viewer: Viewer) -> None:
    with session_scope(viewer.platform.sessions) as session:
        for name in ("rita", "bob"):
            user = access.get_user(session, name)
            assert user is not None
            access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)


@SQLITE
def test_who_may_open_the_viewer(viewer: Viewer) -> None:
    study, series, _ = _uids(viewer, "MR")
    ct_study, ct_series, _ = _uids(viewer, "CT")
    with TestClient(create_app(viewer.platform)) as client:
        url = f"/viewer/{study}/{series}"
        away = client.get(url, follow_redirects=False)
        assert away.status_code == 303
        assert away.headers["location"] == f"/login?next={url}"
        rita = {"Authorization": f"Bearer {viewer.tokens['rita']}"}
        shown = client.get(url, headers=rita)
        assert shown.status_code == 200
        assert 'id="frame"' in shown.text
        assert "/static/viewer.js" in shown.text
        for label in ('for="slice"', 'for="center"', 'for="width"', 'aria-label="Zoom in"'):
            assert label in shown.text
        hidden = client.get(f"/viewer/{ct_study}/{ct_series}", headers=rita)
        assert hidden.status_code == 404
        assert "cannot be shown" in hidden.text
        bob = {"Authorization": f"Bearer {viewer.tokens['bob']}"}
        assert client.get(url, headers=bob).status_code == 404


@SQLITE
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
def test_scroll_window_and_zoom_in_chromium(viewer: Viewer, page: object, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    _passwords(viewer)
    study, series, _ = _uids(viewer, "CT")  # Rita may not see CT: give her the CT too
    with session_scope(viewer.platform.sessions) as session:
        from insitu.catalog.service import SelectionCriteria
        from insitu.datasets import service as datasets

        stan = access.get_user(session, "stan")
        rita = access.get_user(session, "rita")
        assert stan is not None
        assert rita is not None
        chest = datasets.create_dataset(
            session, "chest", datasets.DatasetMetadata(title="Chest CT"), stan.id,
            criteria=SelectionCriteria(modality="CT"),
        )  # fmt: skip
        datasets.release(session, chest, stan.id, viewer.platform.publication)
        datasets.grant(session, chest, stan.id, user_id=rita.id)
        datasets.accept_terms(session, chest, rita.id)
    with live_app(viewer.platform) as site:
        page.goto(f"{site}/viewer/{study}/{series}")
        page.fill("#name", "rita")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        frame = page.locator("#frame")
        expect(frame).to_have_attribute("data-slice", "1")
        first = frame.get_attribute("src")
        page.locator("#stage").focus()
        page.keyboard.press("ArrowDown")
        expect(frame).to_have_attribute("data-slice", "2")
        expect(page.locator("#slice-out")).to_have_text("2")
        page.get_by_role("button", name="Lung").click()
        expect(page.locator("#center")).to_have_value("-600.0")
        page.fill("#width", "10")  # narrower than allowed: the server widens it
        page.locator("#width").dispatch_event("change")
        page.get_by_role("button", name="Zoom in").click()
        expect(page.locator("#zoom-out-value")).to_have_text("125 %")
        box = page.locator("#stage").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 50, box["y"] + 50)
        page.mouse.down()
        page.mouse.move(box["x"] + 90, box["y"] + 70)
        page.mouse.up()
        expect(page.locator("#budget")).to_contain_text("frames left this hour")
        assert frame.get_attribute("src") != first
        page.set_viewport_size({"width": 1280, "height": 800})
        _shot(page, tmp_path, "viewer")
        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        expect(page.locator("#slice")).to_be_visible()
        _shot(page, tmp_path, "viewer-phone")

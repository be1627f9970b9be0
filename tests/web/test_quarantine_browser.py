"""The steward's quarantine page in a real Chromium: summary by reason and series, previews
of the pixels, and a bulk decision through the form (screenshots in INSITU_SCREENSHOTS)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.access import service as access
from insitu.access.models import Role
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest import service as ingest
from insitu.ingest.deid.table import Options
from insitu.ingest.sources import SourceItem
from insitu.ledger import service as ledger
from tests.ingest.ocr_corpus import clear_text_case
from tests.servers import live_app
from tests.web.test_browser import CHROMIUM, _shot
from tests.web.test_browser import page as page  # noqa: PLC0414 - the fixture, shared

PASSWORD = "a long enough secret"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


def _part10(kind: str, phrase: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    clear_text_case(kind, phrase, seed).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def site(platform: Platform) -> Iterator[str]:
    files = [
        _part10("US", "DOE^JANE 1961-03-17", 1),
        _part10("XA", "ST MARY HOSPITAL", 2),
        _part10("CR", "ID 4471932", 3),
    ]
    items = [SourceItem(f"f{i}.dcm", data=data) for i, data in enumerate(files)]
    result = ingest.ingest(platform, items, site="DEMO", options=Options.parse(""))
    assert result.report["counts"]["quarantined"] == 3
    with session_scope(platform.sessions) as session:
        steward = access.create_user(session, "stella", Role.steward)
        access.set_password(session, steward, PASSWORD, ledger.HOST_ACTOR)
    with live_app(platform) as url:
        yield url


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_steward_reviews_the_quarantine_in_chromium(
    site: str, page: object, tmp_path: Path
) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto(site + "/quarantine")
    expect(page).to_have_url(site + "/login?next=/quarantine")
    page.fill("#name", "stella")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Quarantine")).to_be_visible()
    expect(page.get_by_role("link", name="Quarantine")).to_be_visible()
    rows = page.locator("table.quarantine tbody tr")
    expect(rows).to_have_count(3)
    previews = page.locator("img.preview")
    expect(previews).to_have_count(3)
    previews.last.scroll_into_view_if_needed()  # previews load lazily
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.preview')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert _shot(page, tmp_path, "quarantine").stat().st_size > 20000
    page.get_by_role("button", name="Delete all ocr-text").click()
    expect(page.get_by_role("status")).to_contain_text("3 instance(s) deleted")
    expect(page.locator("body")).to_contain_text("Nothing is quarantined")
    _shot(page, tmp_path, "quarantine-after-delete")

"""The dataset list: published versions for everyone, more for those granted or stewarding;
filters, sorting and pages; and the page in Chromium at desktop and phone width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from insitu.access import service as access
from insitu.access.models import Role
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import Platform, open_platform
from insitu.datasets import service as datasets
from insitu.datasets.models import Tier
from insitu.db import session_scope
from insitu.web.app import create_app
from tests.conftest import make_settings
from tests.datasets.conftest import ingest_clinical_corpus
from tests.servers import live_app
from tests.web.test_browser import CHROMIUM, _shot, page

__all__ = ["page"]


@pytest.fixture
def shelf(tmp_path: Path, database_url: str) -> Iterator[tuple[Platform, str]]:
    """25 published synthetic CT-and-MR datasets, an MR-only released one granted to Rita,
    and a draft; Rita's token."""
    (tmp_path / "home").mkdir()
    platform = open_platform(make_settings(tmp_path / "home", database_url=database_url))
    ingest_clinical_corpus(platform, tmp_path, subjects=1, ct_slices=1)
    with session_scope(platform.sessions) as session:
        stan = access.create_user(session, "stan", Role.steward)
        rita = access.create_user(session, "rita", Role.researcher)
        for number in range(25):
            public = datasets.create_dataset(
                session, f"atlas-{number:02d}",
                datasets.DatasetMetadata(title=f"Public atlas {number}", tier=Tier.synthetic),
                stan.id, criteria=SelectionCriteria(),
            )  # fmt: skip
            datasets.release(session, public, stan.id, platform.publication)
            datasets.publish(session, public, stan.id, platform.publication)
        brain = datasets.create_dataset(
            session, "brain", datasets.DatasetMetadata(title="Brain MR"), stan.id,
            criteria=SelectionCriteria(modality="MR"),
        )  # fmt: skip
        datasets.release(session, brain, stan.id, platform.publication)
        datasets.grant(session, brain, stan.id, user_id=rita.id)
        datasets.create_dataset(session, "secret-draft", datasets.DatasetMetadata(title="Draft"),
                                stan.id, criteria=SelectionCriteria())  # fmt: skip
        token = access.issue_token(session, rita)
    yield platform, token
    platform.close()


def _names(html: str) -> list[str]:
    return re.findall(r'<a href="/explore/([a-z0-9-]+)\?version=\d+">', html)


def test_who_sees_what_filters_and_pages(shelf: tuple[Platform, str]) -> None:
    platform, token = shelf
    rita = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(platform)) as client:
        anonymous = client.get("/explore").text
        assert "26 dataset" not in anonymous
        assert "25 dataset versions" in anonymous
        assert len(_names(anonymous)) == 20  # a page
        assert "secret-draft" not in anonymous
        assert "brain" not in anonymous
        second = client.get("/explore", params={"page": 2}).text
        assert len(_names(second)) == 5
        assert client.get("/explore", params={"page": 2}, headers=rita).text.count("brain") >= 1
        mine = client.get("/explore", params={"modality": "mr", "tier": "real"}, headers=rita)
        assert _names(mine.text) == ["brain"]
        assert "secret-draft" not in client.get("/explore", headers=rita).text
        found = client.get("/explore", params={"q": "ATLAS 1"}).text
        assert _names(found) == ["atlas-01"] + [f"atlas-{n}" for n in range(10, 20)]
        newest = client.get("/explore", params={"sort": "newest"}).text
        assert _names(newest)[0] == "atlas-24"
        assert "No dataset matches" in client.get("/explore", params={"modality": "US"}).text
        assert client.get("/explore", params={"state": "bogus"}).status_code == 422
        small = client.get("/explore", params={"max_instances": "1", "min_instances": ""},
                           headers=rita)  # fmt: skip
        assert _names(small.text) == ["brain"]  # one MR slice; the atlases hold two images
        large = client.get("/explore", params={"min_instances": "2"}, headers=rita).text
        assert "brain" not in _names(large)
        assert "25 dataset versions" in large
        by_size = client.get("/explore", params={"sort": "largest", "page": 2}, headers=rita)
        assert _names(by_size.text)[-1] == "brain"
        assert client.get("/explore", params={"min_instances": "many"}).status_code == 422


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
def test_the_list_in_chromium(shelf: tuple[Platform, str], page: object, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    platform, _ = shelf
    with live_app(platform) as site:
        page.goto(f"{site}/explore")
        page.get_by_label("Name or title").fill("atlas 2")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("table.datasets tbody tr")).to_have_count(6)  # 2, 20..24
        page.set_viewport_size({"width": 1280, "height": 800})
        _shot(page, tmp_path, "explore")
        page.set_viewport_size({"width": 390, "height": 844})
        expect(page.get_by_label("Modality")).to_be_visible()
        page.get_by_role("link", name="atlas-02 v1").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Public atlas 2")

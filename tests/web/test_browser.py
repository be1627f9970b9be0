"""The sign-in pages in a real Chromium (the machine's, driven by Playwright), with screenshots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.access import service as access
from insitu.access.models import Role
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from tests.servers import live_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Quiet, offline, headless: the machine has no network but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = (
    Path(os.environ.get("INSITU_SCREENSHOTS", "")) if os.environ.get("INSITU_SCREENSHOTS") else None
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


@pytest.fixture
def site(platform: Platform) -> Iterator[str]:
    with session_scope(platform.sessions) as session:
        user = access.create_user(session, "bruno", Role.researcher)
        access.set_password(session, user, "a long enough secret", ledger.HOST_ACTOR)
    with live_app(platform) as url:
        yield url


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1100, "height": 700})
        yield context.new_page()
        browser.close()


def _shot(page: object, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)
    return path


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sign_in_and_out_in_chromium(site: str, page: object, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto(site + "/")
    expect(page).to_have_url(site + "/login?next=/")
    page.fill("#name", "bruno")
    page.fill("#password", "wrong password!")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("wrong account name or password")
    assert _shot(page, tmp_path, "login-error").stat().st_size > 5000
    page.fill("#password", "a long enough secret")
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Welcome, bruno")).to_be_visible()
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["insitu_session"]["httpOnly"] is True
    assert page.evaluate("document.cookie").find("insitu_session") == -1  # not readable by JS
    _shot(page, tmp_path, "home")
    page.click("text=Sign out")
    expect(page).to_have_url(site + "/login")
    page.goto(site + "/")
    expect(page).to_have_url(site + "/login?next=/")


@pytest.fixture
def dataset_site(platform: Platform, tmp_path: Path) -> Iterator[str]:
    from insitu.catalog.service import SelectionCriteria
    from insitu.datasets import service as datasets
    from insitu.datasets.models import Tier
    from insitu.ingest import service as ingest
    from insitu.ingest.corpus import generate_corpus
    from insitu.ingest.deid.table import Options
    from insitu.ingest.sources import iter_sources

    corpus = generate_corpus(tmp_path / "export", subjects=6, ct_slices=1, mr_slices=1)
    ingest.ingest(platform, iter_sources([corpus.root]), site="DEMO", options=Options.parse(""))
    with session_scope(platform.sessions) as session:
        steward = access.create_user(session, "stella", Role.steward)
        dataset = datasets.create_dataset(
            session,
            "chest-ct",
            datasets.DatasetMetadata(
                title="Chest CT and MR, synthetic",
                description="Six synthetic subjects made by insitu's corpus generator.",
                authors=("Curie, Marie", "Hounsfield, Godfrey"),
                license="CC-BY-4.0",
                tier=Tier.synthetic,
            ),
            steward.id,
            criteria=SelectionCriteria(),
        )
        datasets.release(session, dataset, steward.id, platform.publication)
        datasets.publish(session, dataset, steward.id, platform.publication)
    with live_app(platform) as url:
        yield url


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_public_landing_page_in_chromium(dataset_site: str, page: object, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto(dataset_site + "/pid/chest-ct.v1")  # the PID resolves to the landing page
    expect(page).to_have_url(dataset_site + "/datasets/chest-ct/v1")
    expect(page.get_by_role("heading", level=1)).to_have_text("Chest CT and MR, synthetic")
    expect(page.locator("#apa")).to_contain_text("Curie, M., & Hounsfield, G.")
    expect(page.locator("#bibtex")).to_contain_text("@misc{chest_ct_v1_")
    document = page.evaluate(
        "JSON.parse(document.querySelector('script[type=\"application/ld+json\"]').textContent)"
    )
    assert document["@type"] == "Dataset"
    assert document["name"] == "Chest CT and MR, synthetic"
    assert _shot(page, tmp_path, "dataset-landing").stat().st_size > 20000
    page.goto(dataset_site + "/datasets/chest-ct/v2")
    expect(page.locator("body")).to_contain_text("no published dataset chest-ct v2")

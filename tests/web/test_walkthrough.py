"""Every page of the web UI, as each role, in one flow through Debian's Chromium.

A visitor finds the published dataset and its landing page; Rita (researcher) signs in,
searches, opens a dataset, reads a DICOM header, scrolls the viewer and changes the window,
submits a job from the form, watches it finish and sees its release wait for review; Stan
(steward) reviews it, reads the dataset's history and access log and sees his buttons; Rita
downloads the approved file; Aude (auditor) reads the access log; Ada (admin) changes a flavor;
Mia (maintainer) reads the tool catalogue; Olga (organiser) is refused what is not hers.
Screenshots go to docs/screenshots/ when ``INSITU_SCREENSHOTS`` names that folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from insitu.access import service as access
from insitu.access.models import Role
from insitu.catalog.service import SelectionCriteria
from insitu.datasets import service as datasets
from insitu.db import session_scope
from insitu.ingest import service as ingest
from insitu.ingest.corpus import generate_corpus
from insitu.ingest.deid.table import Options
from insitu.ingest.sources import iter_sources
from insitu.jobs.scheduler import Scheduler
from insitu.ledger import service as ledger
from insitu.ledger.keys import ensure_log_key
from tests.jobs.conftest import Site, needs_sandbox, shared_tmp, site, tools_root
from tests.servers import live_app
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, _shot

pytestmark = [
    needs_sandbox,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
__all__ = ["shared_tmp", "site", "tools_root"]  # fixtures
PASSWORD = "a long enough secret"


def _prepare(site: Site, folder: Path) -> None:
    """Passwords for everyone, an auditor and an admin, a four-slice CT dataset Rita may use,
    two datasets published, and a signed ledger checkpoint."""
    corpus = generate_corpus(folder / "chest", subjects=1, ct_slices=4, mr_slices=1,
                             rows=64, columns=64, seed=11)  # fmt: skip
    ingest.ingest(site.platform, iter_sources([corpus.root]), site="SITE-B",
                  options=Options.parse(""))  # fmt: skip
    with session_scope(site.platform.sessions) as session:
        for name, role in (("aude", Role.auditor), ("ada", Role.admin), ("olga", Role.organiser)):
            access.create_user(session, name, role)
        for name in ("rita", "stan", "mia", "aude", "ada", "olga"):
            user = access.get_user(session, name)
            assert user is not None
            access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)
        stan, rita = site.stan.user_id, site.rita.user_id
        chest = datasets.create_dataset(
            session, "chest",
            datasets.DatasetMetadata(title="Chest CT, four slices", description="For the walk."),
            stan, criteria=SelectionCriteria(modality="CT"),
        )  # fmt: skip
        datasets.release(session, chest, stan, site.platform.publication)
        datasets.grant(session, chest, stan, user_id=rita)
        datasets.accept_terms(session, chest, rita)
        for name in ("sample", "nogrant"):
            shown = datasets.get_dataset(session, name, None)
            assert shown is not None
            datasets.publish(session, shown, stan, site.platform.publication)
    with session_scope(site.platform.sessions) as session:
        ledger.create_checkpoint(session, ensure_log_key(site.platform.settings))


UNLABELLED_CONTROLS = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button')].filter(el =>
    !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.textContent.trim() && !el.title).map(el => el.outerHTML)"""


def _labelled(page: Any) -> None:
    """Every control on the page has a name a screen reader can say."""
    assert page.evaluate(UNLABELLED_CONTROLS) == [], page.url


@contextmanager
def _browser(url: str) -> Iterator[Callable[[str | None], Any]]:
    """Yields ``open_as(name)``: a fresh browser context signed in as ``name`` (None: nobody)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        def open_as(name: str | None) -> Any:
            context = browser.new_context(
                viewport={"width": 1280, "height": 800}, base_url=url, accept_downloads=True
            )
            page = context.new_page()
            if name is not None:
                page.goto("/login?next=/")
                page.fill("#name", name)
                page.fill("#password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(re.compile(r"/$"))
            return page

        try:
            yield open_as
        finally:
            browser.close()


def _visitor(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    expect(page.get_by_label("Account name")).to_be_visible()
    page.goto("/explore")
    expect(page.locator("main")).to_contain_text("published ones")
    expect(page.get_by_role("link", name="sample v1", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="lung v1", exact=True)).to_have_count(0)  # not published
    page.get_by_role("link", name="sample v1", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("sample")
    expect(page.get_by_role("link", name="Access")).to_have_count(0)
    page.get_by_role("link", name="citation and metadata").click()
    document = page.evaluate(
        "JSON.parse(document.querySelector('script[type=\"application/ld+json\"]').textContent)"
    )
    assert document["@type"] == "Dataset"
    page.goto("/ledger")
    expect(page.locator("#checkpoint")).to_contain_text("insitu")
    _shot(page, tmp_path, "ledger")
    for private in ("/work/jobs", "/releases", "/tools", "/admin", "/explore/lung"):
        page.goto(private)
        expect(page).to_have_url(re.compile(r"/login\?next="))  # sign in first, then back
    page.goto("/no-such-page")
    expect(page.get_by_role("heading", level=1)).to_have_text("Nothing here")
    expect(page.locator("#next-step")).to_contain_text("dataset list")
    _shot(page, tmp_path, "error-page")


def _researcher_explores(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    nav.get_by_role("link", name="Datasets").click()
    page.fill("#q", "chest")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("main")).to_contain_text("1 dataset version")
    _labelled(page)
    page.get_by_role("link", name="chest v1", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Chest CT, four slices")
    expect(page.get_by_role("img", name=re.compile("^Modality: CT"))).to_be_visible()
    expect(page.get_by_role("link", name="Access")).to_have_count(0)  # stewards and auditors
    expect(page.get_by_role("heading", name="Steward actions")).to_have_count(0)
    page.get_by_role("link", name="Studies and series").click()
    series = page.locator("li", has_text="4 images")
    expect(series.get_by_role("img")).to_have_js_property("complete", True)
    series.get_by_role("link", name="DICOM header").click()
    expect(page.locator("main")).to_contain_text("PixelData")
    expect(page.locator("main")).to_contain_text("SHA-256")
    page.fill("#search", "Modality")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".header-tree")).to_contain_text("CT")
    expect(page.locator(".header-tree")).not_to_contain_text("PixelData")
    _shot(page, tmp_path, "dicom-header")
    _labelled(page)
    page.get_by_role("link", name="Open the series in the viewer").click()
    frame = page.locator("#frame")
    expect(frame).to_have_attribute("data-slice", "1")
    _labelled(page)
    first = frame.get_attribute("src")
    page.locator("#stage").focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(frame).to_have_attribute("data-slice", "3")
    page.get_by_role("button", name="Bone").click()
    expect(page.locator("#width")).not_to_have_value("")
    expect(page.locator("#budget")).to_contain_text("frames left this hour")
    assert frame.get_attribute("src") != first
    page.goto("/explore/nogrant")  # published, not granted: details only, small counts hidden
    expect(page.locator(".counts")).to_contain_text("<5")
    page.get_by_role("link", name="Studies and series").click()
    expect(page.get_by_role("status")).to_contain_text("need the use of this dataset")
    page.goto("/explore/chest?tab=access")
    expect(page.get_by_role("status")).to_contain_text("stewards and auditors")
    page.goto("/admin")
    expect(page.get_by_role("heading", level=1)).to_have_text("This page is for admins")


def _researcher_submits(page: Any, tmp_path: Path) -> int:
    from playwright.sync_api import expect

    page.get_by_role("navigation", name="Main").get_by_role("link", name="New job").click()
    page.get_by_label("Tool", exact=True).select_option("hello@1.0.0")
    page.get_by_label("Dataset", exact=True).select_option("chest")
    page.get_by_role("button", name="Check").click()
    expect(page.get_by_role("heading", level=2)).to_have_text("Preflight: ready to submit")
    _labelled(page)
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#log")).to_contain_text("hello")
    _shot(page, tmp_path, "job-done")
    page.locator("#release-link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("in review")
    expect(page.get_by_text("out.txt")).to_be_visible()
    expect(page.get_by_role("link", name="Download out.txt")).to_have_count(0)  # not yet
    release_id = int(page.url.rsplit("/", 1)[1])
    _researcher_cancels(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    expect(page.locator("main")).to_contain_text("succeeded")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tools").click()
    page.get_by_role("link", name="hello@1.0.0").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("hello")
    return release_id


def _researcher_cancels(page: Any) -> None:
    """A second job that waits: its log shows live, then the cancel button stops it."""
    from playwright.sync_api import expect

    page.get_by_role("navigation", name="Main").get_by_role("link", name="New job").click()
    page.get_by_label("Tool", exact=True).select_option("hello@1.0.0")
    page.get_by_label("Dataset", exact=True).select_option("chest")
    wait = "import time; print('waiting', flush=True); time.sleep(300)"
    page.get_by_label("Command (empty: the tool's own)").fill(
        f'/opt/tool/venv/bin/python -c "{wait}"'
    )
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#log")).to_contain_text("waiting", timeout=60_000)  # live, still running
    expect(page.locator("#job-state")).to_have_text("running")
    page.get_by_role("button", name="Cancel the job").click()
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=30_000)
    expect(page.get_by_role("button", name="Cancel the job")).to_have_count(0)


def _steward_reviews(page: Any, tmp_path: Path, release_id: int) -> None:
    from playwright.sync_api import expect

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Releases").click()
    page.get_by_role("link", name=re.compile(f"^(Release )?{release_id}$")).first.click()
    expect(page.get_by_role("heading", name="Your review")).to_be_visible()
    _labelled(page)
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Open out.txt in the browser").click()
    expect(opened.value.locator("body")).to_contain_text("/data/chest-v1")  # what it wrote
    opened.value.close()
    page.fill("#comment", "A greeting; nothing about any patient.")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("approved")
    page.goto("/explore/chest?tab=access")
    rows = page.locator("table.access tbody tr")
    expect(rows).to_have_count(2)
    done = rows.filter(has_text="succeeded")
    for text in ("rita", "hello@1.0.0", "no-gpu", "whole dataset", "/opt/tool/app/main.py"):
        expect(done).to_contain_text(text)
    expect(rows.filter(has_text="cancelled (killed_by_user)")).to_contain_text(
        "-c 'import time;"  # the command as the shell would take it
    )
    _shot(page, tmp_path, "dataset-access")
    page.get_by_role("link", name="History").click()
    expect(page.locator("main")).to_contain_text("dataset.viewed")  # Rita's viewer session
    proof = page.get_by_role("link", name="verify").first.get_attribute("href")
    assert page.request.get(proof).json()["index"] >= 0
    page.get_by_role("link", name="Details").click()
    expect(page.get_by_role("heading", name="Steward actions")).to_be_visible()
    expect(page.get_by_role("button", name="Publish its metadata")).to_be_visible()
    expect(page.get_by_label("Grant its use to an account")).to_be_visible()
    _labelled(page)


def _researcher_downloads(page: Any, release_id: int) -> None:
    from playwright.sync_api import expect

    page.goto(f"/releases/{release_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("approved")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download out.txt").click()
    assert "/data/chest-v1" in Path(download.value.path()).read_text()


def _auditor_reads(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/explore/chest")
    expect(page.get_by_role("heading", name="Steward actions")).to_have_count(0)
    page.get_by_role("link", name="Access").click()
    expect(page.locator("table.access tbody tr").first).to_contain_text("rita")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: the table scrolls inside
    expect(page.get_by_role("link", name="History")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, tmp_path, "dataset-access-phone")


def _admin_changes_a_flavor(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    expect(page.locator("main")).to_contain_text("aude")
    cpus = page.get_by_label("cpus of no-gpu")
    cpus.fill("3")
    page.get_by_role("button", name="Save the flavor no-gpu").click()
    expect(page.get_by_label("cpus of no-gpu")).to_have_value("3")
    _labelled(page)
    _shot(page, tmp_path, "admin")


def _maintainer_reads_tools(page: Any) -> None:
    from playwright.sync_api import expect

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tools").click()
    for version in ("hello@1.0.0", "hello@2.0.0", "hello@3.0.0"):
        expect(page.get_by_role("link", name=version)).to_be_visible()


def _others_are_refused(page: Any, release_id: int) -> None:
    """Olga (organiser) has no grant, job or release here: she is told so on every page."""
    from playwright.sync_api import expect

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Datasets").click()
    expect(page.get_by_role("link", name="chest v1", exact=True)).to_have_count(0)
    for url, heading in (
        ("/explore/chest", "This dataset cannot be shown"),
        ("/work/jobs/1", "This job cannot be shown"),
        (f"/releases/{release_id}", "You cannot see this release request"),
        ("/admin", "This page is for admins"),
    ):
        page.goto(url)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
    page.goto("/work/jobs")
    expect(page.locator("main")).not_to_contain_text("succeeded")


def test_every_page_as_each_role(site: Site, shared_tmp: Path, tmp_path: Path) -> None:
    _prepare(site, shared_tmp)
    scheduler = Scheduler(site.platform, interval_s=0.1)
    scheduler.start()
    try:
        with live_app(site.platform) as url, _browser(url) as open_as:
            _visitor(open_as(None), tmp_path)
            rita = open_as("rita")
            _researcher_explores(rita, tmp_path)
            release_id = _researcher_submits(rita, tmp_path)
            _steward_reviews(open_as("stan"), tmp_path, release_id)
            _researcher_downloads(rita, release_id)
            _auditor_reads(open_as("aude"), tmp_path)
            _admin_changes_a_flavor(open_as("ada"), tmp_path)
            _maintainer_reads_tools(open_as("mia"))
            _others_are_refused(open_as("olga"), release_id)
    finally:
        scheduler.stop()

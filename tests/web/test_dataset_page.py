"""The dataset page: details with charts for whoever may see the version, studies and series
(with thumbnails and viewer links) for those who may use it, its ledger history with proofs,
and the access log for stewards and auditors only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from insitu.access import service as access
from insitu.access.models import Role
from insitu.db import session_scope
from insitu.jobs import service as jobs
from insitu.jobs.models import Job, JobState
from insitu.ledger import service as ledger
from insitu.tools import service as tools
from insitu.tools.environment import build_settings
from insitu.web.app import create_app
from tests.servers import live_app
from tests.tools.bundles import oci_bundle
from tests.web.test_browser import CHROMIUM, _shot, page
from tests.web.test_dicomweb import Viewer, viewer

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
__all__ = ["page", "viewer"]


def _job_on_brain(viewer: Viewer) -> None:
    """A job of Rita's on brain, as the scheduler leaves it."""
    from insitu.datasets import service as datasets

    with session_scope(viewer.platform.sessions) as session:
        rita = access.get_user(session, "rita")
        mia = access.create_user(session, "mia", Role.maintainer)
        access.create_user(session, "audrey", Role.auditor)
        brain = datasets.get_dataset(session, "brain")
        assert rita is not None
        assert brain is not None
        version = tools.publish(
            session, viewer.platform.store, build_settings(viewer.platform.settings),
            oci_bundle("seg"), access.Principal(mia.id, "mia", Role.maintainer),
        ).version  # fmt: skip
        job = Job(user_id=rita.id, tool_version_id=version.id, dataset_ids=[brain.id],
                  flavor="no-gpu", command=["segment", "--all"], state=JobState.succeeded,
                  state_times={"running": "2026-11-28T10:00:00",
                               "succeeded": "2026-11-28T10:05:00"},
                  details={"run_seconds": 300.0}, sample=3)  # fmt: skip
        session.add(job)
        session.flush()
        ledger.record(session, jobs.JOB_ENDED, actor=ledger.HOST_ACTOR, subject=f"job:{job.id}")


def _token(viewer: Viewer, name: str) -> dict[str, str]:
    with session_scope(viewer.platform.sessions) as session:
        user = access.get_user(session, name)
        assert user is not None
        return {"Authorization": f"Bearer {access.issue_token(session, user)}"}


@SQLITE
def test_each_tab_as_each_person(viewer: Viewer) -> None:
    _job_on_brain(viewer)
    rita, bob, stan, audrey = (_token(viewer, n) for n in ("rita", "bob", "stan", "audrey"))
    with TestClient(create_app(viewer.platform)) as client:
        url = "/explore/brain"
        away = client.get(url, follow_redirects=False)  # released, not published
        assert away.headers["location"] == f"/login?next={url}"
        assert client.get("/explore/no-such", follow_redirects=False).status_code == 303
        assert client.get(url, headers=bob).status_code == 404
        details = client.get(url, headers=rita).text
        assert "<svg" in details
        assert 'aria-label="Modality: MR' in details
        assert "you may use it" in details
        with session_scope(viewer.platform.sessions) as session:  # computed once, then kept
            from insitu.datasets.models import DatasetStatistics

            kept = session.scalars(select(DatasetStatistics)).all()
            assert [k.data["by_modality"] for k in kept] == [{"MR": 2}]
        assert client.get(url, headers=rita).text == details
        studies = client.get(url, params={"tab": "studies"}, headers=rita).text
        thumbnails = re.findall(r'src="(/dicomweb/studies/[^"]+/thumbnail)"', studies)
        assert len(thumbnails) == 2  # one MR series per subject
        assert client.get(thumbnails[0], headers=rita).headers["content-type"] == "image/jpeg"
        assert studies.count("Open in the viewer") == 2
        header = re.search(r'href="(/header/[^"]+)"', studies)
        assert header is not None
        tree = client.get(header.group(1), headers=rita).text
        assert "PixelData" in tree
        assert "binary, 512 bytes" in tree
        assert "Modality" in client.get(header.group(1), params={"search": "modal"},
                                        headers=rita).text  # fmt: skip
        assert client.get(header.group(1), headers=bob).status_code == 404
        assert client.get(header.group(1), follow_redirects=False).status_code == 303
        assert "CT" not in re.sub(r"<[^>]+>", "", studies.split('<nav class="tabs"')[1])
        history = client.get(url, params={"tab": "history"}, headers=rita).text
        assert "dataset.released" in history
        proof = re.search(r'href="(/api/v1/ledger/proof/inclusion\?[^"]+)"', history)
        assert proof is not None
        assert client.get(proof.group(1).replace("&amp;", "&")).status_code == 200
        hidden = client.get(url, params={"tab": "access"}, headers=rita).text
        assert "for the dataset's stewards and auditors" in hidden
        assert "segment --all" not in hidden
        for who in (stan, audrey):
            log = client.get(url, params={"tab": "access"}, headers=who).text
            assert "segment --all" in log
            assert "seg@1.0.0" in log
            assert "300.0 s" in log
            assert "sample of 3 subjects" in log
        assert client.get(url, params={"tab": "studies"}, headers=stan).status_code == 200
        assert (
            "need the use of this dataset"
            in client.get(url, params={"tab": "studies"}, headers=stan).text
        )  # a steward without a grant sees no images


@SQLITE
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
def test_the_dataset_page_in_chromium(viewer: Viewer, page: object, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    with session_scope(viewer.platform.sessions) as session:
        rita = access.get_user(session, "rita")
        assert rita is not None
        access.set_password(session, rita, "a long enough secret", ledger.HOST_ACTOR)
    with live_app(viewer.platform) as site:
        page.goto(f"{site}/explore/brain")
        page.fill("#name", "rita")
        page.fill("#password", "a long enough secret")
        page.click("button[type=submit]")
        expect(page.get_by_role("heading", level=1)).to_have_text("Brain MR")
        page.set_viewport_size({"width": 1280, "height": 800})
        _shot(page, tmp_path, "dataset-details")
        page.get_by_role("link", name="Studies and series").click()
        expect(page.get_by_role("link", name="Open in the viewer")).to_have_count(2)
        expect(page.locator(".series-list img").first).to_have_js_property("complete", True)
        _shot(page, tmp_path, "dataset-studies")
        page.get_by_role("link", name="DICOM header").first.click()
        page.get_by_label("Search tags, keywords and values").fill("deidentification")
        page.get_by_role("button", name="Search").click()
        expect(page.locator(".header-tree").first).to_contain_text("DeidentificationMethod")
        _shot(page, tmp_path, "dicom-header")
        page.go_back()
        page.go_back()
        page.get_by_role("link", name="Open in the viewer").first.click()
        expect(page.locator("#frame")).to_have_attribute("data-slice", "1")


@SQLITE
def test_stewards_buttons(viewer: Viewer) -> None:
    rita, stan = _token(viewer, "rita"), _token(viewer, "stan")
    with TestClient(create_app(viewer.platform)) as client:
        page = client.get("/explore/brain", headers=stan).text
        assert "Publish its metadata" in page
        assert "Revoke the grant of rita" in page
        assert "Steward actions" not in client.get("/explore/brain", headers=rita).text
        form = {"version": "1"}
        assert client.post("/explore/brain/publish", data=form, headers=rita).status_code == 403
        done = client.post("/explore/brain/publish", data=form, headers=stan,
                           follow_redirects=False)  # fmt: skip
        assert done.headers["location"] == "/explore/brain?version=1"
        assert client.get("/explore/brain").status_code == 200  # published: public now
        granted = client.post("/explore/brain/grant", data=form | {"user": "bob"}, headers=stan)
        assert granted.status_code == 200
        assert "Revoke the grant of bob" in granted.text
        nobody = client.post("/explore/brain/grant", data=form | {"user": "nobody"},
                             headers=stan)  # fmt: skip
        assert nobody.status_code == 422
        with session_scope(viewer.platform.sessions) as session:
            access.create_project(session, "lung-ai", "Lung AI", ledger.HOST_ACTOR)
        team = client.post("/explore/brain/grant", data=form | {"project": "lung-ai"},
                           headers=stan)  # fmt: skip
        assert "Revoke the grant of project lung-ai" in team.text
        both = form | {"user": "bob", "project": "lung-ai"}
        assert client.post("/explore/brain/grant", data=both, headers=stan).status_code == 422
        neither = client.post("/explore/brain/grant", data=form, headers=stan)
        assert "name either an account or a project" in neither.json()["detail"]
        no_team = client.post("/explore/brain/grant", data=form | {"project": "nope"},
                              headers=stan)  # fmt: skip
        assert no_team.status_code == 422
        silent = client.post("/explore/brain/invalidate", data=form, headers=stan)
        assert silent.status_code == 422
        gone = client.post("/explore/brain/invalidate", data=form | {"reason": "wrong labels"},
                           headers=stan)  # fmt: skip
        assert "invalidated" in gone.text
        assert client.post("/explore/brain/release", data=form, headers=stan).status_code == 409
        assert client.post("/explore/brain/explode", data=form, headers=stan).status_code == 404

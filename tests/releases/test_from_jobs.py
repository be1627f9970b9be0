"""A real job in the bubblewrap sandbox tries to smuggle a dataset file out: the scheduler
turns its /results into a release request when it ends, and the checks refuse it. The job's
/results are gone afterwards; nothing else hands them out."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from insitu.access import service as access
from insitu.db import session_scope
from insitu.jobs import scheduler
from insitu.jobs.backends.protocol import Executor
from insitu.releases.models import ReleaseFile, ReleaseRequest, ReleaseState
from insitu.web.app import create_app
from tests.jobs.conftest import Site, needs_sandbox, shared_tmp, site, submit_job, tools_root

pytestmark = [needs_sandbox, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
__all__ = ["shared_tmp", "site", "tools_root"]  # fixtures used here

SMUGGLER = """
import glob, json, os, shutil
scan = sorted(glob.glob('/data/lung-v1/*/*/*/*.dcm'))[0]
shutil.copy(scan, '/results/notes.txt')
os.symlink('/data/lung-v1', '/results/data')
os.makedirs('/results/deep/er', exist_ok=True)
open('/results/deep/er/metrics.json', 'w').write(json.dumps({'auc': 0.5}))
"""


def _until_ended(site: Site, job_id: int) -> None:
    backends: dict[str, Executor] = {"local": site.executor}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scheduler.tick(site.platform, backends)
        with session_scope(site.platform.sessions) as session:
            if session.scalar(select(ReleaseRequest.id).where(ReleaseRequest.job_id == job_id)):
                return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} left no release request")


def test_a_jobs_smuggling_is_refused_when_it_ends(site: Site) -> None:
    job_id = submit_job(site, ["/usr/bin/python3", "-c", SMUGGLER])
    _until_ended(site, job_id)
    with session_scope(site.platform.sessions) as session:
        request = session.scalars(
            select(ReleaseRequest).where(ReleaseRequest.job_id == job_id)
        ).one()
        assert request.state == ReleaseState.refused
        assert request.user_id == site.rita.user_id
        files = {
            f.path: f
            for f in session.scalars(
                select(ReleaseFile).where(ReleaseFile.request_id == request.id)
            )
        }
    assert sorted(files) == ["data", "deep/er/metrics.json", "notes.txt"]
    assert files["notes.txt"].media_type == "application/dicom"
    assert files["data"].media_type == "inode/symlink"
    assert files["deep/er/metrics.json"].verdict.value == "flag"  # not among hello's outputs
    results = site.platform.settings.resolved_jobs_root / str(job_id) / "results"
    assert not results.exists()
    with TestClient(create_app(site.platform)) as client:
        headers = {"Authorization": f"Bearer {user_token_of(site, 'rita')}"}
        shown = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
    assert shown["release"] == {"id": request.id, "state": "refused"}


def user_token_of(site: Site, name: str) -> str:
    """A new API token of one of the site's users."""
    with session_scope(site.platform.sessions) as session:
        user = access.get_user(session, name)
        assert user is not None
        return access.issue_token(session, user)


def test_a_job_that_leaves_nothing_makes_no_request(site: Site) -> None:
    job_id = submit_job(site, ["/usr/bin/python3", "-c", "print('nothing to release')"])
    backends: dict[str, Executor] = {"local": site.executor}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if scheduler.tick(site.platform, backends)[1]:
            break
        time.sleep(0.05)
    with session_scope(site.platform.sessions) as session:
        assert (
            session.scalar(select(ReleaseRequest.id).where(ReleaseRequest.job_id == job_id)) is None
        )


def test_results_left_before_a_restart_are_collected(site: Site) -> None:
    from insitu.jobs import service as jobs

    job_id = submit_job(site, None)  # hello writes /results/out.txt
    platform = site.platform
    with session_scope(platform.sessions) as session:
        jobs.dispatch(session, platform.settings, platform.store, site.executor, site.names())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # follow only: as if the server stopped right after
        with session_scope(site.platform.sessions) as session:
            if jobs.follow(session, site.executor):
                break
        time.sleep(0.05)
    assert scheduler.collect_pending(site.platform) != []
    assert scheduler.collect_pending(site.platform) == []  # once only
    with session_scope(site.platform.sessions) as session:
        request = session.scalars(
            select(ReleaseRequest).where(ReleaseRequest.job_id == job_id)
        ).one()
        assert request.state == ReleaseState.in_review  # lung is real: one reviewer

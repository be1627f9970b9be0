"""Jobs through the API with the scheduler's tick: submit, dry run, problems, logs (narrowed
and redacted for the owner, whole for admins), cancel; and log redaction itself."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from insitu.access import service as access
from insitu.db import session_scope
from insitu.jobs.logs import OWNER_LIMIT, redact
from insitu.jobs.scheduler import tick
from insitu.ledger.models import LedgerEntry
from insitu.web.app import create_app
from tests.factories import user_token
from tests.jobs.conftest import Site, needs_sandbox

UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"
PSEUDONYM = "S-ABCDEFGHIJKLMNOP"
BLOB = "QUJD" * 100


def test_redaction() -> None:
    text = f"series {UID} of {PSEUDONYM}: {BLOB} {'ab' * 200} done 1.5.2"
    owner = redact(text.encode())
    assert UID not in owner
    assert PSEUDONYM not in owner
    assert BLOB not in owner
    assert "[redacted: UID]" in owner
    assert "[redacted: pseudonym]" in owner
    assert "[redacted: long hex]" in owner
    assert "done 1.5.2" in owner  # short version-like numbers stay
    assert redact(text.encode(), whole=True) == text
    big = redact(b"x\n" * OWNER_LIMIT)
    assert big.startswith("[only the last 1024 KiB are shown]")
    assert len(big) < OWNER_LIMIT + 100


@needs_sandbox
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_jobs_through_the_api(site: Site) -> None:
    platform = site.platform
    tokens = {}
    with session_scope(platform.sessions) as session:
        for name in ("rita", "stan"):
            user = access.get_user(session, name)
            assert user is not None
            tokens[name] = access.issue_token(session, user)
    rita = {"Authorization": f"Bearer {tokens['rita']}"}
    stan = {"Authorization": f"Bearer {tokens['stan']}"}
    admin = {"Authorization": f"Bearer {user_token(platform, 'ada', 'admin')}"}
    home = platform.settings.resolved_homes_root / "rita"
    home.mkdir(parents=True, exist_ok=True)
    (home / "talk.py").write_text(f"print('{UID} {PSEUDONYM} {BLOB}')\n")
    body = {
        "tool": "hello@1.0.0",
        "datasets": ["lung"],
        "flavor": "no-gpu",
        "command": ["/usr/bin/python3", "/home/rita/talk.py"],
    }
    with TestClient(create_app(platform)) as client:
        dry = client.post("/api/v1/jobs", json={**body, "dry_run": True}, headers=rita)
        assert dry.status_code == 201
        assert dry.json() == {"ok": True, "problems": [], "warnings": []}
        bad = client.post("/api/v1/jobs", json={**body, "datasets": ["lungs"]}, headers=rita)
        assert bad.status_code == 422
        assert bad.json()["detail"]["problems"][0]["code"] == "dataset_unknown"
        assert client.get("/api/v1/jobs", headers=rita).json() == []
        queued = client.post("/api/v1/jobs", json=body, headers=rita).json()["job"]
        assert (queued["state"], queued["queue_position"]) == ("queued", 0)
        job_id = queued["id"]
        shown = client.get(f"/api/v1/jobs/{job_id}", headers=rita).json()
        assert shown["expected_wait_s"] is None  # no job ended yet: no estimate
        assert client.get(f"/api/v1/jobs/{job_id}", headers=stan).status_code == 403
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tick(platform)
            shown = client.get(f"/api/v1/jobs/{job_id}", headers=rita).json()
            if shown["state"] == "succeeded":
                break
            time.sleep(0.05)
        assert shown["state"] == "succeeded", shown
        log = client.get(f"/api/v1/jobs/{job_id}/logs", headers=rita).text
        assert "[redacted: UID] [redacted: pseudonym] [redacted: long encoded run]" in log
        assert UID in client.get(f"/api/v1/jobs/{job_id}/logs", headers=admin).text
        assert client.get(f"/api/v1/jobs/{job_id}/logs", headers=stan).status_code == 403
        ended = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=rita)
        assert ended.status_code == 409
        second = client.post("/api/v1/jobs", json=body, headers=rita).json()["job"]
        waiting = client.get(f"/api/v1/jobs/{second['id']}", headers=rita).json()
        assert waiting["expected_wait_s"] is not None  # from the first job's run time
        assert (
            client.post(f"/api/v1/jobs/{second['id']}/cancel", headers=rita).json()["state"]
            == "cancelled"
        )
        flavors = client.get("/api/v1/flavors", headers=rita).json()
        assert [f["name"] for f in flavors] == ["no-gpu", "small-gpu", "medium-gpu", "large-gpu"]
    with session_scope(platform.sessions) as session:
        views = session.query(LedgerEntry).filter_by(event_type="job.logs_viewed").count()
        assert views == 2


@needs_sandbox
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_public_ledger_redacts_commands(site: Site) -> None:
    from insitu.jobs import service as jobs

    with session_scope(site.platform.sessions) as session:
        job = jobs.submit(
            session,
            site.platform.settings,
            site.rita,
            tool_ref="hello@1.0.0",
            dataset_names=["lung"],
            flavor="no-gpu",
            command=["/opt/tool/venv/bin/python", "/opt/tool/app/main.py", "--subject", PSEUDONYM],
        ).job
        assert job is not None
        assert job.command[-1] == PSEUDONYM  # the owner's record keeps it
        entry = session.query(LedgerEntry).filter_by(subject=f"job:{job.id}").one()
        assert PSEUDONYM not in entry.payload
        assert "[redacted: pseudonym]" in entry.payload

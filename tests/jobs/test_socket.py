"""The platform API inside a job: its Unix socket at /run/insitu.sock takes only the job's
token, which works nowhere else, for job calls only, and ends with the job."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from insitu.db import session_scope
from insitu.jobs.models import Job, JobState
from insitu.jobs.scheduler import tick
from insitu.jobs.sockets import JobSockets
from insitu.web.app import create_app
from tests.jobs.conftest import Site, needs_sandbox, submit_job

pytestmark = [needs_sandbox, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

CALLS = """
import http.client, json, os, socket

class UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/run/insitu.sock")

def call(method, path, body=None):
    connection = UnixConnection("insitu")
    headers = {"Authorization": "Bearer " + os.environ["INSITU_TOKEN"],
               "Content-Type": "application/json"}
    connection.request(method, path, json.dumps(body) if body else None, headers)
    answer = connection.getresponse()
    return answer.status, answer.read().decode()

print("url", os.environ["INSITU_URL"])
print("whoami", *call("GET", "/api/v1/whoami"))
print("jobs", call("GET", "/api/v1/jobs")[0])
print("datasets", call("GET", "/api/v1/datasets")[0])
print("releases", call("GET", "/api/v1/releases")[0])
dry = {"tool": "hello@1.0.0", "flavor": "no-gpu", "dry_run": True}
print("child own", call("POST", "/api/v1/jobs", {**dry, "datasets": ["lung"]})[0])
print("child other", call("POST", "/api/v1/jobs", {**dry, "datasets": ["sample"]})[0])
"""


def test_the_job_socket(site: Site) -> None:
    platform = site.platform
    home = platform.settings.resolved_homes_root / "rita"
    home.mkdir(parents=True, exist_ok=True)
    (home / "calls.py").write_text(CALLS)
    sockets = JobSockets(platform)
    job_id = submit_job(site, ["/usr/bin/python3", "/home/rita/calls.py"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tick(platform, {"local": site.executor}, sockets)
            with session_scope(platform.sessions) as session:
                state = session.get(Job, job_id).state  # type: ignore[union-attr]
            if state == JobState.succeeded:
                break
            time.sleep(0.05)
        assert state == JobState.succeeded
    finally:
        sockets.close_all()
    folder = platform.settings.resolved_jobs_root / str(job_id)
    log = (folder / "log").read_text()
    assert "url unix:/run/insitu.sock" in log
    assert 'whoami 200 {"name":"rita"' in log.replace(" ", "").replace("whoami200", "whoami 200 ")
    assert "jobs 200" in log
    assert "datasets 403" in log  # only job calls from inside a job
    assert "releases 403" in log  # no release is read or downloaded from inside a job
    assert "child own 201" in log
    assert "child other 403" in log  # only the parent job's datasets
    assert job_id not in sockets.open_jobs()
    # The job token works nowhere else, and not after the job.
    token = json.loads((folder / "spec.json").read_text())["sandbox"]["env"]["INSITU_TOKEN"]
    with TestClient(create_app(platform)) as client:
        answer = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert "unknown, expired or revoked" in answer.json()["detail"]  # revoked at the end


def test_no_one_makes_a_job_token_by_hand(site: Site) -> None:
    from tests.factories import user_token

    headers = {"Authorization": f"Bearer {user_token(site.platform, 'eve', 'researcher')}"}
    with TestClient(create_app(site.platform)) as client:
        made = client.post("/api/v1/tokens", json={"label": "job:1"}, headers=headers)
        assert made.status_code == 422
        assert "marks job tokens" in made.text
        login = client.post(
            "/api/v1/auth/token", json={"name": "eve", "password": "x" * 12, "label": "job:1"}
        )
        assert login.status_code == 422

"""One executor contract: every backend passes the same conformance test; the state machine
on the fake backend; re-attaching after a scheduler restart, and lost jobs, on the local one."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.db import session_scope
from insitu.jobs import service as jobs
from insitu.jobs.backends.fake import FakeExecutor
from insitu.jobs.backends.kubernetes import KubernetesExecutor
from insitu.jobs.backends.local import LocalExecutor
from insitu.jobs.backends.protocol import Executor, RunRequest, RunState, RunStatus
from insitu.jobs.backends.slurm import SlurmExecutor
from insitu.jobs.models import Job, JobState
from insitu.jobs.runner import PID
from insitu.jobs.sandbox import SandboxSpec, job_user_ids
from tests.jobs.conftest import Site, needs_sandbox, submit_job
from tests.k8s_fake import FakeCluster, fake_kubernetes
from tests.servers import SlurmCluster

pytestmark = needs_sandbox


def _request(folder: Path, command: list[str]) -> RunRequest:
    home, results = folder / "home", folder / "results"
    for path in (home, results):
        path.mkdir(parents=True)
        ids = job_user_ids("insitu-job")
        if ids is not None:
            os.chown(path, *ids)
    spec = SandboxSpec(job_id=7, user="rita", command=command, tool=None, views={},
                       home=home, results=results, memory_mb=256)  # fmt: skip
    return RunRequest(spec, folder / "job", 30, "insitu-job")


@pytest.fixture
def kubernetes() -> Iterator[FakeCluster]:
    with fake_kubernetes() as cluster:
        yield cluster


def _executor(kind: str, request: pytest.FixtureRequest) -> Executor:
    if kind == "local":
        return LocalExecutor()
    if kind == "slurm":
        cluster: SlurmCluster = request.getfixturevalue("slurm")
        return SlurmExecutor(str(cluster.conf))
    if kind == "kubernetes":
        fake: FakeCluster = request.getfixturevalue("kubernetes")
        return KubernetesExecutor(str(fake.kubeconfig), "insitu", BASE_IMAGE)
    return FakeExecutor(outcome=RunStatus(RunState.exited, exit_code=0, end_reason="exit_code"))


BASE_IMAGE = "registry.example.org/insitu/python@sha256:" + "c" * 64
EXECUTORS = [
    "local",
    "fake",
    "kubernetes",
    pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.xdist_group("slurm")]),
]


@pytest.mark.parametrize("kind", EXECUTORS)
def test_every_executor_keeps_the_contract(
    kind: str, shared_tmp: Path, request: pytest.FixtureRequest
) -> None:
    executor = _executor(kind, request)
    assert isinstance(executor, Executor)
    run_request = _request(shared_tmp, ["/bin/sh", "-c", "echo out; echo result > /results/r"])
    reference = executor.prepare(run_request)
    assert executor.prepare(run_request) == reference  # idempotent
    assert executor.status(reference).state == RunState.pending
    executor.start(reference)
    executor.start(reference)  # idempotent: one run
    deadline = time.monotonic() + 20
    while (status := executor.status(reference)).state != RunState.exited:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert (status.exit_code, status.end_reason) == (0, "exit_code")
    executor.cancel(reference)  # after the end: nothing changes
    assert executor.status(reference) == status
    assert isinstance(executor.logs(reference), bytes)
    executor.cleanup(reference)
    executor.cleanup(reference)
    if kind in ("local", "slurm", "kubernetes"):
        assert executor.logs(reference) == b"out\n"
        assert (run_request.spec.results / "r").read_text() == "result\n"
    if kind in ("local", "slurm"):
        assert "cgroup" in status.detail or "rlimits" in status.detail


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("outcome", "state", "reason"),
    [
        (RunStatus(RunState.exited, 0, "exit_code", 1.0), JobState.succeeded, "exit_code"),
        (RunStatus(RunState.exited, 3, "exit_code", 1.0), JobState.failed, "exit_code"),
        (RunStatus(RunState.exited, -9, "out_of_memory", 1.0), JobState.failed, "out_of_memory"),
        (RunStatus(RunState.exited, -9, "time_limit", 1.0), JobState.timed_out, "time_limit"),
        (RunStatus(RunState.exited, -9, "killed_by_user", 1.0), JobState.cancelled,
         "killed_by_user"),
        (RunStatus(RunState.lost), JobState.lost, "backend_lost"),
    ],
)  # fmt: skip
def test_the_state_machine_on_the_fake_backend(
    site: Site, outcome: RunStatus, state: JobState, reason: str
) -> None:
    platform = site.platform
    fake = FakeExecutor(name="local")  # stands in for the backend the flavor names
    job_id = submit_job(site, None)
    with session_scope(platform.sessions) as session:
        assert jobs.dispatch(session, platform.settings, platform.store, fake, site.names()) == [
            job_id
        ]
    with session_scope(platform.sessions) as session:
        assert jobs.follow(session, fake) == []  # still running
        fake.finish(f"fake-{job_id}", outcome)
        assert jobs.follow(session, fake) == [job_id]
    with session_scope(platform.sessions) as session:
        ended = session.get(Job, job_id)
        assert ended is not None
        assert (ended.state, ended.end_reason) == (state, reason)
        assert (ended.hint == "") == (state == JobState.succeeded)
    assert fake.started == {f"fake-{job_id}": 1}
    assert fake.cleaned == {f"fake-{job_id}"}


def _running_job(site: Site, command: list[str]) -> int:
    platform = site.platform
    job_id = submit_job(site, command)
    with session_scope(platform.sessions) as session:
        jobs.dispatch(session, platform.settings, platform.store, LocalExecutor(), site.names())
    return job_id


def _follow_until_ended(site: Site, job_id: int) -> Job:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with session_scope(site.platform.sessions) as session:
            if job_id in jobs.follow(session, LocalExecutor()):  # a new scheduler each time
                job = session.get(Job, job_id)
                assert job is not None
                session.expunge(job)
                return job
        time.sleep(0.05)
    raise AssertionError("the job never ended")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_restarted_scheduler_re_attaches(site: Site) -> None:
    job_id = _running_job(site, ["/bin/sh", "-c", "sleep 1; echo done"])
    # The scheduler that dispatched it is gone; fresh executors find the job and its end.
    job = _follow_until_ended(site, job_id)
    assert job.state == JobState.succeeded


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_killed_runner_is_a_lost_job(site: Site) -> None:
    job_id = _running_job(site, ["/bin/sh", "-c", "sleep 30"])
    folder = site.platform.settings.resolved_jobs_root / str(job_id)
    deadline = time.monotonic() + 10
    while not (folder / PID).exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(int((folder / PID).read_text()), signal.SIGKILL)
    job = _follow_until_ended(site, job_id)
    assert (job.state, job.end_reason) == (JobState.lost, "backend_lost")
    assert "submit it again" in job.hint


def test_a_sandbox_that_cannot_be_set_up_says_so(shared_tmp: Path) -> None:
    run_request = _request(shared_tmp, ["/bin/true"])
    run_request.spec.views["lung-v1"] = shared_tmp / "no-such-view"
    executor = LocalExecutor()
    reference = executor.prepare(run_request)
    executor.start(reference)
    deadline = time.monotonic() + 20
    while (status := executor.status(reference)).state != RunState.exited:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status.end_reason == "sandbox_violation"
    assert b"bwrap: " in executor.logs(reference)

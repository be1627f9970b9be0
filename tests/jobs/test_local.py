"""Jobs on the local backend, for real: the bubblewrap sandbox, the runner, the state machine,
end reasons with hints, the ledger; and what a job must not be able to do."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from insitu.db import session_scope
from insitu.jobs import service as jobs
from insitu.jobs.backends.kubernetes import KubernetesExecutor
from insitu.jobs.backends.protocol import Executor
from insitu.jobs.backends.slurm import SlurmExecutor
from insitu.jobs.models import Flavor, Job, JobState
from insitu.ledger.models import LedgerEntry
from tests.jobs.conftest import Site, needs_sandbox, submit_job
from tests.k8s_fake import FakeCluster
from tests.servers import SlurmCluster

K8S_IMAGE = "registry.example.org/insitu/python@sha256:" + "c" * 64

pytestmark = [needs_sandbox, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def _run(
    site: Site,
    command: list[str] | None,
    flavor: str = "no-gpu",
    wait_s: float = 30,
    sample: int | None = None,
    executor: Executor | None = None,
) -> Job:
    platform = site.platform
    executor = executor or site.executor
    job_id = submit_job(site, command, flavor, sample)
    with session_scope(platform.sessions) as session:
        assert jobs.dispatch(
            session, platform.settings, platform.store, executor, site.names()
        ) == [job_id]
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with session_scope(platform.sessions) as session:
            if jobs.follow(session, executor):
                break
        time.sleep(0.05)
    with session_scope(platform.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def _log(site: Site, job: Job) -> str:
    return (jobs.job_folder(site.platform.settings, job) / "log").read_text()


def _flavor(site: Site, **changes: int | str) -> None:
    with session_scope(site.platform.sessions) as session:
        jobs.ensure_default_flavors(session)
        flavor = session.query(Flavor).filter_by(name="no-gpu").one()
        for key, value in changes.items():
            setattr(flavor, key, value)
        from insitu.ledger import service as ledger

        ledger.record(
            session,
            jobs.JOB_STATE,
            actor=ledger.HOST_ACTOR,
            subject="flavors",
            payload={"test": "flavor changed"},
        )


def test_a_job_runs_its_tool_and_leaves_results(site: Site) -> None:
    started = time.monotonic()
    job = _run(site, None)  # the tool's default command
    assert job.state == JobState.succeeded, (job.end_reason, job.hint)
    assert time.monotonic() - started < 15
    assert list(job.state_times) == ["queued", "preflight", "scheduled", "running", "succeeded"]
    assert (job.exit_code, job.end_reason, job.hint) == (0, "exit_code", "")
    results = jobs.job_folder(site.platform.settings, job) / "results"
    assert (results / "out.txt").read_text() == "/data/lung-v1"
    assert "hello" in _log(site, job)
    with session_scope(site.platform.sessions) as session:
        types = [
            e.event_type for e in session.query(LedgerEntry).filter_by(subject=f"job:{job.id}")
        ]
        assert types == ["job.submitted", "job.state", "job.state", "job.started", "job.ended"]
        used = session.query(LedgerEntry).filter_by(event_type="tool.used").count()
        assert used == 1


def test_failures_say_why_with_a_hint(site: Site) -> None:
    failed = _run(site, ["/usr/bin/python3", "-c", "raise SystemExit(3)"])
    assert (failed.state, failed.exit_code, failed.end_reason) == (JobState.failed, 3, "exit_code")
    assert "exited with status 3" in failed.hint
    assert "--sample" in failed.hint


def test_the_time_limit_is_enforced(site: Site) -> None:
    _flavor(site, max_runtime_s=1)
    job = _run(site, ["/usr/bin/python3", "-c", "import time; time.sleep(30)"])
    assert (job.state, job.end_reason) == (JobState.timed_out, "time_limit")
    assert "checkpoints" in job.hint


def test_memory_is_limited(site: Site) -> None:
    _flavor(site, memory_mb=96)
    job = _run(site, ["/usr/bin/python3", "-c", "x = bytearray(512 * 1024 * 1024); print(len(x))"])
    assert job.state == JobState.failed
    assert job.end_reason in ("out_of_memory", "exit_code")
    if job.end_reason == "out_of_memory":
        assert "more memory" in job.hint


@pytest.mark.parametrize(
    "backend",
    [
        "local",
        pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.xdist_group("slurm")]),
        "kubernetes",
    ],
)
def test_a_job_cannot_escape(
    site: Site, shared_tmp: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    executor: Executor = site.executor
    if backend == "slurm":
        cluster: SlurmCluster = request.getfixturevalue("slurm")
        executor = SlurmExecutor(str(cluster.conf))
        _flavor(site, backend="slurm")
    if backend == "kubernetes":
        fake: FakeCluster = request.getfixturevalue("kubernetes_fake")
        executor = KubernetesExecutor(str(fake.kubeconfig), "insitu", K8S_IMAGE)
        _flavor(site, backend="kubernetes")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    store = site.platform.settings.resolved_store_url.removeprefix("file://")
    munge = "/run/munge/munge.socket.2"
    if backend == "slurm":
        munge = str(request.getfixturevalue("slurm").folder / "munge.sock")
    probe = f"""
import os, socket, subprocess
def tried(what, action):
    try:
        action()
        print("ESCAPED", what)
    except Exception as exc:
        print("refused", what, type(exc).__name__)
tried("network", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1))
tried("dns", lambda: socket.getaddrinfo("pypi.org", 443))
tried("write /data", lambda: open("/data/lung-v1/x", "w"))
remount = ["mount", "-o", "remount,rw", "/data/lung-v1"]
tried("remount /data", lambda: subprocess.run(remount, check=True, capture_output=True))
tried("blob store", lambda: os.listdir("{store}"))
tried("INSITU_HOME", lambda: os.listdir("{site.platform.settings.home}"))
tried("other home", lambda: os.listdir("/home/stan"))
tried("host /etc", lambda: open("/etc/shadow"))
tried("raw disk", lambda: open("/dev/vda", "rb"))
tried("munge socket", lambda: socket.socket(socket.AF_UNIX).connect("{munge}"))
tried("postgres socket", lambda: os.listdir("/var/run/postgresql"))
tried("other dataset", lambda: os.listdir("/data/sample-v1"))
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("pids", len(pids))
print("uid", os.getuid())
"""
    # The user's own script in their home: preflight cannot see inside it, the sandbox must hold.
    home = site.platform.settings.resolved_homes_root / "rita"
    home.mkdir(parents=True, exist_ok=True)
    (home / "probe.py").write_text(probe)
    job = _run(site, ["/usr/bin/python3", "/home/rita/probe.py"], executor=executor)
    listener.close()
    log = _log(site, job)
    assert job.state == JobState.succeeded, log
    assert "ESCAPED" not in log, log
    assert log.count("refused") == 12, log
    pid_line = next(line for line in log.splitlines() if line.startswith("pids"))
    assert int(pid_line.split()[1]) <= 3, pid_line  # only its own processes
    assert "uid 1000" in log


def test_nothing_outlives_the_job(site: Site) -> None:
    job = _run(site, ["/bin/sh", "-c", "(sleep 300 &) ; (sleep 300 &) ; echo started"])
    assert job.state == JobState.succeeded
    time.sleep(0.3)
    alive = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    sleepers = []
    for process in alive:
        try:
            if (process / "cmdline").read_bytes().startswith(b"sleep\x00300"):
                sleepers.append(process.name)
        except OSError:
            continue
    assert sleepers == []


def test_cancel(site: Site) -> None:
    platform = site.platform
    job_id = submit_job(site, ["/usr/bin/python3", "-c", "import time; time.sleep(60)"])
    with session_scope(platform.sessions) as session:
        jobs.dispatch(session, platform.settings, platform.store, site.executor, site.names())
    time.sleep(0.5)
    with session_scope(platform.sessions) as session:
        jobs.cancel(session, site.executor, site.rita, job_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with session_scope(platform.sessions) as session:
            if jobs.follow(session, site.executor):
                break
        time.sleep(0.05)
    with session_scope(platform.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.state, job.end_reason) == (JobState.cancelled, "killed_by_user")
        with pytest.raises(jobs.NotYoursError):
            jobs.cancel(session, site.executor, site.stan, job_id)


def test_a_smoke_run_sees_the_first_subjects_only(site: Site) -> None:
    count = (
        "import csv; rows = list(csv.DictReader(open('/data/lung-v1/manifest.csv'))); "
        "print('subjects', len({r['subject'] for r in rows}), 'files', len(rows))"
    )
    full = _run(site, ["/usr/bin/python3", "-c", count])
    sample = _run(site, ["/usr/bin/python3", "-c", count], sample=1)
    assert "subjects 2 files 4" in _log(site, full)
    assert "subjects 1 files 2" in _log(site, sample)


def test_filling_scratch_and_forking_without_end_are_stopped(site: Site) -> None:
    _flavor(site, scratch_mb=8)
    fill = "dd if=/dev/zero of=/scratch/big bs=1M count=64; echo dd=$?"
    filled = _run(site, ["/bin/sh", "-c", fill])
    assert "No space left on device" in _log(site, filled)
    assert "dd=1" in _log(site, filled)
    _flavor(site, max_runtime_s=5)
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    forked = _run(site, ["/usr/bin/python3", "-c", bomb])
    assert forked.state == JobState.timed_out  # the pids limit held it; the watchdog ended it
    # The platform keeps working: the next job runs.
    assert _run(site, ["/bin/true"]).state == JobState.succeeded

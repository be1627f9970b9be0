"""Job benchmark: submit → running on the local backend, dispatching 1,000 queued jobs,
reading a 1 GB dataset view inside the sandbox against the same read on the host, and
`GET /api/v1/jobs` with 100,000 jobs in the database.

In one run, on a fresh INSITU_HOME (embedded SQLite, local blob store), as root (the sandbox
starts as the job user, with cgroup limits):
- setup: a tool (a one-file bundle from a local wheel), a released synthetic dataset of
  ``--view-mb`` MB in 10 MB instances (bulk catalogue rows), a researcher with a grant;
- submit → running: ``--latency-jobs`` jobs one after another, each submitted, then the
  scheduler's tick until the job is running and its runner has started, timed end to end;
- dispatch: ``--queued`` jobs queued, then dispatched by the scheduler to the fake backend
  (the scheduler's own cost: preflight again, prepare, ledger entries), timed;
- view read: the same Python command reads every file of the view, on the host and inside the
  sandbox, alternating, best of ``--rounds`` each (page cache warm for both);
- list: ``--jobs`` job rows, then ``GET /api/v1/jobs`` (50 a page) through a live server.

Usage: sudo python bench/job_bench.py [--view-mb 1024] [--queued 1000] [--jobs 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform as host
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.tools.bundles import write_bundle  # noqa: E402
from tests.tools.wheels import make_wheel  # noqa: E402

from bench.live import live_server, timed_gets  # noqa: E402
from insitu.access import service as access  # noqa: E402 - after the path is set
from insitu.access.models import Role  # noqa: E402
from insitu.catalog.models import Instance, Series, Study, Subject  # noqa: E402
from insitu.catalog.service import SelectionCriteria  # noqa: E402
from insitu.core.platform import Platform, open_platform  # noqa: E402
from insitu.datasets import service as datasets  # noqa: E402
from insitu.datasets.models import Tier  # noqa: E402
from insitu.datasets.view import ensure_view  # noqa: E402
from insitu.db import session_scope, utcnow  # noqa: E402
from insitu.jobs import service as jobs  # noqa: E402
from insitu.jobs.backends.fake import FakeExecutor  # noqa: E402
from insitu.jobs.backends.local import LocalExecutor  # noqa: E402
from insitu.jobs.models import Job, JobState  # noqa: E402
from insitu.jobs.runner import PID  # noqa: E402
from insitu.jobs.sandbox import SandboxSpec, bwrap_args, drop_to, job_user_ids  # noqa: E402
from insitu.ledger import service as ledger  # noqa: E402
from insitu.settings import Settings  # noqa: E402
from insitu.tools import service as tools  # noqa: E402
from insitu.tools.environment import build_settings  # noqa: E402
from insitu.tools.manifest import pack_folder  # noqa: E402

READ_ALL = (
    "import os, sys, time\n"
    "total = 0\n"
    "for folder, _, files in os.walk(sys.argv[1]):\n"
    "    for name in files:\n"
    "        with open(os.path.join(folder, name), 'rb') as handle:\n"
    "            while chunk := handle.read(1 << 20):\n"
    "                total += len(chunk)\n"
    "print(total)\n"
)


def _setup(platform: Platform, work: Path, view_mb: int) -> tuple[access.Principal, Path]:
    wheels = work / "wheels"
    requirement = make_wheel(wheels, "hello_tool", "1.0", "def greet():\n    return 'hi'\n")
    with session_scope(platform.sessions) as session:
        people = {}
        for name, role in (
            ("rita", Role.researcher),
            ("stan", Role.steward),
            ("mia", Role.maintainer),
        ):
            user = access.create_user(session, name, role)
            people[name] = access.Principal(user.id, name, role)
    folder = write_bundle(work / "bundle", requirement, name="hello", version="1.0.0")
    with session_scope(platform.sessions) as session:
        published = tools.publish(
            session,
            platform.store,
            build_settings(platform.settings),
            pack_folder(folder),
            people["mia"],
        )
        tools.submit(session, published.version, people["mia"])
        tools.verify(session, published.version, people["stan"], require_test_run=False)
    count = max(1, view_mb // 10)
    with session_scope(platform.sessions) as session:
        session.execute(insert(Subject), [{"id": 1, "pseudonym": "S-BENCH", "site": "B"}])
        session.execute(insert(Study), [{"id": 1, "study_instance_uid": "2.25.1", "subject_id": 1}])
        session.execute(
            insert(Series),
            [{"id": 1, "series_instance_uid": "2.25.2", "study_id": 1, "modality": "CT"}],
        )
        rows = []
        for number in range(count):
            data = hashlib.sha256(str(number).encode()).digest() * (10 * 1024 * 1024 // 32)
            rows.append(
                {
                    "sop_instance_uid": f"2.25.3.{number}",
                    "series_id": 1,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                    "blob_digest": platform.store.put(data),
                    "size": len(data),
                    "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                    "deid_options": "",
                    "created_at": utcnow(),
                }
            )
        session.execute(insert(Instance), rows)
        stan, rita = people["stan"].user_id, people["rita"].user_id
        dataset = datasets.create_dataset(
            session,
            "bench",
            datasets.DatasetMetadata(title="Bench", tier=Tier.synthetic),
            stan,
            criteria=SelectionCriteria(),
        )
        datasets.release(session, dataset, stan, platform.publication)
        datasets.grant(session, dataset, stan, user_id=rita)
        datasets.accept_terms(session, dataset, rita)
        view = ensure_view(session, platform.store, platform.settings.resolved_views_root, dataset)
    return people["rita"], view


def _submit(platform: Platform, rita: access.Principal, command: list[str]) -> int:
    with session_scope(platform.sessions) as session:
        job = jobs.submit(
            session,
            platform.settings,
            rita,
            tool_ref="hello@1.0.0",
            dataset_names=["bench"],
            flavor="no-gpu",
            command=command,
        ).job
        if job is None:
            raise SystemExit("the benchmark job did not pass preflight")
        return job.id


def _latency(platform: Platform, rita: access.Principal, rounds: int) -> list[float]:
    executor = LocalExecutor()
    names = {rita.user_id: rita.name}
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        job_id = _submit(platform, rita, ["/bin/true"])
        with session_scope(platform.sessions) as session:
            jobs.dispatch(session, platform.settings, platform.store, executor, names)
        folder = platform.settings.resolved_jobs_root / str(job_id)
        while not (folder / PID).exists():
            time.sleep(0.001)
        latencies.append(time.perf_counter() - started)
        while True:  # let it end before the next one
            with session_scope(platform.sessions) as session:
                if jobs.follow(session, executor):
                    break
            time.sleep(0.01)
    return latencies


def _bulk_jobs(session: Any, user_id: int, like: Job, count: int, state: JobState) -> None:
    """``count`` job rows like ``like`` in one insert (setup, not measured)."""
    now = utcnow()
    session.execute(
        insert(Job),
        [
            {
                "user_id": user_id,
                "tool_version_id": like.tool_version_id,
                "dataset_ids": like.dataset_ids,
                "flavor": "no-gpu",
                "command": ["/bin/true"],
                "state": state,
                "state_times": {state.value: now.isoformat()},
                "backend": "local",
                "details": {},
                "created_at": now,
            }
            for _ in range(count)
        ],
    )


def _dispatch(platform: Platform, rita: access.Principal, queued: int) -> float:
    with session_scope(platform.sessions) as session:
        job = session.query(Job).first()
        assert job is not None  # noqa: S101 - the latency phase made some
        _bulk_jobs(session, rita.user_id, job, queued, JobState.queued)
        ledger.record(
            session,
            jobs.JOB_SUBMITTED,
            actor=ledger.user_actor(rita.user_id),
            subject="bench",
            payload={"jobs": queued},
        )
    fake = FakeExecutor(name="local")  # stands in for the local backend
    started = time.perf_counter()
    with session_scope(platform.sessions) as session:
        count = len(
            jobs.dispatch(
                session,
                platform.settings,
                platform.store,
                fake,
                {rita.user_id: rita.name},
                limit=queued,
            )
        )
    seconds = time.perf_counter() - started
    if count != queued:
        raise SystemExit(f"dispatched {count} of {queued}")
    return seconds


def _read(view: Path, settings: Settings, rounds: int) -> tuple[float, float, int]:
    on_host = [sys.executable, "-c", READ_ALL, str(view)]
    home = Path(tempfile.mkdtemp(dir="/var/tmp"))
    ids = job_user_ids(settings.job_user)
    if ids is not None:
        os.chown(home, *ids)
    spec = SandboxSpec(
        job_id=0,
        user="bench",
        command=["/usr/bin/python3", "-c", READ_ALL, "/data/bench-v1"],
        tool=None,
        views={"bench-v1": view},
        home=home,
        results=home,
        memory_mb=2048,
    )
    in_sandbox = [*drop_to(settings.job_user), *bwrap_args(spec)]
    best_host, best_box, size = float("inf"), float("inf"), 0
    for _ in range(rounds):
        for which in ("host", "sandbox"):
            started = time.perf_counter()
            done = subprocess.run(
                on_host if which == "host" else in_sandbox,
                capture_output=True,
                text=True,
                check=True,
            )
            seconds = time.perf_counter() - started
            size = int(done.stdout.strip())
            if which == "host":
                best_host = min(best_host, seconds)
            else:
                best_box = min(best_box, seconds)
    shutil.rmtree(home)
    return best_host, best_box, size


def _list(platform: Platform, rita: access.Principal, total: int, requests: int) -> list[float]:
    with session_scope(platform.sessions) as session:
        existing = session.query(Job).count()
        job = session.query(Job).first()
        assert job is not None  # noqa: S101
        for start in range(existing, total, 20_000):
            _bulk_jobs(session, rita.user_id, job, min(20_000, total - start), JobState.succeeded)
        ledger.record(
            session,
            jobs.JOB_SUBMITTED,
            actor=ledger.HOST_ACTOR,
            subject="bench",
            payload={"jobs": total},
        )
        token = access.issue_token(session, access.get_user(session, "rita"))  # type: ignore[arg-type]
    from insitu.web.app import create_app

    with live_server(create_app(platform)) as url:
        return timed_gets(url, token, lambda _n: ("/api/v1/jobs", {"limit": 50}), requests, 10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--view-mb", type=int, default=1024)
    parser.add_argument("--latency-jobs", type=int, default=20)
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="insitu-job-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    home = work / "home"
    home.mkdir()
    home.chmod(0o711)
    settings = Settings(
        home=home,
        demo=True,
        ingest_workers=1,
        tool_wheel_dir=work / "wheels",
        job_max_concurrent=10**9,
    )
    platform = open_platform(settings)
    rita, view = _setup(platform, work, args.view_mb)
    latencies = _latency(platform, rita, args.latency_jobs)
    dispatch_s = _dispatch(platform, rita, args.queued)
    host_s, box_s, size = _read(view, settings, args.rounds)
    list_latencies = _list(platform, rita, args.jobs, args.requests)
    platform.close()
    shutil.rmtree(work, ignore_errors=True)
    p95 = statistics.quantiles(list_latencies, n=20)[18] * 1000
    results = {
        "machine": f"{host.machine()}, {os.cpu_count()} CPUs, {host.platform()}",
        "submit_to_running_median_s": round(statistics.median(latencies), 3),
        "submit_to_running_max_s": round(max(latencies), 3),
        "dispatch_s": round(dispatch_s, 2),
        "queued": args.queued,
        "view_bytes": size,
        "read_host_s": round(host_s, 3),
        "read_sandbox_s": round(box_s, 3),
        "read_ratio": round(host_s / box_s, 3),
        "jobs": args.jobs,
        "list_p50_ms": round(statistics.median(list_latencies) * 1000, 1),
        "list_p95_ms": round(p95, 1),
    }
    print(json.dumps(results, indent=2))
    print()
    print("| measure | figure | target |")
    print("|---|---|---|")
    print(
        f"| submit → running, local backend (median / max of {args.latency_jobs}) | "
        f"{results['submit_to_running_median_s']} / {results['submit_to_running_max_s']} s "
        "| < 1 s |"
    )
    print(f"| dispatch {args.queued:,} queued jobs | {dispatch_s:.2f} s | < 10 s |")
    print(
        f"| read a {size / 1e9:.2f} GB view: host / sandbox | {host_s:.3f} / {box_s:.3f} s "
        f"({host_s / box_s:.0%}) | ≥ 90 % |"
    )
    print(
        f"| `GET /api/v1/jobs`, {args.jobs:,} jobs: p50 / p95 | "
        f"{results['list_p50_ms']} / {results['list_p95_ms']} ms | < 100 ms |"
    )


if __name__ == "__main__":
    main()

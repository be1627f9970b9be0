"""Viewer benchmark: a rendered 512x512 CT slice through WADO-RS, one client and 20 at once,
with the floors measured in the same run.

In one run, on a fresh INSITU_HOME (embedded SQLite, local blob store):
- setup: ``--slices`` synthetic 512x512 CT slices (``generate_corpus``) ingested, released as
  a dataset, granted to a researcher who accepted its terms (budget raised for the run);
- floors: ``imaging.render`` of the same slices in-process (decode, LUTs, JPEG; no HTTP, no
  database), and ``GET /api/v1/health`` through the same live server (HTTP alone);
- one client: ``--requests`` renders one after another (a scroll through the series, each
  with another window), p50/p95;
- concurrent: ``--clients`` threads, each with its own connection, ``--per-client`` renders
  each, all at once, p50/p95 over every request.

Usage: python bench/viewer_bench.py [--slices 50] [--requests 200] [--clients 20]
Prints a Markdown table for docs/benchmarks.md and writes viewer-results.json in the workdir.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform as host
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.live import live_server, timed_gets  # noqa: E402
from insitu.access import service as access  # noqa: E402 - after the path is set
from insitu.access.models import Role  # noqa: E402
from insitu.catalog.models import Instance, Series, Study  # noqa: E402
from insitu.catalog.service import SelectionCriteria  # noqa: E402
from insitu.core.platform import Platform, open_platform  # noqa: E402
from insitu.datasets import service as datasets  # noqa: E402
from insitu.datasets.models import Tier  # noqa: E402
from insitu.db import session_scope  # noqa: E402
from insitu.ingest import service as ingest  # noqa: E402
from insitu.ingest.corpus import generate_corpus  # noqa: E402
from insitu.ingest.deid.table import Options  # noqa: E402
from insitu.ingest.sources import iter_sources  # noqa: E402
from insitu.settings import Settings  # noqa: E402
from insitu.web import imaging  # noqa: E402
from insitu.web.app import create_app  # noqa: E402


def _setup(platform: Platform, work: Path, slices: int) -> tuple[str, list[str]]:
    corpus = generate_corpus(work / "corpus", subjects=1, ct_slices=slices, mr_slices=0)
    ingest.ingest(platform, iter_sources([corpus.root]), site="BENCH", options=Options.parse(""))
    with session_scope(platform.sessions) as session:
        rita = access.create_user(session, "rita", Role.researcher)
        stan = access.create_user(session, "stan", Role.steward)
        dataset = datasets.create_dataset(
            session, "chest", datasets.DatasetMetadata(title="Chest", tier=Tier.real), stan.id,
            criteria=SelectionCriteria(),
        )  # fmt: skip
        datasets.release(session, dataset, stan.id, platform.publication)
        datasets.grant(session, dataset, stan.id, user_id=rita.id)
        datasets.accept_terms(session, dataset, rita.id)
        token = access.issue_token(session, rita)
        rows = session.execute(select_paths().order_by(Instance.instance_number)).all()
    return token, [f"/dicomweb/studies/{a}/series/{b}/instances/{c}/rendered" for a, b, c in rows]


def select_paths() -> Any:
    """Study, series and instance UIDs of every instance."""
    from sqlalchemy import select

    return (
        select(Study.study_instance_uid, Series.series_instance_uid, Instance.sop_instance_uid)
        .join(Series, Series.study_id == Study.id)
        .join(Instance, Instance.series_id == Series.id)
    )


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def _floor(platform: Platform, count: int) -> list[float]:
    with session_scope(platform.sessions) as session:
        digests = session.scalars(Instance.__table__.select().with_only_columns(
            Instance.blob_digest)).all()  # fmt: skip
    times = []
    for number in range(count):
        digest = digests[number % len(digests)]
        started = time.perf_counter()
        dataset = pydicom.dcmread(io.BytesIO(platform.store.get(digest)))
        imaging.render(dataset, key=b"k" * 32, digest=digest,
                       window=imaging.Window(40 + number % 7, 400))  # fmt: skip
        times.append(time.perf_counter() - started)
    return times


def _concurrent(url: str, token: str, paths: list[str], clients: int, each: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(number: int) -> None:
        mine = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            http.get(paths[0], params={"window": "40,400"}).raise_for_status()  # connect
            start.wait()
            for step in range(each):
                path = paths[(number * 7 + step) % len(paths)]
                began = time.perf_counter()
                http.get(path, params={"window": f"{40 + step},400"}).raise_for_status()
                mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="insitu-viewer-bench-"))
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home, secret_key="v" * 40, ingest_workers=1,
                        viewer_frames_per_hour=1_000_000)  # fmt: skip
    platform = open_platform(settings)
    token, paths = _setup(platform, work, args.slices)
    floor = _floor(platform, args.requests)
    with live_server(create_app(platform)) as url:
        health = timed_gets(url, token, lambda _n: ("/api/v1/health", {}), args.requests, 10)
        one = timed_gets(
            url, token,
            lambda n: (paths[n % len(paths)], {"window": f"{40 + n % 50},400"}),
            args.requests, 10,
            check=lambda answer: None if answer.content[:3] == b"\xff\xd8\xff" else sys.exit(1),
        )  # fmt: skip
        many = _concurrent(url, token, paths, args.clients, args.per_client)
    platform.close()
    figures = {
        "machine": f"{host.machine()}, {os.cpu_count()} CPUs, Linux {host.release()}",
        "render_in_process_ms": _percentiles(floor),
        "health_ms": _percentiles(health),
        "one_client_ms": _percentiles(one),
        "concurrent_ms": _percentiles(many),
        "clients": args.clients,
    }
    (work / "viewer-results.json").write_text(json.dumps(figures, indent=2))
    print(f"{args.slices} CT slices 512x512; {figures['machine']}")
    print("| measure | p50 (ms) | p95 (ms) | target p95 |")
    print("|---|---|---|---|")
    rows = (
        ("`imaging.render` in-process (floor)", floor, ""),
        ("`GET /api/v1/health` (HTTP floor)", health, ""),
        ("rendered slice, one client", one, "< 50"),
        (f"rendered slice, {args.clients} clients at once", many, "< 300"),
    )
    for label, values, target in rows:
        p50, p95 = _percentiles(values)
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {target} |")


if __name__ == "__main__":
    main()

"""Explorer benchmark: the dataset list and the dataset page with 10,000 datasets and
1,000,000 instances in the catalogue, against the server's HTTP floor in the same run.

In one run, on a fresh INSITU_HOME (embedded SQLite), catalogue rows written in bulk (no
blobs: neither page reads an image):
- ``--instances`` instances in series of ``--per-series``, two series per subject, with a
  clinical record each; one published dataset over all of them ("big") and
  ``--datasets`` - 1 published datasets of two series each;
- floor: ``GET /api/v1/health`` through the same live server;
- list: ``GET /explore`` as a signed-in steward (bearer token), random pages, three quarters
  of them filtered (name text; size, sorted largest first; modality), p50/p95;
- dataset page: the big dataset's first view (its statistics computed and kept), then
  ``GET /explore/big`` and ``/explore/<small>`` pages, p50/p95.

Usage: python bench/explorer_bench.py [--instances 1000000] [--datasets 10000]
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform as host
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.live import live_server, timed_gets  # noqa: E402
from insitu.access import service as access  # noqa: E402 - after the path is set
from insitu.access.models import Role  # noqa: E402
from insitu.catalog.models import ClinicalRecord, Instance, Series, Study, Subject  # noqa: E402
from insitu.core.platform import Platform, open_platform  # noqa: E402
from insitu.datasets import service as datasets  # noqa: E402
from insitu.datasets.models import Dataset, DatasetSeries, DatasetState, Tier  # noqa: E402
from insitu.db import session_scope, utcnow  # noqa: E402
from insitu.ledger import service as ledger  # noqa: E402
from insitu.settings import Settings  # noqa: E402
from insitu.web.app import create_app  # noqa: E402


def _rows(platform: Platform, instances: int, per_series: int, count: int, steward: int) -> None:
    subjects = instances // (2 * per_series)
    series_total = subjects * 2
    now = utcnow()
    with session_scope(platform.sessions) as session:
        session.execute(insert(Subject), [{"id": s + 1, "pseudonym": f"S-{s:08d}",
                                           "site": "BENCH"} for s in range(subjects)])  # fmt: skip
        session.execute(insert(Study), [{"id": s + 1, "study_instance_uid": f"2.25.1.{s}",
                                         "subject_id": s + 1, "study_date": "20240101"}
                                        for s in range(subjects)])  # fmt: skip
        session.execute(insert(Series), [
            {"id": n + 1, "series_instance_uid": f"2.25.2.{n}", "study_id": n // 2 + 1,
             "modality": "CT" if n % 2 == 0 else "MR",
             "body_part_examined": "CHEST" if n % 4 < 2 else "BRAIN", "manufacturer": "BENCH"}
            for n in range(series_total)])  # fmt: skip
        session.execute(insert(ClinicalRecord), [
            {"subject_id": s + 1, "data": {"age": 30 + s % 50, "sex": "FM"[s % 2],
                                           "diagnosis": ["nodule", "none", "mass"][s % 3]}}
            for s in range(subjects)])  # fmt: skip
        for start in range(0, instances, 20_000):
            session.execute(insert(Instance), [
                {"sop_instance_uid": f"2.25.3.{n}", "series_id": n // per_series + 1,
                 "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": n % per_series,
                 "blob_digest": f"{n:064x}", "size": 524_288, "rows": 512, "columns": 512,
                 "transfer_syntax_uid": "1.2.840.10008.1.2.1", "deid_options": "",
                 "created_at": now}
                for n in range(start, min(instances, start + 20_000))])  # fmt: skip
        base = {"version": 1, "authors": ["Bench"], "tier": Tier.synthetic, "selection": {},
                "state": DatasetState.published, "created_by": steward, "created_at": now,
                "released_at": now, "published_at": now}  # fmt: skip
        session.execute(insert(Dataset), [
            {**base, "id": 1, "name": "big", "title": "All of it",
             "provenance": {"instances": instances}},
            *({**base, "id": n + 1, "name": f"atlas-{n:05d}", "title": f"Atlas {n}",
               "provenance": {"instances": 2 * per_series}} for n in range(1, count))])  # fmt: skip
        session.execute(insert(DatasetSeries), [
            *({"dataset_id": 1, "series_id": s + 1} for s in range(series_total)),
            *({"dataset_id": n + 1, "series_id": (2 * n) % series_total + k + 1}
              for n in range(1, count) for k in range(2))])  # fmt: skip
        ledger.record(session, datasets.DATASET_CREATED, actor=ledger.user_actor(steward),
                      subject="bench", payload={"datasets": count})  # fmt: skip


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--per-series", type=int, default=50)
    parser.add_argument("--datasets", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="insitu-explorer-bench-"))
    platform = open_platform(Settings(home=home, secret_key="e" * 40, ingest_workers=1))
    with session_scope(platform.sessions) as session:
        steward = access.create_user(session, "stan", Role.steward)
        steward_id, token = steward.id, access.issue_token(session, steward)
    started = time.perf_counter()
    _rows(platform, args.instances, args.per_series, args.datasets, steward_id)
    print(f"setup: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    pages = max(1, args.datasets // 20)
    rng = random.Random(3)

    def listing(number: int) -> tuple[str, dict[str, object]]:
        params: dict[str, object] = {"page": rng.randint(1, pages)}
        if number % 4 == 1:
            params = {"q": f"atlas {rng.randint(0, 99)}"}
        elif number % 4 == 2:
            params = {"min_instances": 100, "sort": "largest", "page": rng.randint(1, pages)}
        elif number % 4 == 3:
            params = {"modality": "MR", "page": rng.randint(1, 50)}
        return "/explore", params

    with live_server(create_app(platform)) as url:
        floor = timed_gets(url, token, lambda _n: ("/api/v1/health", {}), args.requests, 10)
        first_started = time.perf_counter()
        timed_gets(url, token, lambda _n: ("/explore/big", {}), 1, 0)
        first = time.perf_counter() - first_started
        listed = timed_gets(url, token, listing, args.requests, 10)
        big = timed_gets(url, token, lambda _n: ("/explore/big", {}), args.requests, 5)
        small = timed_gets(url, token, lambda n: (f"/explore/atlas-{1 + n % 999:05d}", {}),
                           args.requests, 5)  # fmt: skip
    platform.close()
    machine = f"{host.machine()}, {os.cpu_count()} CPUs, Linux {host.release()}"
    print(f"{args.datasets:,} datasets, {args.instances:,} instances; {machine}")
    print("| measure | p50 (ms) | p95 (ms) | target p95 |")
    print("|---|---|---|---|")
    for label, values, target in (
        ("`GET /api/v1/health` (HTTP floor)", floor, ""),
        ("`/explore` (pages, text, size and modality filters)", listed, "< 200"),
        ("`/explore/big` (1,000,000 instances; statistics kept)", big, "< 200"),
        ("`/explore/<small>` (100 instances)", small, "< 200"),
    ):
        p50, p95 = _ms(values)
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {target} |")
    print(f"first view of `/explore/big` (statistics computed): {first * 1000:.0f} ms")


if __name__ == "__main__":
    main()

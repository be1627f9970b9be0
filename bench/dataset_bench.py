"""Dataset benchmark: create + release 100,000 instances, build their view, list 10,000
datasets through the API; with plain-copy baselines in the same run.

In one run, on a fresh INSITU_HOME (embedded SQLite, local blob store):
- setup (not timed as a result): a catalogue of ``--instances`` instances (``--per-series``
  per series, two series per subject, a clinical record each) written with bulk inserts, and
  one small blob per instance in the blob store;
- baselines: ``cp -r`` of the blob folder (what copying the images into a dataset folder
  costs) and ``cp -al`` (coreutils' hard-link tree, the nearest peer of a zero-copy view);
- ``create_dataset`` (catalogue query) + ``release`` (content hash) in one transaction,
  committed;
- ``ensure_view`` of the released version (hard links, manifest, index, clinical data);
- ``--datasets`` published datasets, then ``GET /api/v1/datasets`` pages through a live
  uvicorn server over HTTP (random offsets), p50/p95 per request.

Usage: python bench/dataset_bench.py [--instances 100000] [--datasets 10000] [--requests 300]
Prints a Markdown table for docs/benchmarks.md and writes dataset-results.json in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.live import live_server, timed_gets  # noqa: E402
from insitu.access import service as access  # noqa: E402 - after the path is set
from insitu.access.models import Role  # noqa: E402
from insitu.catalog.models import ClinicalRecord, Instance, Series, Study, Subject  # noqa: E402
from insitu.catalog.service import SelectionCriteria  # noqa: E402
from insitu.core.platform import Platform, open_platform  # noqa: E402
from insitu.datasets import service as datasets  # noqa: E402
from insitu.datasets.models import Dataset, DatasetState, DatasetSteward, Tier  # noqa: E402
from insitu.datasets.view import ensure_view  # noqa: E402
from insitu.db import session_scope, utcnow  # noqa: E402
from insitu.ledger import service as ledger  # noqa: E402
from insitu.settings import Settings  # noqa: E402
from insitu.storage.local import LocalBlobStore  # noqa: E402
from insitu.web.app import create_app  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _catalogue(platform: Platform, instances: int, per_series: int) -> None:
    """Subjects with one study of two series each, blobs of 512 bytes, clinical records."""
    store = platform.store
    if not isinstance(store, LocalBlobStore):
        raise SystemExit("the benchmark sets up the local blob store")
    subjects = instances // (2 * per_series)
    now = utcnow()
    with session_scope(platform.sessions) as session:
        session.execute(
            insert(Subject),
            [{"id": s + 1, "pseudonym": f"S-{s:08d}", "site": "BENCH"} for s in range(subjects)],
        )
        session.execute(
            insert(Study),
            [
                {
                    "id": s + 1,
                    "study_instance_uid": f"2.25.1.{s}",
                    "subject_id": s + 1,
                    "study_date": "20240101",
                }
                for s in range(subjects)
            ],
        )
        session.execute(
            insert(Series),
            [
                {
                    "id": n + 1,
                    "series_instance_uid": f"2.25.2.{n}",
                    "study_id": n // 2 + 1,
                    "modality": "CT" if n % 2 == 0 else "MR",
                    "body_part_examined": "CHEST",
                    "manufacturer": "BENCH",
                }
                for n in range(subjects * 2)
            ],
        )
        session.execute(
            insert(ClinicalRecord),
            [
                {"subject_id": s + 1, "data": {"age": 40 + s % 40, "sex": "FM"[s % 2]}}
                for s in range(subjects)
            ],
        )
        batch: list[dict[str, object]] = []
        staged = []
        for number in range(subjects * 2 * per_series):
            data = number.to_bytes(8, "big") * 64
            blob = store.stage(data)
            staged.append(blob)
            batch.append(
                {
                    "sop_instance_uid": f"2.25.3.{number}",
                    "series_id": number // per_series + 1,
                    "sop_class_uid": CT,
                    "instance_number": number % per_series + 1,
                    "blob_digest": blob.digest,
                    "size": len(data),
                    "rows": 16,
                    "columns": 16,
                    "transfer_syntax_uid": EXPLICIT_LE,
                    "deid_options": "",
                    "created_at": now,
                }
            )
            if len(batch) == 10_000:
                store.commit(staged)
                session.execute(insert(Instance), batch)
                batch, staged = [], []
        if batch:
            store.commit(staged)
            session.execute(insert(Instance), batch)


def _timed_copy(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - started


def _many_datasets(platform: Platform, count: int, steward_id: int) -> None:
    """``count`` published datasets over the same two series (metadata rows only)."""
    now = utcnow()
    with session_scope(platform.sessions) as session:
        first = 1000
        session.execute(
            insert(Dataset),
            [
                {
                    "id": first + n,
                    "name": f"bench-{n:05d}",
                    "version": 1,
                    "title": f"Bench dataset {n}",
                    "authors": ["Bench"],
                    "tier": Tier.synthetic,
                    "state": DatasetState.published,
                    "provenance": {},
                    "selection": {},
                    "created_by": steward_id,
                    "created_at": now,
                    "published_at": now,
                }
                for n in range(count)
            ],
        )
        session.execute(
            insert(DatasetSteward),
            [{"dataset_id": first + n, "user_id": steward_id} for n in range(count)],
        )
        ledger.record(
            session,
            datasets.DATASET_CREATED,
            actor=ledger.user_actor(steward_id),
            subject="bench",
            payload={"datasets": count, "note": "bulk rows for the list benchmark"},
        )


def _list_latencies(platform: Platform, token: str, total: int, requests: int) -> list[float]:
    rng = random.Random(7)

    def page(_number: int) -> tuple[str, dict[str, object]]:
        return "/api/v1/datasets", {"limit": 100, "offset": rng.randrange(0, max(1, total - 100))}

    def full(answer: httpx.Response) -> None:
        if len(answer.json()) != 100:
            raise SystemExit(f"a page of {len(answer.json())} datasets, not 100")

    with live_server(create_app(platform)) as url:
        return timed_gets(url, token, page, requests, 20, full)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--per-series", type=int, default=50)
    parser.add_argument("--datasets", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    home = args.workdir / "dataset-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    settings = Settings(home=home, demo=True, ingest_workers=1)
    platform = open_platform(settings)
    with session_scope(platform.sessions) as session:
        steward = access.create_user(session, "bench-steward", Role.steward)
        steward_id = steward.id
        token = access.issue_token(session, steward)
    started = time.perf_counter()
    _catalogue(platform, args.instances, args.per_series)
    print(f"setup: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    blobs = home / "blobs" / "sha256"
    copy_dir = args.workdir / "dataset-copy"
    link_dir = args.workdir / "dataset-links"
    for folder in (copy_dir, link_dir):
        shutil.rmtree(folder, ignore_errors=True)
    os.sync()
    copy_s = _timed_copy(["cp", "-r", str(blobs), str(copy_dir)])
    link_s = _timed_copy(["cp", "-al", str(blobs), str(link_dir)])
    print(f"cp -r {copy_s:.2f} s, cp -al {link_s:.2f} s", file=sys.stderr)

    started = time.perf_counter()
    with session_scope(platform.sessions) as session:
        dataset = datasets.create_dataset(
            session,
            "bench-100k",
            datasets.DatasetMetadata(title="Bench", tier=Tier.synthetic),
            steward_id,
            criteria=SelectionCriteria(),
        )
        datasets.release(session, dataset, steward_id, platform.publication)
        dataset_id = dataset.id
    create_release_s = time.perf_counter() - started
    print(f"create + release: {create_release_s:.2f} s", file=sys.stderr)

    started = time.perf_counter()
    with session_scope(platform.sessions) as session:
        released = session.get(Dataset, dataset_id)
        if released is None:
            raise SystemExit("the released dataset vanished")
        view = ensure_view(session, platform.store, settings.resolved_views_root, released)
    view_s = time.perf_counter() - started
    linked = sum(1 for _ in view.rglob("*.dcm"))
    if linked != args.instances:
        raise SystemExit(f"the view links {linked} instances, not {args.instances}")
    print(f"view: {view_s:.2f} s ({linked} files)", file=sys.stderr)

    _many_datasets(platform, args.datasets, steward_id)
    latencies = _list_latencies(platform, token, args.datasets, args.requests)
    p50 = statistics.median(latencies) * 1000
    p95 = statistics.quantiles(latencies, n=20)[18] * 1000
    print(f"list: p50 {p50:.1f} ms, p95 {p95:.1f} ms", file=sys.stderr)
    platform.close()
    for folder in (copy_dir, link_dir):
        shutil.rmtree(folder, ignore_errors=True)

    results = {
        "machine": f"{host.machine()}, {os.cpu_count()} CPUs, {host.platform()}, "
        f"Python {host.python_version()}",
        "instances": args.instances,
        "cp_r_s": round(copy_s, 2),
        "cp_al_s": round(link_s, 2),
        "create_release_s": round(create_release_s, 2),
        "view_s": round(view_s, 2),
        "datasets": args.datasets,
        "list_p50_ms": round(p50, 1),
        "list_p95_ms": round(p95, 1),
    }
    (args.workdir / "dataset-results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print()
    print("| measure | figure | target |")
    print("|---|---|---|")
    print(f"| `cp -r` of the {args.instances:,} blobs | {copy_s:.2f} s | (baseline) |")
    print(f"| `cp -al` (hard-link tree) of the blobs | {link_s:.2f} s | (baseline) |")
    print(f"| create + release, {args.instances:,} instances | {create_release_s:.2f} s | < 10 s |")
    print(f"| build the view, {args.instances:,} instances | {view_s:.2f} s | < 10 s |")
    print(
        f"| `GET /api/v1/datasets` ({args.datasets:,} datasets, 100 a page), p50 / p95 | "
        f"{p50:.1f} / {p95:.1f} ms | p95 < 50 ms |"
    )
    print(f"\nmachine: {results['machine']}")


if __name__ == "__main__":
    main()

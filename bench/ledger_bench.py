"""Ledger benchmark: appends, full verification and proofs, beside plain SQLite inserts.

In one run, on a fresh INSITU_HOME (embedded SQLite):
- baseline: the same rows inserted with plain ``sqlite3`` ``executemany``, same batch size,
  one transaction per batch, no hashing;
- ``ledger.record_many`` appends in batches (leaf hashes, subtree hashes, one transaction per
  batch) up to ``--entries`` (1,000,000 by default);
- ``ledger.verify`` over the whole log against a signed checkpoint;
- inclusion and consistency proofs at full size (random leaves and sizes), per proof.

Usage: python bench/ledger_bench.py [--entries 1000000] [--batch 1000] [--workdir bench/out]
Prints a Markdown table for docs/benchmarks.md and writes ledger-results.json in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from insitu.core.platform import open_platform  # noqa: E402 - after the path is set
from insitu.db import session_scope  # noqa: E402
from insitu.ledger import events, verifier  # noqa: E402
from insitu.ledger import service as ledger  # noqa: E402
from insitu.ledger.keys import ensure_log_key  # noqa: E402
from insitu.settings import Settings  # noqa: E402

BENCH_EVENT = events.register("bench.event", "an event appended by the benchmark")


def _event(number: int) -> ledger.Event:
    return ledger.Event(
        BENCH_EVENT,
        f"user:{number % 97}",
        f"dataset:{number % 1013}",
        {"job": number, "flavor": "gpu-small", "ok": True},
    )


def _plain_sqlite(path: Path, entries: int, batch: int) -> float:
    """The same columns and rows, inserted with the standard library and nothing else."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE entries (leaf_index INTEGER PRIMARY KEY, recorded_at TEXT, "
        "event_type TEXT, actor TEXT, subject TEXT, payload TEXT)"
    )
    connection.execute("CREATE INDEX ix_type ON entries (event_type)")
    started = time.perf_counter()
    for first in range(0, entries, batch):
        rows = []
        for number in range(first, min(entries, first + batch)):
            item = _event(number)
            rows.append(
                (
                    number,
                    "2026-11-27T00:00:00.000000Z",
                    item.event_type.name,
                    item.actor,
                    item.subject,
                    verifier.canonical_json(dict(item.payload)),
                )
            )
        with connection:
            connection.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)
    elapsed = time.perf_counter() - started
    connection.close()
    return entries / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--proofs", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    home = args.workdir / "ledger-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    baseline_db = args.workdir / "ledger-baseline.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{baseline_db}{suffix}").unlink(missing_ok=True)

    plain_rate = _plain_sqlite(baseline_db, args.entries, args.batch)
    print(f"plain sqlite3: {plain_rate:,.0f} rows/s", file=sys.stderr)

    settings = Settings(home=home, secret_key="bench-" + "x" * 40)
    deployment = open_platform(settings)
    signer = ensure_log_key(settings)
    started = time.perf_counter()
    for first in range(0, args.entries, args.batch):
        with session_scope(deployment.sessions) as session:
            ledger.record_many(
                session, [_event(n) for n in range(first, min(args.entries, first + args.batch))]
            )
        if first and first % 100_000 == 0:
            rate = first / (time.perf_counter() - started)
            print(f"  {first:,} appended ({rate:,.0f}/s)", file=sys.stderr)
    append_seconds = time.perf_counter() - started
    append_rate = args.entries / append_seconds
    print(f"ledger appends: {append_rate:,.0f} events/s", file=sys.stderr)

    with session_scope(deployment.sessions) as session:
        ledger.create_checkpoint(session, signer)
    with session_scope(deployment.sessions) as session:
        report = ledger.verify(session, signer.parsed_key)
    if not report.ok:
        raise SystemExit(f"verify failed on an untouched log: {report.problems}")
    print(f"verify: {report.seconds:.2f} s for {report.entries:,} entries", file=sys.stderr)

    rng = random.Random(7)
    size = args.entries
    inclusion: list[float] = []
    consistency: list[float] = []
    with session_scope(deployment.sessions) as session:
        for _ in range(args.proofs):
            index = rng.randrange(size)
            began = time.perf_counter()
            ledger.inclusion_proof(session, index, size)
            inclusion.append(time.perf_counter() - began)
            old = rng.randrange(1, size)
            began = time.perf_counter()
            ledger.consistency_proof(session, old, size)
            consistency.append(time.perf_counter() - began)
    deployment.close()

    def ms(values: list[float], q: float) -> float:
        return round(1000 * statistics.quantiles(values, n=100)[int(q) - 1], 3)

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
        "entries": args.entries,
        "batch": args.batch,
        "plain_sqlite_rows_per_s": round(plain_rate),
        "ledger_appends_per_s": round(append_rate),
        "append_seconds": round(append_seconds, 1),
        "verify_seconds": round(report.seconds, 2),
        "inclusion_ms_median": ms(inclusion, 50),
        "inclusion_ms_p99": ms(inclusion, 99),
        "consistency_ms_median": ms(consistency, 50),
        "consistency_ms_p99": ms(consistency, 99),
    }
    (args.workdir / "ledger-results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print()
    print("| measure | figure | target |")
    print("|---|---|---|")
    print(f"| plain `sqlite3` inserts, same rows | {plain_rate:,.0f} rows/s | (baseline) |")
    print(f"| ledger appends, batches of {args.batch} | {append_rate:,.0f} events/s | ≥ 5,000/s |")
    print(f"| `verify`, {args.entries:,} entries | {report.seconds:.2f} s | < 30 s |")
    print(
        f"| inclusion proof at {size:,} | median {results['inclusion_ms_median']} ms, "
        f"p99 {results['inclusion_ms_p99']} ms | < 5 ms |"
    )
    print(
        f"| consistency proof at {size:,} | median {results['consistency_ms_median']} ms, "
        f"p99 {results['consistency_ms_p99']} ms | < 5 ms |"
    )


if __name__ == "__main__":
    main()

"""Release benchmark: how long the automatic checks take on a typical job's results, against
copying the same files (the baseline: what any release costs at least).

In one run, on a fresh INSITU_HOME (embedded SQLite, local blob store):
- setup: ``--slices`` synthetic 512x512 CT instances (``generate_corpus``) ingested and
  released as a real-tier dataset; a tool that declares its outputs; a results folder like a
  classifier's: metrics.json, ``--plots`` colour PNG plots, a per-fold CSV, a float32 feature
  matrix (.npz) and ``--model-mb`` MB of model weights;
- baseline: ``cp -r`` of the results folder, then ``sync``;
- first request: the scheduler's ``collect_results`` for a job on the dataset, which also
  fingerprints every instance of the dataset once (decoding each frame);
- later requests: the same results from ``--repeat`` more jobs (fingerprints cached): the
  steady-state cost of the checks, which run in their own resource-limited process.

Usage: python bench/release_bench.py [--slices 400] [--model-mb 100] [--repeat 3]
Prints a Markdown table for docs/benchmarks.md and writes release-results.json in the workdir.
"""

from __future__ import annotations

import argparse
import io
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

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from insitu.access import service as access  # noqa: E402 - after the path is set
from insitu.access.models import Role  # noqa: E402
from insitu.catalog.service import SelectionCriteria  # noqa: E402
from insitu.core.platform import Platform, open_platform  # noqa: E402
from insitu.datasets import service as datasets  # noqa: E402
from insitu.datasets.models import Tier  # noqa: E402
from insitu.db import session_scope  # noqa: E402
from insitu.ingest import service as ingest  # noqa: E402
from insitu.ingest.corpus import generate_corpus  # noqa: E402
from insitu.ingest.deid.table import Options  # noqa: E402
from insitu.ingest.sources import iter_sources  # noqa: E402
from insitu.jobs import scheduler  # noqa: E402
from insitu.jobs import service as jobs  # noqa: E402
from insitu.jobs.models import Job, JobState  # noqa: E402
from insitu.ledger import service as ledger  # noqa: E402
from insitu.releases.models import ReleaseRequest  # noqa: E402
from insitu.settings import Settings  # noqa: E402
from insitu.tools import service as tools  # noqa: E402
from insitu.tools.environment import build_settings  # noqa: E402
from insitu.tools.manifest import pack_folder  # noqa: E402

MANIFEST = """name = "classifier"
version = "1.0.0"
summary = "A classifier's outputs, for the release benchmark"
license = "Apache-2.0"
kind = "batch"
command = ["/opt/tool/run"]
readme = "README.md"

[resources]
min_flavor = "no-gpu"
gpu = false

[[outputs]]
pattern = "*"
type = "application/octet-stream"

[runtime]
type = "oci"
image = "registry.example.org/bench/classifier@sha256:{digest}"
"""


def _results(folder: Path, plots: int, model_mb: int) -> int:
    from PIL import Image

    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"auc": 0.83, "folds": 5}))
    for number in range(plots):
        canvas = np.full((480, 640, 3), 255, dtype=np.uint8)
        canvas[rng.integers(0, 480, 5000), rng.integers(0, 640, 5000)] = (31, 119, 180)
        Image.fromarray(canvas).save(folder / f"plot-{number:02d}.png")
    rows = "".join(f"{fold},{rng.random():.4f},{rng.random():.4f}\n" for fold in range(1000))
    (folder / "folds.csv").write_text("fold,auc,accuracy\n" + rows)
    buffer = io.BytesIO()
    np.savez(buffer, features=rng.random((1000, 2500), dtype=np.float32))
    (folder / "features.npz").write_bytes(buffer.getvalue())
    (folder / "model.bin").write_bytes(rng.bytes(model_mb * 1024 * 1024))
    return sum(p.stat().st_size for p in folder.iterdir())


def _setup(platform: Platform, work: Path, slices: int) -> tuple[int, int, int]:
    corpus = generate_corpus(work / "corpus", subjects=max(1, slices // 100),
                             ct_slices=min(slices, 100), mr_slices=0)  # fmt: skip
    ingest.ingest(platform, iter_sources([corpus.root]), site="BENCH", options=Options.parse(""))
    with session_scope(platform.sessions) as session:
        rita = access.create_user(session, "rita", Role.researcher)
        stan = access.create_user(session, "stan", Role.steward)
        mia = access.create_user(session, "mia", Role.maintainer)
        dataset = datasets.create_dataset(
            session, "lung", datasets.DatasetMetadata(title="Lung", tier=Tier.real), stan.id,
            criteria=SelectionCriteria(),
        )  # fmt: skip
        datasets.release(session, dataset, stan.id, platform.publication)
        ids = (rita.id, dataset.id)
        maintainer = access.Principal(mia.id, "mia", Role.maintainer)
    bundle = work / "tool"
    bundle.mkdir()
    (bundle / "insitu-tool.toml").write_text(MANIFEST.format(digest="b" * 64))
    (bundle / "README.md").write_text("# bench\n")
    with session_scope(platform.sessions) as session:
        version = tools.publish(session, platform.store, build_settings(platform.settings),
                                pack_folder(bundle), maintainer).version  # fmt: skip
        return ids[0], ids[1], version.id


def _job(platform: Platform, user_id: int, dataset_id: int, version_id: int,
         results: Path) -> int:  # fmt: skip
    with session_scope(platform.sessions) as session:
        job = Job(user_id=user_id, tool_version_id=version_id, dataset_ids=[dataset_id],
                  flavor="no-gpu", command=["run"], state=JobState.succeeded)  # fmt: skip
        session.add(job)
        session.flush()
        ledger.record(session, jobs.JOB_ENDED, actor=ledger.HOST_ACTOR, subject=f"job:{job.id}")
        job_id = job.id
    shutil.copytree(results, platform.settings.resolved_jobs_root / str(job_id) / "results")
    subprocess.run(["sync"], check=True)
    return job_id


def _collect(platform: Platform, job_id: int) -> tuple[float, str]:
    started = time.perf_counter()
    (request_id,) = scheduler.collect_results(platform, [job_id])
    elapsed = time.perf_counter() - started
    with session_scope(platform.sessions) as session:
        request = session.get(ReleaseRequest, request_id)
        assert request is not None  # noqa: S101 - a request was just made
        return elapsed, request.state.value


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=400)
    parser.add_argument("--plots", type=int, default=20)
    parser.add_argument("--model-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="insitu-release-bench-"))
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    platform = open_platform(Settings(home=home, secret_key="b" * 40, ingest_workers=1))
    user_id, dataset_id, version_id = _setup(platform, work, args.slices)
    results = work / "results"
    size = _results(results, args.plots, args.model_mb)
    copies = []
    for number in range(args.repeat):
        target = work / f"copy-{number}"
        started = time.perf_counter()
        subprocess.run(["cp", "-r", str(results), str(target)], check=True)
        subprocess.run(["sync"], check=True)
        copies.append(time.perf_counter() - started)
        shutil.rmtree(target)
    first, state = _collect(platform, _job(platform, user_id, dataset_id, version_id, results))
    later = [
        _collect(platform, _job(platform, user_id, dataset_id, version_id, results))[0]
        for _ in range(args.repeat)
    ]
    platform.close()
    copy, steady = min(copies), statistics.median(later)
    figures = {
        "machine": f"{host.machine()}, {os.cpu_count()} CPUs, Linux {host.release()}",
        "results_bytes": size,
        "files": len(list(results.iterdir())),
        "slices": args.slices,
        "cp_r_sync_s": round(copy, 3),
        "first_request_s": round(first, 3),
        "later_requests_s": [round(t, 3) for t in later],
        "state": state,
    }
    (work / "release-results.json").write_text(json.dumps(figures, indent=2))
    megabytes = size / 1e6
    print(f"results: {figures['files']} files, {megabytes:.1f} MB; dataset: {args.slices} "
          f"CT slices 512x512; {figures['machine']}")  # fmt: skip
    print("| step | time (s) | MB/s | ratio to `cp -r` + `sync` |")
    print("|---|---|---|---|")
    print(
        f"| `cp -r` + `sync` (best of {args.repeat}) | {copy:.2f} | {megabytes / copy:.0f} | 1.00 |"
    )
    print(f"| first request (fingerprints {args.slices} slices once) | {first:.2f} | "
          f"{megabytes / first:.0f} | {first / copy:.1f} |")  # fmt: skip
    print(f"| later requests (median of {args.repeat}) | {steady:.2f} | "
          f"{megabytes / steady:.0f} | {steady / copy:.1f} |")  # fmt: skip
    print(f"request state: {state} (real data: one reviewer)")


if __name__ == "__main__":
    main()

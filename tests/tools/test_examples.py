"""The two example tools, published, verified and run as a job runs them: in a bubblewrap
sandbox with the dataset view read-only at /data, the environment read-only at /opt/tool,
/results writable, no network. Their wheels come from .wheelhouse (scripts/bootstrap.sh)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from insitu.access import service as access
from insitu.access.models import Role
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import Platform, open_platform
from insitu.datasets import service as datasets
from insitu.datasets.models import Tier
from insitu.datasets.view import ensure_view
from insitu.db import session_scope
from insitu.jobs import scheduler
from insitu.jobs import service as jobs
from insitu.jobs.models import Job, JobState
from insitu.ledger import service as ledger
from insitu.releases import service as releases
from insitu.releases.models import ReleaseRequest
from insitu.tools import service as tools
from insitu.tools.environment import BWRAP, build_settings
from insitu.tools.manifest import pack_folder
from tests.conftest import make_settings
from tests.datasets.conftest import ingest_clinical_corpus
from tests.tools.sandbox import run_like_a_job

WHEELHOUSE = Path(__file__).resolve().parents[2] / ".wheelhouse"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(BWRAP).exists(), reason="bubblewrap is not installed"),
]


def _run(environment: Path, view: Path, results: Path, command: list[str]) -> str:
    mount = f"/data/{view.name}"
    done = run_like_a_job(
        environment,
        command,
        read_only={mount: view},
        writable={"/results": results},
        env={"INSITU_DATASETS": mount, "INSITU_RESULTS": "/results"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_example_tools_publish_verify_and_run(tmp_path: Path) -> None:
    if not WHEELHOUSE.is_dir():
        pytest.fail(f"{WHEELHOUSE} is missing: ./scripts/bootstrap.sh downloads it")
    (tmp_path / "home").mkdir()
    platform = open_platform(make_settings(tmp_path / "home", tool_wheel_dir=WHEELHOUSE))
    ingest_clinical_corpus(platform, tmp_path, subjects=4, ct_slices=3)
    with session_scope(platform.sessions) as session:
        maintainer = access.create_user(session, "mia", Role.maintainer)
        steward = access.create_user(session, "stan", Role.steward)
        mia = access.Principal(maintainer.id, "mia", Role.maintainer)
        stan = access.Principal(steward.id, "stan", Role.steward)
        dataset = datasets.create_dataset(
            session,
            "sample",
            datasets.DatasetMetadata(title="Sample", tier=Tier.synthetic),
            steward.id,
            criteria=SelectionCriteria(),
        )
        datasets.release(session, dataset, steward.id, platform.publication)
        view = ensure_view(session, platform.store, platform.settings.resolved_views_root, dataset)
    environments = {}
    commands = {}
    for folder in sorted(tools.EXAMPLES.iterdir()):
        with session_scope(platform.sessions) as session:
            published = tools.publish(
                session, platform.store, build_settings(platform.settings), pack_folder(folder), mia
            )
            tools.submit(session, published.version, mia)
            tools.verify(
                session, published.version, stan, "ran on the sample", require_test_run=False
            )
            assert published.environment is not None
            environments[folder.name] = published.environment.path
            commands[folder.name] = list(published.version.command)
    assert sorted(environments) == ["dataset-summary", "radiomics-classifier"]

    results = tmp_path / "summary-results"
    results.mkdir()
    _run(environments["dataset-summary"], view, results, commands["dataset-summary"])
    with (results / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["dataset"], r["modality"], r["series"], r["instances"]) for r in rows] == [
        ("sample-v1", "CT", "4", "12"),
        ("sample-v1", "MR", "4", "4"),
    ]

    results = tmp_path / "radiomics-results"
    results.mkdir()
    _run(environments["radiomics-classifier"], view, results, commands["radiomics-classifier"])
    metrics = json.loads((results / "metrics.json").read_text())
    assert (metrics["label"], metrics["classes"], metrics["samples"]) == ("sex", ["F", "M"], 16)
    assert metrics["subjects"] == 4
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    assert (results / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (results / "model.joblib").stat().st_size > 500
    assert sorted(p.name for p in results.iterdir()) == ["metrics.json", "model.joblib", "roc.png"]
    _released_under_the_policy(platform, results, dataset_name="sample")
    platform.close()


def _released_under_the_policy(platform: Platform, results: Path, dataset_name: str) -> None:
    """The classifier's results, left by a job of Rita's, pass every release check and leave
    at once under the synthetic dataset's automatic policy."""
    with session_scope(platform.sessions) as session:
        rita = access.create_user(session, "rita", Role.researcher)
        version = tools.get_version(session, "radiomics-classifier", "1.0.0")
        dataset = datasets.get_dataset(session, dataset_name)
        assert version is not None
        assert dataset is not None
        job = Job(user_id=rita.id, tool_version_id=version.id, dataset_ids=[dataset.id],
                  flavor="no-gpu", command=list(version.command),
                  state=JobState.succeeded)  # fmt: skip
        session.add(job)
        session.flush()
        ledger.record(session, jobs.JOB_ENDED, actor=ledger.HOST_ACTOR, subject=f"job:{job.id}")
        job_id = job.id
    folder = platform.settings.resolved_jobs_root / str(job_id)
    folder.mkdir(parents=True)
    shutil.copytree(results, folder / "results")
    (request_id,) = scheduler.collect_results(platform, [job_id])
    with session_scope(platform.sessions) as session:
        request = session.get(ReleaseRequest, request_id)
        assert request is not None
        files = {f.path: (f.verdict.value, f.checks) for f in releases.files_of(session, request)}
        assert request.state.value == "approved", files
    assert {path: verdict for path, (verdict, _) in files.items()} == {
        "metrics.json": "pass", "roc.png": "pass", "model.joblib": "pass"}  # fmt: skip

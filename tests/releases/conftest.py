"""A deployment for release tests: a real catalogue of synthetic CT/MR (16x16 frames),
datasets on both tiers, a requester, two stewards and an outsider, and jobs whose /results
the tests fill by hand (the sandbox's part is tested in test_from_jobs.py)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from insitu.access import service as access
from insitu.access.models import Role
from insitu.catalog.models import Instance
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import Platform, open_platform
from insitu.datasets import service as datasets
from insitu.datasets.models import ReviewPolicy, Tier
from insitu.db import session_scope
from insitu.jobs import scheduler
from insitu.jobs import service as jobs
from insitu.jobs.models import Job, JobState
from insitu.ledger import service as ledger
from insitu.releases.models import ReleaseRequest
from insitu.tools import service as tools
from insitu.tools.environment import build_settings
from insitu.tools.manifest import pack_folder
from tests.conftest import make_settings
from tests.datasets.conftest import ingest_clinical_corpus
from tests.tools.bundles import IMAGE, manifest_text

CLASSIFIER_OUTPUTS = """[[outputs]]
pattern = "metrics.json"
type = "application/json"

[[outputs]]
pattern = "roc.png"
type = "image/png"

[[outputs]]
pattern = "model.joblib"
type = "application/octet-stream"
"""


@dataclass
class Desk:
    """The deployment, its people and what the tests need to write results."""

    platform: Platform
    rita: access.Principal
    stan: access.Principal
    sue: access.Principal
    otto: access.Principal
    tool_version_id: int

    def job(self, files: dict[str, bytes], dataset_names: tuple[str, ...] = ("lung",),
            user: access.Principal | None = None) -> int:  # fmt: skip
        """An ended job of ``user`` (Rita) that left ``files`` in /results."""
        owner = user or self.rita
        with session_scope(self.platform.sessions) as session:
            ids = []
            for name in dataset_names:
                dataset = datasets.get_dataset(session, name)
                assert dataset is not None
                ids.append(dataset.id)
            job = Job(user_id=owner.user_id, tool_version_id=self.tool_version_id,
                      dataset_ids=ids, flavor="no-gpu", command=["true"],
                      state=JobState.succeeded)  # fmt: skip
            session.add(job)
            session.flush()
            ledger.record(session, jobs.JOB_ENDED, actor=ledger.HOST_ACTOR,
                          subject=f"job:{job.id}")  # fmt: skip
            job_id = job.id
        results = self.results(job_id)
        results.mkdir(parents=True)
        for name, data in files.items():
            (results / name).parent.mkdir(parents=True, exist_ok=True)
            (results / name).write_bytes(data)
        return job_id

    def results(self, job_id: int) -> Path:
        """The job's /results on the host."""
        return self.platform.settings.resolved_jobs_root / str(job_id) / "results"

    def collect(self, job_id: int) -> int:
        """The job's release request (made as the scheduler makes it); its id."""
        made = scheduler.collect_results(self.platform, [job_id])
        assert len(made) == 1, "no release request was made"
        return made[0]

    def request(self, request_id: int) -> dict[str, Any]:
        """The request as the API shows it."""
        from insitu.releases.api import info

        with session_scope(self.platform.sessions) as session:
            request = session.get(ReleaseRequest, request_id)
            assert request is not None
            return info(session, request)

    def instance(self, modality: str = "CT") -> bytes:
        """The stored bytes of one instance of the lung dataset."""
        with session_scope(self.platform.sessions) as session:
            digests = session.scalars(select(Instance.blob_digest)).all()
        for digest in digests:
            data = self.platform.store.get(digest)
            if pydicom.dcmread(io.BytesIO(data)).Modality == modality:
                return data
        raise AssertionError(f"no {modality} instance")

    def pixels(self, modality: str = "CT") -> np.ndarray[Any, Any]:
        """The stored values of one instance's frame."""
        array: np.ndarray[Any, Any] = pydicom.dcmread(
            io.BytesIO(self.instance(modality))
        ).pixel_array
        return array


def verdicts(request: dict[str, Any]) -> dict[str, str]:
    """Each file's verdict by path."""
    return {f["path"]: f["verdict"] for f in request["files"]}


def refused_by(request: dict[str, Any], path: str) -> set[str]:
    """The checks that refused one file."""
    item = next(f for f in request["files"] if f["path"] == path)
    return {c["check"] for c in item["checks"] if c["verdict"] == "refuse"}


def _classifier(platform: Platform, maintainer: access.Principal, folder: Path) -> int:
    folder.mkdir()
    text = manifest_text("classifier", "1.0.0", f'type = "oci"\nimage = "{IMAGE}"')
    start = text.index("[[outputs]]")
    text = text[:start] + CLASSIFIER_OUTPUTS + text[text.index("[runtime]") :]
    (folder / "insitu-tool.toml").write_text(text)
    (folder / "README.md").write_text("# A classifier\n")
    with session_scope(platform.sessions) as session:
        published = tools.publish(session, platform.store, build_settings(platform.settings),
                                  pack_folder(folder), maintainer)  # fmt: skip
        return published.version.id


DeskFactory = Callable[..., Desk]


@pytest.fixture
def make_desk(tmp_path: Path, database_url: str) -> Iterator[DeskFactory]:
    opened: list[Platform] = []

    def make(**overrides: object) -> Desk:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        platform = open_platform(make_settings(home, database_url=database_url, **overrides))
        opened.append(platform)
        ingest_clinical_corpus(platform, tmp_path, subjects=2, ct_slices=2)
        with session_scope(platform.sessions) as session:
            people = {}
            for name, role in (("rita", Role.researcher), ("stan", Role.steward),
                               ("sue", Role.steward), ("otto", Role.steward),
                               ("mia", Role.maintainer)):  # fmt: skip
                user = access.create_user(session, name, role)
                people[name] = access.Principal(user.id, name, role)
            stan, sue = people["stan"].user_id, people["sue"].user_id
            for name, tier in (("lung", Tier.real), ("sample", Tier.synthetic),
                               ("pair", Tier.real)):  # fmt: skip
                dataset = datasets.create_dataset(
                    session, name, datasets.DatasetMetadata(title=name, tier=tier), stan,
                    criteria=SelectionCriteria(),
                )  # fmt: skip
                datasets.add_steward(session, dataset, sue, stan)
                datasets.release(session, dataset, stan, platform.publication)
                if name == "pair":
                    datasets.set_review_policy(session, dataset, ReviewPolicy.two_reviewers,
                                               stan)  # fmt: skip
        version_id = _classifier(platform, people["mia"], tmp_path / "classifier")
        return Desk(platform, people["rita"], people["stan"], people["sue"], people["otto"],
                    version_id)  # fmt: skip

    yield make
    for platform in opened:
        platform.close()


@pytest.fixture
def desk(make_desk: DeskFactory) -> Desk:
    return make_desk()

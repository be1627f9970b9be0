"""A deployment for job tests: users, datasets in every state, tools, the sandbox's own paths.

INSITU_HOME lies under a folder the job user may traverse (pytest's own temp folders are
private to root), since the sandbox starts as that unprivileged user."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from insitu.access import service as access
from insitu.access.models import Role
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import Platform, open_platform
from insitu.datasets import service as datasets
from insitu.datasets.models import Tier
from insitu.db import session_scope
from insitu.jobs.backends.local import LocalExecutor
from insitu.jobs.sandbox import BWRAP
from insitu.tools import service as tools
from insitu.tools.environment import build_settings
from insitu.tools.manifest import pack_folder
from tests.conftest import make_settings
from tests.datasets.conftest import ingest_clinical_corpus
from tests.k8s_fake import FakeCluster, fake_kubernetes
from tests.servers import SlurmCluster, slurm_cluster
from tests.tools.bundles import manifest_text, oci_bundle, write_bundle
from tests.tools.wheels import make_wheel


def submit_job(
    site: Site,
    command: list[str] | None,
    flavor: str = "no-gpu",
    sample: int | None = None,
) -> int:
    """Rita's job of hello@1.0.0 on lung, queued; its id."""
    from insitu.jobs import service as jobs

    with session_scope(site.platform.sessions) as session:
        submission = jobs.submit(
            session,
            site.platform.settings,
            site.rita,
            tool_ref="hello@1.0.0",
            dataset_names=["lung"],
            flavor=flavor,
            command=command,
            sample=sample,
        )
        assert submission.job is not None, submission.preflight.problems
        return submission.job.id


@pytest.fixture
def kubernetes_fake() -> Iterator[FakeCluster]:
    """The fake Kubernetes API server (schemas checked, pods run in the local sandbox)."""
    with fake_kubernetes() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A real one-node Slurm cluster, one per test session (tests using it share an xdist
    group)."""
    with slurm_cluster() as cluster:
        yield cluster


needs_sandbox = pytest.mark.skipif(not Path(BWRAP).exists(), reason="bubblewrap is missing")


@dataclass
class Site:
    platform: Platform
    rita: access.Principal
    stan: access.Principal
    mia: access.Principal
    executor: LocalExecutor

    def names(self) -> dict[int, str]:
        return {p.user_id: p.name for p in (self.rita, self.stan, self.mia)}


@pytest.fixture(scope="session")
def tools_root() -> Iterator[Path]:
    """Tool environments shared by the job tests: the same bundles, built once per worker."""
    folder = Path(tempfile.mkdtemp(prefix="insitu-job-tools-", dir="/var/tmp"))
    folder.chmod(0o711)
    yield folder / "tools"
    _remove(folder)


def _remove(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="insitu-jobs-", dir="/var/tmp"))
    folder.chmod(0o711)
    yield folder
    _remove(folder)


def _tool(site: Site, folder: Path, requirement: str, version: str, verified: bool,
          gpu: bool = False) -> None:  # fmt: skip
    write_bundle(folder, requirement, name="hello", version=version)
    if gpu:
        text = manifest_text("hello", version).replace(
            'min_flavor = "no-gpu"\ngpu = false', 'min_flavor = "small-gpu"\ngpu = true'
        )
        (folder / "insitu-tool.toml").write_text(text)
    (folder / "main.py").write_text(
        "import os, sys, hello_tool\n"
        "print(hello_tool.greet())\n"
        "open('/results/out.txt', 'w').write(os.environ['INSITU_DATASETS'])\n"
    )
    with session_scope(site.platform.sessions) as session:
        published = tools.publish(
            session,
            site.platform.store,
            build_settings(site.platform.settings),
            pack_folder(folder),
            site.mia,
        )
        if verified:
            tools.submit(session, published.version, site.mia)
            tools.verify(session, published.version, site.stan, require_test_run=False)


@pytest.fixture
def site(shared_tmp: Path, database_url: str, tools_root: Path) -> Iterator[Site]:
    home = shared_tmp / "home"
    home.mkdir()
    wheels = shared_tmp / "wheels"
    requirement = make_wheel(wheels, "hello_tool", "1.0", "def greet():\n    return 'hello'\n")
    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{home / 'insitu.db'}"
    platform = open_platform(
        make_settings(home, database_url=url, tool_wheel_dir=wheels, tools_root=tools_root)
    )
    home.chmod(0o711)
    ingest_clinical_corpus(platform, shared_tmp, subjects=2, ct_slices=1)
    with session_scope(platform.sessions) as session:
        people = {}
        for name, role in (("rita", Role.researcher), ("stan", Role.steward),
                           ("mia", Role.maintainer)):  # fmt: skip
            user = access.create_user(session, name, role)
            people[name] = access.Principal(user.id, name, role)
    site = Site(platform, people["rita"], people["stan"], people["mia"], LocalExecutor())
    stan, rita = site.stan.user_id, site.rita.user_id
    with session_scope(platform.sessions) as session:
        for name, tier, state in (
            ("lung", Tier.real, "released"),
            ("sample", Tier.synthetic, "released"),
            ("noterms", Tier.real, "released"),
            ("nogrant", Tier.real, "released"),
            ("draft-ds", Tier.real, "draft"),
        ):
            dataset = datasets.create_dataset(
                session,
                name,
                datasets.DatasetMetadata(title=name, tier=tier, terms="be nice"),
                stan,
                criteria=SelectionCriteria(),
            )
            if state == "released":
                datasets.release(session, dataset, stan, platform.publication)
            if name != "nogrant":
                datasets.grant(session, dataset, stan, user_id=rita)
            if name not in ("noterms", "nogrant", "draft-ds"):
                datasets.accept_terms(session, dataset, rita)
    # The fixtures' tools stand for tools verified earlier: their test runs are not the subject.
    _tool(site, shared_tmp / "t1", requirement, "1.0.0", verified=True)
    _tool(site, shared_tmp / "t2", requirement, "2.0.0", verified=False)
    _tool(site, shared_tmp / "t3", requirement, "3.0.0", verified=True, gpu=True)
    with session_scope(platform.sessions) as session:  # a tool that runs an OCI image
        image = tools.publish(
            session, platform.store, build_settings(platform.settings), oci_bundle("img"),
            site.mia,
        ).version  # fmt: skip
        tools.submit(session, image, site.mia)
        tools.verify(session, image, site.stan, require_test_run=False)
    yield site
    platform.close()

"""Tools end to end on a real database and a real bubblewrap sandbox: publish (building the
environment from a local wheel folder), review, verify, deprecate, reject; bad input stores
nothing; environments are built once; ``check_runnable``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from insitu.access import service as access
from insitu.access.models import Role
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import Platform, open_platform
from insitu.datasets import service as datasets
from insitu.datasets.models import Tier
from insitu.db import session_scope
from insitu.ingest import service as ingest
from insitu.ingest.deid.table import Options
from insitu.ingest.sources import SourceItem
from insitu.ledger.models import LedgerEntry
from insitu.tools import service as tools
from insitu.tools.environment import BWRAP, build_settings
from insitu.tools.manifest import pack_folder
from insitu.tools.models import Tool, ToolState
from insitu.web.app import create_app
from tests.conftest import make_settings
from tests.factories import encode, minimal_dataset, user_token
from tests.tools.bundles import record_passing_run, write_bundle
from tests.tools.sandbox import run_like_a_job
from tests.tools.wheels import make_sdist, make_wheel

pytestmark = pytest.mark.skipif(not Path(BWRAP).exists(), reason="bubblewrap is not installed")


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    make_wheel(folder, "hello_tool", "1.0", "def greet():\n    return 'hi from /opt/tool'\n")
    return folder


@pytest.fixture
def tool_platform(tmp_path: Path, database_url: str, wheels: Path) -> Iterator[Platform]:
    (tmp_path / "home").mkdir(exist_ok=True)
    platform = open_platform(
        make_settings(tmp_path / "home", database_url=database_url, tool_wheel_dir=wheels)
    )
    yield platform
    platform.close()


@pytest.fixture
def client(tool_platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(tool_platform)) as test_client:
        yield test_client


def _auth(platform: Platform, name: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_token(platform, name, role)}"}


def _requirement(wheels: Path) -> str:
    return make_wheel(wheels, "hello_tool", "1.0", "def greet():\n    return 'hi from /opt/tool'\n")


def _publish(
    client: TestClient, headers: dict[str, str], folder: Path, sha: str | None = None
) -> tuple[int, dict[str, object]]:
    archive = pack_folder(folder)
    extra = {"X-Content-SHA256": sha} if sha else {}
    answer = client.post(
        "/api/v1/tools", content=archive, headers={**headers, **extra, "Content-Type": "x/tar"}
    )
    return answer.status_code, answer.json()


def test_publish_review_verify_deprecate(
    tool_platform: Platform, client: TestClient, wheels: Path, tmp_path: Path
) -> None:
    mia = _auth(tool_platform, "mia", "maintainer")
    steward = _auth(tool_platform, "stan", "steward")
    researcher = _auth(tool_platform, "rita", "researcher")
    requirement = _requirement(wheels)
    code, info = _publish(client, mia, write_bundle(tmp_path / "v1", requirement))
    assert code == 201, info
    assert (info["state"], info["environment_built"]) == ("draft", True)
    # A draft is for its maintainer and the reviewers only.
    assert client.get("/api/v1/tools/summary", headers=researcher).status_code == 403
    assert client.get("/api/v1/tools", headers=researcher).json() == []
    assert client.post("/api/v1/tools/summary/1.0.0/submit", headers=mia).status_code == 200
    rejected = client.post(
        "/api/v1/tools/summary/1.0.0/reject", json={"note": "say what it writes"}, headers=steward
    )
    assert rejected.json()["state"] == "draft"
    empty = client.post("/api/v1/tools/summary/1.0.0/reject", json={}, headers=steward)
    assert empty.status_code == 409  # back in draft: nothing to review
    client.post("/api/v1/tools/summary/1.0.0/submit", headers=mia)
    answer = client.post("/api/v1/tools/summary/1.0.0/reject", json={}, headers=steward)
    assert answer.status_code == 422
    assert "needs a note" in answer.json()["detail"]
    untested = client.post("/api/v1/tools/summary/1.0.0/verify", json={}, headers=steward)
    assert untested.status_code == 409
    assert "no passing test run" in untested.json()["detail"]
    record_passing_run(tool_platform, "summary", "1.0.0")
    verified = client.post(
        "/api/v1/tools/summary/1.0.0/verify", json={"note": "ran it"}, headers=steward
    )
    assert verified.json()["state"] == "verified"
    shown = client.get("/api/v1/tools/summary", headers=researcher).json()
    assert (shown["version"], shown["jobs"], shown["license"]) == ("1.0.0", 1, "Apache-2.0")
    assert shown["outputs"] == [{"pattern": "summary.csv", "type": "text/csv"}]
    assert "<h2>Summary</h2>" in shown["readme_html"]  # under the page's own h1
    # Version 2, then version 1 retired in its favour.
    code, info = _publish(client, mia, write_bundle(tmp_path / "v2", requirement, version="2.0.0"))
    assert (code, info["environment_built"]) == (201, True)
    retire = client.post(
        "/api/v1/tools/summary/1.0.0/deprecate",
        json={"reason": "counts MR twice", "successor": "summary@9.9"},
        headers=mia,
    )
    assert retire.status_code == 422
    retire = client.post(
        "/api/v1/tools/summary/1.0.0/deprecate",
        json={"reason": "counts MR twice", "successor": "summary@2.0.0"},
        headers=mia,
    )
    assert retire.json()["state"] == "deprecated"
    # A researcher sees the deprecated version, with its successor; not the draft v2.
    listed = client.get("/api/v1/tools", headers=researcher).json()
    assert [(t["version"], t["state"]) for t in listed] == [("1.0.0", "deprecated")]
    with session_scope(tool_platform.sessions) as session:
        types = list(
            session.scalars(
                select(LedgerEntry.event_type).where(LedgerEntry.subject.like("tool:summary@%"))
            )
        )
    assert types.count("tool.published") == 2
    assert types.count("tool.environment_built") == 2
    assert {"tool.submitted", "tool.rejected", "tool.verified", "tool.deprecated"} <= set(types)


def test_no_one_verifies_their_own_tool(
    tool_platform: Platform, client: TestClient, wheels: Path, tmp_path: Path
) -> None:
    admin = _auth(tool_platform, "ada", "admin")
    mia = _auth(tool_platform, "mia", "maintainer")
    code, _ = _publish(client, admin, write_bundle(tmp_path / "a", _requirement(wheels)))
    assert code == 201
    client.post("/api/v1/tools/summary/1.0.0/submit", headers=admin)
    own = client.post("/api/v1/tools/summary/1.0.0/verify", json={}, headers=admin)
    assert own.status_code == 403
    assert "another admin or steward must review it" in own.json()["detail"]
    assert (
        client.post("/api/v1/tools/summary/1.0.0/verify", json={}, headers=mia).status_code == 403
    )
    # The maintainer's own tool, under another's name: refused before anything is built.
    code, info = _publish(
        client, mia, write_bundle(tmp_path / "b", _requirement(wheels), version="2.0.0")
    )
    assert code == 403
    assert "belongs to another maintainer" in str(info["detail"])


def test_bad_input_stores_nothing(
    tool_platform: Platform, client: TestClient, wheels: Path, tmp_path: Path
) -> None:
    mia = _auth(tool_platform, "mia", "maintainer")
    good = write_bundle(tmp_path / "good", _requirement(wheels))
    assert _publish(client, mia, good)[0] == 201
    blobs_before = sorted(tool_platform.store.digests())
    tools_root = tool_platform.settings.resolved_tools_root
    envs_before = sorted(p.name for p in tools_root.iterdir())
    cases: list[tuple[Path, str | None, int, str]] = [
        (good, None, 409, "exists and versions never change"),
        (write_bundle(tmp_path / "sha", "x==1 --hash=sha256:" + "0" * 64, version="2.0.0"),
         "f" * 64, 422, "not the declared"),
        (write_bundle(tmp_path / "sdist", make_sdist(wheels, "srconly", "2.0"), version="3.0.0"),
         None, 422, "only wheels are used"),
        (write_bundle(tmp_path / "dep", make_wheel(wheels, "needy", "1.0", "", requires="absent"),
                      version="4.0.0"), None, 422, "absent"),
        (write_bundle(tmp_path / "unpinned", "hello_tool>=1", version="5.0.0"), None, 422,
         "not pinned"),
    ]  # fmt: skip
    for folder, sha, expected, message in cases:
        code, info = _publish(client, mia, folder, sha)
        assert code == expected, (folder.name, info)
        assert message in str(info["detail"]), (folder.name, info)
    assert sorted(tool_platform.store.digests()) == blobs_before
    assert sorted(p.name for p in tools_root.iterdir()) == envs_before
    with session_scope(tool_platform.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Tool)) == 1
        versions = tools.list_versions(session, access.Principal(0, "x", Role.admin))
        assert [v.version for _, v in versions] == ["1.0.0"]


def test_readme_is_rendered_safely(
    tool_platform: Platform, client: TestClient, wheels: Path, tmp_path: Path
) -> None:
    mia = _auth(tool_platform, "mia", "maintainer")
    readme = (
        "# Tool\\n\\n<script>alert('x')</script>\\n\\n[click](javascript:alert(1)) "
        "<img src=x onerror=alert(1)>\\n"
    )
    folder = write_bundle(tmp_path / "r", _requirement(wheels), readme=readme)
    assert _publish(client, mia, folder)[0] == 201
    html = client.get("/api/v1/tools/summary", headers=mia).json()["readme_html"]
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert "javascript:" not in html.replace("[click](javascript:", "")
    assert 'href="javascript' not in html
    assert "<img" not in html


def test_the_environment_is_built_once_and_runs_read_only_at_opt_tool(
    tool_platform: Platform, client: TestClient, wheels: Path, tmp_path: Path
) -> None:
    mia = _auth(tool_platform, "mia", "maintainer")
    assert _publish(client, mia, write_bundle(tmp_path / "b", _requirement(wheels)))[0] == 201
    build = build_settings(tool_platform.settings)
    with session_scope(tool_platform.sessions) as session:
        version = tools.get_version(session, "summary", "1.0.0")
        assert version is not None
        again = tools.environment_of(session, tool_platform.store, build, version)
        assert not again.built  # reused: no build
        path = again.path
    # A new host (the folder is gone): rebuilt from the stored bundle.
    for folder in [path, *path.rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o755)
    shutil.rmtree(path)
    with session_scope(tool_platform.sessions) as session:
        version = tools.get_version(session, "summary", "1.0.0")
        assert version is not None
        rebuilt = tools.environment_of(session, tool_platform.store, build, version)
    assert rebuilt.built
    assert (path / "BUILD.txt").is_file()
    assert not (path / "venv").stat().st_mode & 0o222  # read-only
    # What a job does: mount it read-only at /opt/tool and run the tool's command.
    done = run_like_a_job(path, ["/opt/tool/venv/bin/python", "/opt/tool/app/main.py"])
    assert (done.returncode, done.stdout.strip()) == (0, "hi from /opt/tool"), done.stderr


def _dataset(platform: Platform, steward_id: int, name: str, tier: Tier) -> None:
    with session_scope(platform.sessions) as session:
        dataset = datasets.create_dataset(
            session,
            name,
            datasets.DatasetMetadata(title=name, tier=tier),
            steward_id,
            criteria=SelectionCriteria(),
        )
        datasets.release(session, dataset, steward_id, platform.publication)


def test_check_runnable_is_the_tool_side_of_the_decision(
    tool_platform: Platform, client: TestClient, wheels: Path, tmp_path: Path
) -> None:
    mia = _auth(tool_platform, "mia", "maintainer")
    steward = _auth(tool_platform, "stan", "steward")
    _auth(tool_platform, "rita", "researcher")
    ingest.ingest(
        tool_platform,
        [SourceItem("one.dcm", data=encode(minimal_dataset(), pixels=bytes(64)))],
        site="SITE",
        options=Options.parse(""),
    )
    requirement = _requirement(wheels)
    _publish(client, mia, write_bundle(tmp_path / "v1", requirement))
    _publish(client, mia, write_bundle(tmp_path / "v2", requirement, version="2.0.0"))
    with session_scope(tool_platform.sessions) as session:
        stan = access.get_user(session, "stan")
        people = {n: access.get_user(session, n) for n in ("mia", "rita")}
        assert stan is not None
        stan_id = stan.id
    _dataset(tool_platform, stan_id, "real-ct", Tier.real)
    _dataset(tool_platform, stan_id, "synthetic-ct", Tier.synthetic)

    def decide(version: str, user: str, names: list[str]) -> tools.RunDecision:
        with session_scope(tool_platform.sessions) as session:
            tool_version = tools.get_version(session, "summary", version)
            assert tool_version is not None
            targets = [datasets.get_dataset(session, n) for n in names]
            person = people[user]
            assert person is not None
            return tools.check_runnable(session, tool_version, [t for t in targets if t], person.id)

    # A draft: its maintainer may test it on synthetic data only.
    assert decide("1.0.0", "mia", ["synthetic-ct"]).allowed
    refused = decide("1.0.0", "mia", ["synthetic-ct", "real-ct"])
    assert not refused.allowed
    assert refused.reasons == [
        (
            "summary@1.0.0 is draft, not verified: only verified tools run on the real-tier "
            "dataset real-ct v1"
        )
    ]
    other = decide("1.0.0", "rita", ["synthetic-ct"])
    assert other.reasons == [
        (
            "summary@1.0.0 is not verified yet: only its maintainer may test it on the "
            "synthetic dataset synthetic-ct v1"
        )
    ]
    for version in ("1.0.0", "2.0.0"):
        client.post(f"/api/v1/tools/summary/{version}/submit", headers=mia)
        record_passing_run(tool_platform, "summary", version)
        client.post(f"/api/v1/tools/summary/{version}/verify", json={}, headers=steward)
    assert decide("1.0.0", "rita", ["synthetic-ct", "real-ct"]).allowed
    client.post(
        "/api/v1/tools/summary/1.0.0/deprecate",
        json={"reason": "wrong counts", "successor": "summary@2.0.0"},
        headers=mia,
    )
    deprecated = decide("1.0.0", "rita", ["real-ct", "synthetic-ct"])
    assert deprecated.reasons == [
        (
            "summary@1.0.0 is deprecated (wrong counts); use summary@2.0.0 on the real-tier "
            "dataset real-ct v1"
        )
    ]
    # The same through the API, for a steward who may see both datasets.
    answer = client.post(
        "/api/v1/tools/summary/1.0.0/runnable",
        json={"datasets": ["real-ct", "synthetic-ct"]},
        headers=steward,
    ).json()
    assert answer == {"allowed": False, "reasons": deprecated.reasons}
    with session_scope(tool_platform.sessions) as session:
        successor = tools.get_version(session, "summary", "2.0.0")
        assert successor is not None
        assert successor.state == ToolState.verified

"""The access rule: every route declares its permission, and each one refuses the wrong caller."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from insitu.access import service as access
from insitu.access.models import Role
from insitu.access.permissions import iter_api_routes, route_permission
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import Platform
from insitu.datasets import service as datasets
from insitu.db import session_scope
from insitu.ingest import service as ingest
from insitu.ingest.deid.table import Options
from insitu.ingest.sources import SourceItem
from insitu.jobs import service as jobs
from insitu.jobs.models import Job
from insitu.ledger import service as ledger
from insitu.releases import service as releases
from insitu.releases.models import ReleaseFile, ReleaseRequest, ReleaseState, Verdict
from insitu.tools import service as tools
from insitu.tools.environment import build_settings
from insitu.web.app import create_app
from tests.factories import encode, minimal_dataset, user_token
from tests.tools.bundles import oci_bundle
from tests.web.test_dicomweb import DICOMWEB_ROUTES  # the dataset grants decide: tested there

# Every route of the API and who may call it. A new route must be added here (the test below
# fails otherwise), and gets the refusal tests for free.
EXPECTED = {
    ("GET", "/api/v1/health"): ("public",),
    ("GET", "/"): ("public",),
    ("GET", "/login"): ("public",),
    ("POST", "/login"): ("public",),
    ("POST", "/logout"): ("any",),
    ("GET", "/metrics"): ("admin",),
    ("GET", "/api/v1/audit/access-log"): ("admin", "auditor"),
    ("GET", "/api/v1/datasets"): ("any",),
    ("POST", "/api/v1/datasets"): ("steward",),
    ("GET", "/api/v1/datasets/{name}"): ("any",),
    ("PATCH", "/api/v1/datasets/{name}"): ("any",),
    ("POST", "/api/v1/datasets/{name}/stewards"): ("any",),
    ("POST", "/api/v1/datasets/{name}/release"): ("any",),
    ("POST", "/api/v1/datasets/{name}/publish"): ("any",),
    ("POST", "/api/v1/datasets/{name}/invalidate"): ("any",),
    ("POST", "/api/v1/datasets/{name}/new-version"): ("any",),
    ("POST", "/api/v1/datasets/{name}/grants"): ("any",),
    ("DELETE", "/api/v1/datasets/{name}/grants/{grant_id}"): ("any",),
    ("POST", "/api/v1/datasets/{name}/revoke"): ("any",),
    ("POST", "/api/v1/datasets/{name}/terms"): ("any",),
    ("GET", "/api/v1/datasets/{name}/use"): ("any",),
    ("GET", "/api/v1/datasets/{name}/stats"): ("any",),
    ("POST", "/api/v1/datasets/{name}/requests"): ("any",),
    ("GET", "/api/v1/datasets/{name}/requests"): ("any",),
    ("POST", "/api/v1/datasets/{name}/requests/{request_id}/approve"): ("any",),
    ("POST", "/api/v1/datasets/{name}/requests/{request_id}/refuse"): ("any",),
    ("POST", "/api/v1/withdrawals"): ("steward",),
    ("POST", "/api/v1/tools"): ("admin", "maintainer"),
    ("GET", "/api/v1/tools"): ("any",),
    ("GET", "/api/v1/tools/{name}"): ("any",),
    ("POST", "/api/v1/tools/{name}/{version}/submit"): ("any",),
    ("POST", "/api/v1/tools/{name}/{version}/verify"): ("admin", "steward"),
    ("POST", "/api/v1/tools/{name}/{version}/reject"): ("admin", "steward"),
    ("POST", "/api/v1/tools/{name}/{version}/deprecate"): ("any",),
    ("POST", "/api/v1/tools/{name}/{version}/runnable"): ("any",),
    ("POST", "/api/v1/jobs"): ("any",),
    ("GET", "/api/v1/jobs"): ("any",),
    ("GET", "/api/v1/jobs/{job_id}"): ("any",),
    ("GET", "/api/v1/jobs/{job_id}/logs"): ("any",),
    ("POST", "/api/v1/jobs/{job_id}/cancel"): ("any",),
    ("GET", "/api/v1/flavors"): ("any",),
    ("GET", "/api/v1/releases"): ("any",),
    ("GET", "/api/v1/releases/{release_id}"): ("any",),
    ("POST", "/api/v1/releases/{release_id}/approve"): ("any",),
    ("POST", "/api/v1/releases/{release_id}/reject"): ("any",),
    ("GET", "/api/v1/releases/{release_id}/files/{file_id}/preview"): ("any",),
    ("GET", "/api/v1/releases/{release_id}/files/{file_id}"): ("any",),
    ("PUT", "/api/v1/datasets/{name}/review-policy"): ("any",),
    # Pages: anyone not signed in is sent to the sign-in page (tests/releases/test_pages.py).
    ("GET", "/releases"): ("public",),
    ("GET", "/releases/{release_id}"): ("public",),
    ("POST", "/releases/{release_id}/vote"): ("any",),
    ("GET", "/dicomweb/studies"): ("any",),
    ("GET", "/explore"): ("public",),
    ("GET", "/ledger"): ("public",),
    ("GET", "/admin"): ("public",),  # a page: others are sent to sign in or told it is not theirs
    ("POST", "/admin/users/{name}/role"): ("admin",),
    ("POST", "/admin/flavors/{name}"): ("admin",),
    ("POST", "/explore/{name}/{action}"): ("any",),  # a steward's buttons
    ("GET", "/tools"): ("public",),  # pages: sign-in needed (tests/tools/test_pages.py)
    ("GET", "/tools/{name}"): ("public",),
    ("GET", "/work/jobs"): ("public",),  # pages: anyone not signed in is sent to sign in
    ("GET", "/work/jobs/{job_id}"): ("public",),
    ("GET", "/work/jobs-new"): ("public",),
    ("POST", "/work/jobs-new"): ("any",),
    ("POST", "/work/jobs/{job_id}/cancel"): ("any",),
    ("GET", "/explore/{name}"): ("public",),  # a page: tests/web/test_dataset_page.py
    ("GET", "/header/{study}/{series}/{instance}"): ("public",),  # a page: the same tests
    ("GET", "/viewer/{study}/{series}"): ("public",),  # a page: tests/web/test_viewer_page.py
    **dict.fromkeys(sorted(DICOMWEB_ROUTES), ("any",)),
    ("PUT", "/api/v1/flavors/{name}"): ("admin",),
    ("GET", "/datasets/{name}/v{version}"): ("public",),
    ("GET", "/datasets/{name}/v{version}/schema.jsonld"): ("public",),
    ("GET", "/datasets/{name}/v{version}/datacite.json"): ("public",),
    ("GET", "/datasets/{name}/v{version}/datacite.xml"): ("public",),
    ("GET", "/datasets/{name}/v{version}/dcat.ttl"): ("public",),
    ("GET", "/pid/{identifier:path}"): ("public",),
    ("GET", "/login/oidc"): ("public",),
    ("GET", "/login/oidc/callback"): ("public",),
    ("GET", "/api/v1/whoami"): ("any",),
    ("POST", "/api/v1/auth/token"): ("public",),
    ("GET", "/api/v1/tokens"): ("any",),
    ("POST", "/api/v1/tokens"): ("any",),
    ("DELETE", "/api/v1/tokens/{token_id}"): ("any",),
    ("GET", "/api/v1/projects"): ("any",),
    ("POST", "/api/v1/projects"): ("admin",),
    ("GET", "/api/v1/projects/{name}"): ("any",),
    ("POST", "/api/v1/projects/{name}/members"): ("any",),
    ("DELETE", "/api/v1/projects/{name}/members/{user_name}"): ("any",),
    ("POST", "/api/v1/uploads"): ("steward",),
    ("GET", "/api/v1/ingest/batches/{batch_id}"): ("steward",),
    ("GET", "/api/v1/quarantine"): ("steward",),
    ("GET", "/api/v1/quarantine/summary"): ("steward",),
    ("POST", "/api/v1/quarantine/decisions"): ("steward",),
    ("GET", "/quarantine"): ("public",),  # a page: tests/ingest/test_quarantine.py
    ("POST", "/quarantine/decide"): ("steward",),
    ("GET", "/quarantine/{sop_instance_uid}/preview.jpg"): ("steward",),
    ("GET", "/api/v1/catalog/series"): ("steward",),
    ("GET", "/api/v1/catalog/subjects"): ("steward",),
    ("GET", "/api/v1/catalog/stats"): ("steward",),
    ("GET", "/api/v1/ledger/key"): ("public",),
    ("GET", "/api/v1/ledger/checkpoint"): ("public",),
    ("GET", "/api/v1/ledger/proof/inclusion"): ("public",),
    ("GET", "/api/v1/ledger/proof/consistency"): ("public",),
    ("GET", "/api/v1/ledger/witnesses"): ("public",),
    ("POST", "/api/v1/ledger/cosignatures"): ("public",),
    ("GET", "/api/v1/ledger/entries"): ("public",),
}
ROLES = ("admin", "steward", "researcher", "maintainer", "organiser", "auditor")


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client


def _routes(platform: Platform) -> dict[tuple[str, str], tuple[str, ...] | None]:
    app = create_app(platform)
    found = {}
    for path, route in iter_api_routes(app.routes):
        for method in route.methods or ():
            found[(method, path)] = route_permission(route.dependant)
    return found


def test_every_route_declares_its_permission(platform: Platform) -> None:
    assert _routes(platform) == EXPECTED


def _call(client: TestClient, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = (
        path.replace("{batch_id}", "1")
        .replace("{token_id}", "1")
        .replace("{grant_id}", "1")
        .replace("{request_id}", "1")
        .replace("{job_id}", "1")
        .replace("{release_id}", "1")
        .replace("{file_id}", "1")
        .replace("{study}", "1.2.3")
        .replace("{series}", "1.2.4")
        .replace("{instance}", "1.2.5")
        .replace("{frames}", "1")
        .replace("{action}", "release")
        .replace("{path:path}", "x/y")
        .replace("{name}", "p")
        .replace("{version}", "1")
        .replace("{user_name}", "u")
        .replace("{sop_instance_uid}", "1.2.6")
    )
    content = b"x" if method in {"POST", "PATCH", "PUT"} else None
    return int(client.request(method, url, content=content, headers=headers).status_code)


@pytest.mark.parametrize(("method", "path"), [k for k, v in EXPECTED.items() if v != ("public",)])
def test_no_login_and_bad_tokens_are_refused(client: TestClient, method: str, path: str) -> None:
    assert _call(client, method, path, None) == 401
    assert _call(client, method, path, "insitu_not-a-real-token") == 401
    assert _call(client, method, path, "garbage") == 401


@pytest.mark.parametrize(
    ("method", "path"), [k for k, v in EXPECTED.items() if v not in {("public",), ("any",)}]
)
def test_wrong_roles_are_refused(
    platform: Platform, client: TestClient, method: str, path: str
) -> None:
    for role in (r for r in ROLES if r not in EXPECTED[(method, path)]):
        token = user_token(platform, f"user-{role}", role)
        response_code = _call(client, method, path, token)
        assert response_code == 403, (role, response_code)


def test_refusals_change_nothing(platform: Platform, client: TestClient) -> None:
    researcher = user_token(platform, "res", "researcher")
    data = encode(minimal_dataset(), pixels=bytes(64))
    assert client.post("/api/v1/uploads", content=data).status_code == 401
    assert (
        client.post(
            "/api/v1/uploads", content=data, headers={"Authorization": f"Bearer {researcher}"}
        ).status_code
        == 403
    )
    steward = user_token(platform, "stew", "steward")
    stats = client.get(
        "/api/v1/catalog/stats", headers={"Authorization": f"Bearer {steward}"}
    ).json()
    assert stats == {"subjects": 0, "studies": 0, "series": 0, "instances": 0}
    assert list(platform.store.digests()) == []


def test_revoked_and_expired_tokens_are_refused(platform: Platform, client: TestClient) -> None:
    import datetime as dt

    from insitu.access import service
    from insitu.access.models import ApiToken
    from insitu.db import session_scope, utcnow

    with session_scope(platform.sessions) as session:
        user = service.create_user(session, "temp", "steward")
        expired = service.issue_token(session, user, expires_at=utcnow() - dt.timedelta(seconds=1))
        revoked = service.issue_token(session, user)
        row = session.query(ApiToken).filter_by(token_hash=service.hash_token(revoked)).one()
        row.revoked_at = utcnow()
    for token in (expired, revoked):
        response = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert "unknown, expired or revoked" in response.json()["detail"]


def test_public_routes_and_docs(client: TestClient) -> None:
    assert client.get("/api/v1/health").json()["status"] == "ok"
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


# Routes that address one object by id or name in their path: who owns it decides. Each entry
# says how to make the object as its owner and what the owner gets; another user of the same
# role must get 403 and change nothing. Objects that are not owned by a user (ingest batches:
# the stewards' shared work) are listed in NOT_OWNED. A new route with a path parameter must be
# added to one of the two.
NOT_OWNED = {
    ("GET", "/api/v1/ingest/batches/{batch_id}"),
    ("GET", "/quarantine/{sop_instance_uid}/preview.jpg"),  # the stewards' shared review
    ("PUT", "/api/v1/flavors/{name}"),  # the admins' shared settings
    ("POST", "/admin/flavors/{name}"),
    ("POST", "/admin/users/{name}/role"),
    ("POST", "/explore/{name}/{action}"),  # stewards' forms: tests/web/test_dataset_page.py
    # Reviews are the reviewers' shared work (and never the maintainer's own: tests/tools).
    ("POST", "/api/v1/tools/{name}/{version}/verify"),
    ("POST", "/api/v1/tools/{name}/{version}/reject"),
    # Release reviews likewise: the requester may never vote or preview (tests/releases).
    ("POST", "/api/v1/releases/{release_id}/approve"),
    ("POST", "/api/v1/releases/{release_id}/reject"),
    ("GET", "/api/v1/releases/{release_id}/files/{file_id}/preview"),
    ("POST", "/releases/{release_id}/vote"),
}
# Public pages of dataset versions: anyone once published; before that only the dataset's
# stewards and grantees, and a 404 for everyone else (signed in or not).
PUBLISHED_ONLY = {
    ("GET", "/datasets/{name}/v{version}"),
    ("GET", "/datasets/{name}/v{version}/schema.jsonld"),
    ("GET", "/datasets/{name}/v{version}/datacite.json"),
    ("GET", "/datasets/{name}/v{version}/datacite.xml"),
    ("GET", "/datasets/{name}/v{version}/dcat.ttl"),
}
OWNED: dict[tuple[str, str], int] = {
    ("DELETE", "/api/v1/tokens/{token_id}"): 204,
    ("GET", "/api/v1/projects/{name}"): 200,
    ("POST", "/api/v1/projects/{name}/members"): 200,
    ("DELETE", "/api/v1/projects/{name}/members/{user_name}"): 200,
    # The dataset "owned" is a draft that the owner stewards.
    ("GET", "/api/v1/datasets/{name}"): 200,
    ("PATCH", "/api/v1/datasets/{name}"): 200,
    ("POST", "/api/v1/datasets/{name}/stewards"): 201,
    ("POST", "/api/v1/datasets/{name}/release"): 200,
    ("POST", "/api/v1/datasets/{name}/publish"): 409,  # a draft: release it first
    ("POST", "/api/v1/datasets/{name}/invalidate"): 200,
    ("POST", "/api/v1/datasets/{name}/new-version"): 409,  # a draft: edit it instead
    ("POST", "/api/v1/datasets/{name}/grants"): 201,
    ("DELETE", "/api/v1/datasets/{name}/grants/{grant_id}"): 204,
    ("POST", "/api/v1/datasets/{name}/revoke"): 200,
    ("POST", "/api/v1/datasets/{name}/terms"): 200,
    ("GET", "/api/v1/datasets/{name}/use"): 200,
    ("GET", "/api/v1/datasets/{name}/stats"): 200,
    ("POST", "/api/v1/datasets/{name}/requests"): 409,  # a draft cannot be requested
    ("GET", "/api/v1/datasets/{name}/requests"): 200,
    ("POST", "/api/v1/datasets/{name}/requests/{request_id}/approve"): 422,  # no such request
    ("POST", "/api/v1/datasets/{name}/requests/{request_id}/refuse"): 422,
    # The tool "owned" is a draft (an OCI image) that the owner maintains.
    ("GET", "/api/v1/tools/{name}"): 200,
    ("POST", "/api/v1/tools/{name}/{version}/submit"): 200,
    ("POST", "/api/v1/tools/{name}/{version}/deprecate"): 409,  # a draft: verify it first
    ("POST", "/api/v1/tools/{name}/{version}/runnable"): 200,
    # The job "owned" is a queued job of the owner's.
    ("GET", "/api/v1/jobs/{job_id}"): 200,
    ("GET", "/api/v1/jobs/{job_id}/logs"): 200,
    ("POST", "/api/v1/jobs/{job_id}/cancel"): 200,
    ("PUT", "/api/v1/datasets/{name}/review-policy"): 200,
    # The release "owned" is the owner's job's request, waiting for review.
    ("GET", "/api/v1/releases/{release_id}"): 200,
    ("GET", "/api/v1/releases/{release_id}/files/{file_id}"): 409,  # not approved yet
    ("GET", "/releases/{release_id}"): 200,  # the page
    ("POST", "/work/jobs/{job_id}/cancel"): 200,  # the cancel button, then the job's page
}
BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("POST", "/api/v1/projects/{name}/members"): {"user": "other"},
    ("POST", "/api/v1/datasets/{name}/invalidate"): {"reason": "test"},
    ("PATCH", "/api/v1/datasets/{name}"): {"title": "Renamed"},
    ("POST", "/api/v1/datasets/{name}/stewards"): {"user": "third"},
    ("POST", "/api/v1/datasets/{name}/grants"): {"user": "third"},
    ("POST", "/api/v1/datasets/{name}/revoke"): {"user": "third"},
    ("POST", "/api/v1/datasets/{name}/requests"): {"purpose": "research"},
    ("POST", "/api/v1/datasets/{name}/requests/{request_id}/approve"): {},
    ("POST", "/api/v1/datasets/{name}/requests/{request_id}/refuse"): {"note": "no"},
    ("POST", "/api/v1/tools/{name}/{version}/deprecate"): {"reason": "old", "successor": "x@1"},
    ("POST", "/api/v1/tools/{name}/{version}/runnable"): {"datasets": ["owned"]},
    ("PUT", "/api/v1/datasets/{name}/review-policy"): {"policy": "two_reviewers"},
}


def test_every_route_with_a_path_parameter_is_classified(platform: Platform) -> None:
    with_parameters = {key for key in _routes(platform) if "{" in key[1]}
    assert with_parameters == set(OWNED) | NOT_OWNED | PUBLISHED_ONLY | DICOMWEB_ROUTES | {
        ("GET", "/viewer/{study}/{series}"),
        ("GET", "/explore/{name}"),
        ("GET", "/work/jobs/{job_id}"),  # tests/web/test_work.py
        ("GET", "/tools/{name}"),  # tests/tools/test_pages.py
        ("GET", "/header/{study}/{series}/{instance}"),
        ("GET", "/pid/{identifier:path}"),  # tested in tests/datasets/test_public.py
    }


def _owned_object(
    platform: Platform, client: TestClient, owner: dict[str, str], admin: dict[str, str]
) -> dict[str, str]:
    """A token, a project led by ``owner`` with a member to remove, and a draft dataset
    stewarded by ``owner`` with a grant to revoke."""
    token_id = client.get("/api/v1/tokens", headers=owner).json()[0]["id"]
    client.post("/api/v1/projects", json={"name": "owned"}, headers=admin)
    client.post(
        "/api/v1/projects/owned/members", json={"user": "owner", "role": "lead"}, headers=admin
    )
    client.post("/api/v1/projects/owned/members", json={"user": "third"}, headers=admin)
    ingest.ingest(
        platform,
        [SourceItem("one.dcm", data=encode(minimal_dataset(), pixels=bytes(64)))],
        site="SITE",
        options=Options.parse(""),
    )
    with session_scope(platform.sessions) as session:
        owner_user = access.get_user(session, "owner")
        third = access.get_user(session, "third")
        assert owner_user is not None
        assert third is not None
        dataset = datasets.create_dataset(
            session,
            "owned",
            datasets.DatasetMetadata(title="Owned"),
            owner_user.id,
            criteria=SelectionCriteria(),
        )
        grant_id = datasets.grant(session, dataset, owner_user.id, user_id=third.id).id
        maintainer = access.Principal(owner_user.id, "owner", Role.maintainer)
        published = tools.publish(
            session,
            platform.store,
            build_settings(platform.settings),
            oci_bundle("owned"),
            maintainer,
        )
        job = Job(
            user_id=owner_user.id,
            tool_version_id=published.version.id,
            dataset_ids=[dataset.id],
            flavor="no-gpu",
            command=["true"],
        )
        session.add(job)
        session.flush()
        ledger.record(
            session,
            jobs.JOB_SUBMITTED,
            actor=ledger.user_actor(owner_user.id),
            subject=f"job:{job.id}",
        )
        release = ReleaseRequest(job_id=job.id, user_id=owner_user.id, dataset_ids=[dataset.id],
                                 policy="one_reviewer", state=ReleaseState.in_review)  # fmt: skip
        session.add(release)
        session.flush()
        result = ReleaseFile(request_id=release.id, path="metrics.json", size=2, sha256="0" * 64,
                             media_type="application/json", verdict=Verdict.passed,
                             stored=True)  # fmt: skip
        session.add(result)
        session.flush()
        ledger.record(session, releases.RELEASE_REQUESTED, actor=ledger.HOST_ACTOR,
                      subject=f"release:{release.id}")  # fmt: skip
    return {
        "release_id": str(release.id),
        "file_id": str(result.id),
        "job_id": str(job.id),
        "version": "1.0.0",
        "token_id": str(token_id),
        "name": "owned",
        "user_name": "third",
        "grant_id": str(grant_id),
        "request_id": "999",
    }


@pytest.mark.parametrize(("method", "path"), list(OWNED))
def test_the_owner_may_and_another_user_may_not(
    platform: Platform, client: TestClient, method: str, path: str
) -> None:
    admin = {"Authorization": f"Bearer {user_token(platform, 'root', 'admin')}"}
    owner = {"Authorization": f"Bearer {user_token(platform, 'owner', 'researcher')}"}
    other = {"Authorization": f"Bearer {user_token(platform, 'other', 'researcher')}"}
    user_token(platform, "third", "researcher")
    values = _owned_object(platform, client, owner, admin)
    url = path
    for key, value in values.items():
        url = url.replace("{" + key + "}", value)
    body = BODIES.get((method, path))

    def call(headers: dict[str, str]) -> int:
        return int(client.request(method, url, json=body, headers=headers).status_code)

    before = client.get("/api/v1/projects/owned", headers=admin).json()
    assert call(other) == 403
    assert client.get("/api/v1/projects/owned", headers=admin).json() == before
    assert call(owner) == OWNED[(method, path)]


@pytest.mark.parametrize(("method", "path"), sorted(PUBLISHED_ONLY))
def test_unpublished_metadata_is_for_stewards_and_grantees_only(
    platform: Platform, client: TestClient, method: str, path: str
) -> None:
    admin = {"Authorization": f"Bearer {user_token(platform, 'root', 'admin')}"}
    owner = {"Authorization": f"Bearer {user_token(platform, 'owner', 'researcher')}"}
    other = {"Authorization": f"Bearer {user_token(platform, 'other', 'researcher')}"}
    third = {"Authorization": f"Bearer {user_token(platform, 'third', 'researcher')}"}
    _owned_object(platform, client, owner, admin)
    url = path.replace("{name}", "owned").replace("{version}", "1")
    assert client.get(url).status_code == 404
    assert client.get(url, headers=other).status_code == 404
    assert client.get(url, headers=admin).status_code == 404
    assert client.get(url, headers=owner).status_code == 200
    assert client.get(url, headers=third).status_code == 200  # a grantee


def test_metrics_are_for_admins(platform: Platform, client: TestClient) -> None:
    admin = {"Authorization": f"Bearer {user_token(platform, 'ops', 'admin')}"}
    answer = client.get("/metrics", headers=admin)
    assert answer.status_code == 200
    assert "insitu_ledger_entries 3.0" in answer.text  # account, token, this first login
    assert 'insitu_catalog_objects{kind="instances"} 0.0' in answer.text


def test_auditors_read_the_access_log_with_names(platform: Platform, client: TestClient) -> None:
    auditor = {"Authorization": f"Bearer {user_token(platform, 'audra', 'auditor')}"}
    log = client.get("/api/v1/audit/access-log", headers=auditor).json()
    assert [(e["type"], e["subject_name"]) for e in log[:2]] == [
        ("access.user.created", "audra"),
        ("access.token.created", "token:1"),
    ]
    assert log[2]["type"] == "access.login"
    assert log[2]["actor_name"] == "audra"

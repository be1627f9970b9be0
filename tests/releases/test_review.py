"""Review policies, votes, previews and downloads, through the API as each person."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from insitu.access import service as access
from insitu.datasets import service as datasets
from insitu.datasets.models import ReviewPolicy
from insitu.db import session_scope
from insitu.ledger.models import LedgerEntry
from insitu.web.app import create_app
from tests.releases.conftest import Desk
from tests.releases.test_smuggling import HONEST


@pytest.fixture
def client(desk: Desk) -> Iterator[TestClient]:
    with TestClient(create_app(desk.platform)) as test_client:
        yield test_client


def _auth(desk: Desk, principal: access.Principal) -> dict[str, str]:
    with session_scope(desk.platform.sessions) as session:
        user = access.get_user(session, principal.name)
        assert user is not None
        return {"Authorization": f"Bearer {access.issue_token(session, user)}"}


def _ledger(desk: Desk, kind: str) -> int:
    with session_scope(desk.platform.sessions) as session:
        return int(session.scalar(select(func.count()).where(LedgerEntry.event_type == kind)) or 0)


def _file(release: dict[str, Any], path: str) -> dict[str, Any]:
    return next(f for f in release["files"] if f["path"] == path)


def test_two_reviewers_no_self_review_and_no_single_vote(desk: Desk, client: TestClient) -> None:
    stan, sue, otto = (_auth(desk, p) for p in (desk.stan, desk.sue, desk.otto))
    release_id = desk.collect(desk.job(HONEST, ("pair",), user=desk.stan))  # a steward's job
    assert desk.request(release_id)["approvals_needed"] == 2
    url = f"/api/v1/releases/{release_id}"

    own = client.post(f"{url}/approve", json={}, headers=stan)
    assert own.status_code == 403
    assert "you asked for this release" in own.json()["detail"]
    outsider = client.post(f"{url}/approve", json={}, headers=otto)
    assert outsider.status_code == 403
    assert "you do not steward pair v1" in outsider.json()["detail"]

    first = client.post(f"{url}/approve", json={"comment": "aggregates only"}, headers=sue)
    assert first.status_code == 200
    assert first.json()["state"] == "in_review"  # one vote of two
    again = client.post(f"{url}/approve", json={}, headers=sue)
    assert again.status_code == 409
    assert "another reviewer" in again.json()["detail"]
    assert client.get(f"{url}/files/{_file(first.json(), 'metrics.json')['id']}",
                      headers=stan).status_code == 409  # fmt: skip

    with session_scope(desk.platform.sessions) as session:  # Otto becomes a steward of pair
        pair = datasets.get_dataset(session, "pair")
        assert pair is not None
        datasets.add_steward(session, pair, desk.otto.user_id, desk.stan.user_id)
    second = client.post(f"{url}/approve", json={}, headers=otto)
    assert second.json()["state"] == "approved"
    assert [v["reviewer"] for v in second.json()["votes"]] == ["sue", "otto"]
    assert _ledger(desk, "release.voted") == 2


def test_the_automatic_policy_is_refused_on_real_data(desk: Desk, client: TestClient) -> None:
    stan = _auth(desk, desk.stan)
    before = _ledger(desk, "dataset.review_policy")
    answer = client.put("/api/v1/datasets/lung/review-policy", json={"policy": "automatic"},
                        headers=stan)  # fmt: skip
    assert answer.status_code == 422
    assert "only for synthetic datasets" in answer.json()["detail"]
    assert _ledger(desk, "dataset.review_policy") == before
    ok = client.put("/api/v1/datasets/sample/review-policy", json={"policy": "two_reviewers"},
                    headers=stan)  # fmt: skip
    assert ok.json()["review_policy"] == "two_reviewers"
    rita = _auth(desk, desk.rita)
    refused = client.put("/api/v1/datasets/sample/review-policy",
                         json={"policy": "automatic"}, headers=rita)  # fmt: skip
    assert refused.status_code == 403


def test_the_strictest_policy_of_a_jobs_datasets_applies(desk: Desk) -> None:
    mixed = desk.request(desk.collect(desk.job(HONEST, ("sample", "lung"))))
    assert (mixed["policy"], mixed["state"]) == ("one_reviewer", "in_review")
    strict = desk.request(desk.collect(desk.job(HONEST, ("lung", "pair"))))
    assert (strict["policy"], strict["approvals_needed"]) == ("two_reviewers", 2)
    with session_scope(desk.platform.sessions) as session:  # set on real data by other means
        lung = datasets.get_dataset(session, "lung")
        assert lung is not None
        lung.review_policy = ReviewPolicy.automatic
        from insitu.ledger import service as ledger

        ledger.record(session, datasets.DATASET_REVIEW_POLICY, actor=ledger.HOST_ACTOR,
                      subject="dataset:lung")  # fmt: skip
    guarded = desk.request(desk.collect(desk.job(HONEST, ("lung",))))
    assert (guarded["policy"], guarded["state"]) == ("one_reviewer", "in_review")


def test_a_reject_says_what_to_change(desk: Desk, client: TestClient) -> None:
    release_id = desk.collect(desk.job(HONEST))
    url = f"/api/v1/releases/{release_id}"
    sue = _auth(desk, desk.sue)
    silent = client.post(f"{url}/reject", json={"comment": " "}, headers=sue)
    assert silent.status_code == 422
    rejected = client.post(f"{url}/reject", json={"comment": "round the AUC to 2 digits"},
                           headers=sue)  # fmt: skip
    assert rejected.json()["state"] == "rejected"
    mine = client.get(url, headers=_auth(desk, desk.rita)).json()
    assert mine["reason"] == "round the AUC to 2 digits"
    late = client.post(f"{url}/approve", json={}, headers=_auth(desk, desk.stan))
    assert late.status_code == 409


def test_only_the_requester_downloads_approved_files(desk: Desk, client: TestClient) -> None:
    rita, sue = _auth(desk, desk.rita), _auth(desk, desk.sue)
    researcher = access.Principal(0, "rob", desk.rita.role)
    with session_scope(desk.platform.sessions) as session:
        rob = access.create_user(session, "rob", "researcher")
        researcher = access.Principal(rob.id, "rob", rob.role)
    rob_headers = _auth(desk, researcher)
    release_id = desk.collect(desk.job(HONEST))
    url = f"/api/v1/releases/{release_id}"
    release = client.get(url, headers=rita).json()
    model = _file(release, "model.joblib")
    assert client.get(f"{url}/files/{model['id']}", headers=rita).status_code == 409  # in review
    assert client.post(f"{url}/approve", json={}, headers=sue).json()["state"] == "approved"

    answer = client.get(f"{url}/files/{model['id']}", headers=rita)
    assert answer.status_code == 200
    assert answer.content == HONEST["model.joblib"]
    assert answer.headers["X-Insitu-SHA256"] == hashlib.sha256(answer.content).hexdigest()
    assert "attachment" in answer.headers["content-disposition"]
    assert _ledger(desk, "release.downloaded") == 1
    assert client.get(f"{url}/files/{model['id']}", headers=sue).status_code == 403  # reviewer
    assert client.get(f"{url}/files/{model['id']}", headers=rob_headers).status_code == 403
    assert client.get(url, headers=rob_headers).status_code == 403
    assert client.get(f"{url}/files/{model['id']}").status_code == 401
    assert _ledger(desk, "release.downloaded") == 1


def test_a_corrupted_stored_copy_is_not_handed_out(desk: Desk, client: TestClient) -> None:
    rita = _auth(desk, desk.rita)
    release_id = desk.collect(desk.job(HONEST, ("sample",)))
    item = _file(desk.request(release_id), "metrics.json")
    stored = desk.platform.settings.resolved_releases_root / str(release_id) / item["sha256"]
    stored.chmod(0o600)
    stored.write_bytes(b'{"auc": 0.99}')
    answer = client.get(f"/api/v1/releases/{release_id}/files/{item['id']}", headers=rita)
    assert answer.status_code == 422
    assert "no longer matches its hash" in answer.json()["detail"]


def test_refused_files_are_never_handed_out(desk: Desk, client: TestClient) -> None:
    release_id = desk.collect(desk.job({"scan.txt": desk.instance(), **HONEST}, ("sample",)))
    release = desk.request(release_id)
    assert release["state"] == "refused"
    rita, sue = _auth(desk, desk.rita), _auth(desk, desk.sue)
    for item in release["files"]:
        url = f"/api/v1/releases/{release_id}/files/{item['id']}"
        assert client.get(url, headers=rita).status_code == 409
    scan = _file(release, "scan.txt")
    preview = client.get(f"/api/v1/releases/{release_id}/files/{scan['id']}/preview",
                         headers=sue)  # fmt: skip
    assert preview.status_code == 409


def test_reviewers_preview_text_and_pictures_in_the_browser(desk: Desk, client: TestClient) -> None:
    release_id = desk.collect(desk.job(HONEST))
    release = desk.request(release_id)
    sue, rita, otto = (_auth(desk, p) for p in (desk.sue, desk.rita, desk.otto))
    base = f"/api/v1/releases/{release_id}/files"
    text = client.get(f"{base}/{_file(release, 'metrics.json')['id']}/preview", headers=sue)
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert "sandbox" in text.headers["content-security-policy"]
    assert text.headers["content-disposition"] == "inline"
    assert text.content == HONEST["metrics.json"]
    picture = client.get(f"{base}/{_file(release, 'roc.png')['id']}/preview", headers=sue)
    assert picture.headers["content-type"] == "image/png"
    binary = client.get(f"{base}/{_file(release, 'model.joblib')['id']}/preview", headers=sue)
    assert binary.status_code == 409
    assert "never download" in binary.json()["detail"]
    metrics = _file(release, "metrics.json")["id"]
    assert client.get(f"{base}/{metrics}/preview", headers=rita).status_code == 403
    assert client.get(f"{base}/{metrics}/preview", headers=otto).status_code == 403
    assert _ledger(desk, "release.previewed") == 2


def test_queues_and_lists(desk: Desk, client: TestClient) -> None:
    waiting = desk.collect(desk.job(HONEST))
    desk.collect(desk.job(HONEST, ("sample",)))  # approved at once
    sue, rita, otto = (_auth(desk, p) for p in (desk.sue, desk.rita, desk.otto))
    assert [r["id"] for r in client.get("/api/v1/releases?review=true", headers=sue).json()] == [
        waiting
    ]
    assert client.get("/api/v1/releases?review=true", headers=otto).json() == []
    assert client.get("/api/v1/releases?review=true", headers=rita).json() == []
    mine = client.get("/api/v1/releases", headers=rita).json()
    assert [r["state"] for r in mine] == ["approved", "in_review"]
    assert client.get("/api/v1/releases", headers=sue).json() == []
    client.post(f"/api/v1/releases/{waiting}/approve", json={}, headers=sue)
    assert client.get("/api/v1/releases?review=true", headers=sue).json() == []
    assert client.get(f"/api/v1/releases/{waiting}", headers=otto).status_code == 403


def test_every_step_is_on_the_ledger(desk: Desk) -> None:
    desk.collect(desk.job(HONEST))
    assert _ledger(desk, "release.requested") == 1
    assert _ledger(desk, "release.checked") == len(HONEST)
    assert _ledger(desk, "release.state") == 1
    with session_scope(desk.platform.sessions) as session:
        payloads = session.scalars(
            select(LedgerEntry.payload).where(LedgerEntry.event_type == "release.checked")
        ).all()
    assert {json.loads(p)["file"] for p in payloads} == set(HONEST)
    assert {json.loads(p)["verdict"] for p in payloads} == {"pass"}

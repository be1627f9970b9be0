"""Password login for a token, lockout, rate limit, and the caller's own tokens."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from insitu.access import service as access
from insitu.access.models import ApiToken, Role
from insitu.core.platform import Platform
from insitu.db import session_scope, utcnow
from insitu.ledger import service as ledger
from insitu.ledger.models import LedgerEntry
from insitu.web.app import create_app
from tests.factories import user_token

PASSWORD = "correct horse battery"


def _account(platform: Platform, name: str = "pat", role: Role = Role.researcher) -> int:
    with session_scope(platform.sessions) as session:
        user = access.create_user(session, name, role)
        access.set_password(session, user, PASSWORD, ledger.HOST_ACTOR)
        return user.id


def _events(platform: Platform) -> list[dict[str, Any]]:
    with session_scope(platform.sessions) as session:
        rows = session.scalars(select(LedgerEntry).order_by(LedgerEntry.index))
        return [ledger.entry_as_dict(e) for e in rows]


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client


def _login(client: TestClient, name: str, password: str) -> Any:
    return client.post("/api/v1/auth/token", json={"name": name, "password": password})


def test_short_passwords_are_refused(platform: Platform) -> None:
    with session_scope(platform.sessions) as session:
        user = access.create_user(session, "short", Role.researcher)
        with pytest.raises(access.AccessError, match="at least 12"):
            access.set_password(session, user, "tooshort", ledger.HOST_ACTOR)


def test_password_login_gives_a_working_expiring_token(
    platform: Platform, client: TestClient
) -> None:
    user_id = _account(platform)
    answer = _login(client, "pat", PASSWORD)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    expires = dt.datetime.fromisoformat(body["expires_at"])
    assert dt.timedelta(days=29) < expires - utcnow() <= dt.timedelta(days=30)
    me = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json() == {"name": "pat", "role": "researcher"}
    logins = [e for e in _events(platform) if e["type"] == "access.login"]
    assert logins[0]["payload"] == {"method": "password"}
    assert logins[0]["subject"] == f"user:{user_id}"
    with session_scope(platform.sessions) as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert body["token"] not in stored  # only hashes are kept


def test_wrong_passwords_lock_the_account_and_go_to_the_ledger(
    platform: Platform, client: TestClient
) -> None:
    user_id = _account(platform)
    for _ in range(access.MAX_FAILED_LOGINS - 1):
        answer = _login(client, "pat", "wrong password!!")
        assert answer.status_code == 401
        assert answer.json()["detail"] == "wrong account name or password"
    last = _login(client, "pat", "wrong password!!")
    assert last.status_code == 403
    assert "locked until" in last.json()["detail"]
    locked = _login(client, "pat", PASSWORD)  # even the right password, while locked
    assert locked.status_code == 403
    assert "locked" in locked.json()["detail"]
    kinds = [e["type"] for e in _events(platform) if e["subject"] == f"user:{user_id}"]
    assert kinds.count("access.login.failed") == access.MAX_FAILED_LOGINS
    assert kinds.count("access.locked") == 1
    assert "access.login" not in kinds
    with session_scope(platform.sessions) as session:  # after the lockout it works again
        later = utcnow() + access.LOCKOUT + dt.timedelta(seconds=1)
        outcome = access.login_with_password(session, "pat", PASSWORD, now=later)
        assert outcome.user is not None


def test_unknown_names_look_like_wrong_passwords_and_leave_no_trace(
    platform: Platform, client: TestClient
) -> None:
    before = len(_events(platform))
    answer = _login(client, "nobody", PASSWORD)
    assert answer.status_code == 401
    assert answer.json()["detail"] == "wrong account name or password"
    assert len(_events(platform)) == before


def test_logins_are_rate_limited_per_address(platform: Platform, client: TestClient) -> None:
    client.app.state.login_limiter.limit = 3  # type: ignore[attr-defined]
    codes = [_login(client, "nobody", "x" * 12).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    refused = _login(client, "nobody", "x" * 12)
    assert int(refused.headers["Retry-After"]) >= 1


def test_disabled_and_expired_tokens_are_refused(platform: Platform, client: TestClient) -> None:
    with session_scope(platform.sessions) as session:
        user = access.create_user(session, "old", Role.researcher)
        expired = access.issue_token(session, user, expires_at=utcnow() - dt.timedelta(seconds=1))
        live = access.issue_token(session, user)
    assert (
        client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {expired}"}).status_code
        == 401
    )
    with session_scope(platform.sessions) as session:
        account = access.get_user(session, "old")
        assert account is not None
        access.deactivate_user(session, account, ledger.HOST_ACTOR)
    assert (
        client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {live}"}).status_code == 401
    )


def test_own_tokens_are_listed_created_and_revoked(platform: Platform, client: TestClient) -> None:
    mine = {"Authorization": f"Bearer {user_token(platform, 'me', 'researcher')}"}
    theirs = {"Authorization": f"Bearer {user_token(platform, 'other', 'researcher')}"}
    created = client.post(
        "/api/v1/tokens", json={"label": "laptop", "expires_days": 7}, headers=mine
    )
    assert created.status_code == 201
    listed = client.get("/api/v1/tokens", headers=mine).json()
    assert [t["label"] for t in listed] == ["laptop", ""]
    assert all("hash" not in key for t in listed for key in t)
    other_ids = {t["id"] for t in client.get("/api/v1/tokens", headers=theirs).json()}
    assert not other_ids & {t["id"] for t in listed}
    laptop_id = listed[0]["id"]
    # Someone else guessing the id: refused, nothing changes.
    refused = client.delete(f"/api/v1/tokens/{laptop_id}", headers=theirs)
    assert refused.status_code == 403
    assert client.get("/api/v1/tokens", headers=mine).json()[0]["revoked_at"] is None
    assert client.delete("/api/v1/tokens/999999", headers=mine).status_code == 403
    assert client.delete(f"/api/v1/tokens/{laptop_id}", headers=mine).status_code == 204
    laptop = {"Authorization": f"Bearer {created.json()['token']}"}
    assert client.get("/api/v1/whoami", headers=laptop).status_code == 401


def test_admins_may_revoke_anyones_token(platform: Platform, client: TestClient) -> None:
    admin = {"Authorization": f"Bearer {user_token(platform, 'boss', 'admin')}"}
    victim = user_token(platform, "leaky", "researcher")
    with session_scope(platform.sessions) as session:
        token_id = session.scalars(
            select(ApiToken.id).where(ApiToken.token_hash == access.hash_token(victim))
        ).one()
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=admin).status_code == 204
    assert (
        client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {victim}"}).status_code
        == 401
    )

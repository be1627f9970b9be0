"""Accounts and tokens on a real database, rolled back per test."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.access import service
from insitu.access.models import ApiToken, Role


def test_tokens_are_stored_only_as_hashes(db_session: Session) -> None:
    user = service.create_user(db_session, "alice", Role.steward)
    token = service.issue_token(db_session, user)
    stored = db_session.scalars(select(ApiToken)).all()
    assert len(stored) == 1
    assert stored[0].token_hash == service.hash_token(token)
    assert token not in (stored[0].token_hash, stored[0].prefix)
    principal = service.authenticate_token(db_session, token)
    assert principal is not None
    assert principal.role is Role.steward


def test_user_validation_names_the_problem(db_session: Session) -> None:
    with pytest.raises(service.AccessError, match="role 'king' is not one of"):
        service.create_user(db_session, "bob", "king")
    with pytest.raises(service.AccessError, match="is not valid"):
        service.create_user(db_session, "Bob Smith", "steward")
    service.create_user(db_session, "carol", "auditor")
    with pytest.raises(service.AccessError, match="already exists"):
        service.create_user(db_session, "carol", "auditor")


def test_inactive_user_cannot_authenticate(db_session: Session) -> None:
    user = service.create_user(db_session, "dave", Role.researcher)
    token = service.issue_token(db_session, user)
    user.active = False
    db_session.flush()
    assert service.authenticate_token(db_session, token) is None

"""The guard: an audited change cannot commit without its ledger entry in the same transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from insitu.access.models import Role, User
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest.deid.table import Options
from insitu.ingest.models import BatchStatus, IngestBatch
from insitu.ingest.service import start_batch
from insitu.ledger import service as ledger
from insitu.ledger.guard import UnrecordedChangeError
from insitu.ledger.models import LedgerEntry
from tests.ledger.conftest import TEST_EVENT


def _users(platform: Platform) -> int:
    with session_scope(platform.sessions) as session:
        return session.scalar(select(func.count(User.id))) or 0


def test_an_audited_insert_without_an_event_cannot_commit(platform: Platform) -> None:
    with (
        pytest.raises(UnrecordedChangeError, match="users"),
        session_scope(platform.sessions) as session,
    ):
        session.add(User(name="sneaky", role=Role.admin, active=True))
    assert _users(platform) == 0


def test_the_same_insert_with_its_event_commits(platform: Platform) -> None:
    with session_scope(platform.sessions) as session:
        session.add(User(name="open", role=Role.admin, active=True))
        ledger.record(session, TEST_EVENT, actor="host", subject="user:new")
    assert _users(platform) == 1


def test_audited_updates_and_bulk_statements_are_refused(platform: Platform) -> None:
    with session_scope(platform.sessions) as session:
        from insitu.access import service as access

        access.create_user(session, "bea", Role.researcher)

    def promote() -> None:
        with session_scope(platform.sessions) as session:
            session.scalars(select(User)).one().role = Role.admin

    with pytest.raises(UnrecordedChangeError):
        promote()
    with pytest.raises(UnrecordedChangeError), session_scope(platform.sessions) as session:
        session.execute(update(User).values(active=False))
    with session_scope(platform.sessions) as session:
        user = session.scalars(select(User)).one()
        assert user.role == Role.researcher
        assert user.active


def test_only_the_audited_columns_of_a_batch_need_an_event(platform: Platform) -> None:
    with session_scope(platform.sessions) as session:
        batch_id = start_batch(session, "cli", "SITE", Options.parse("")).id
    with session_scope(platform.sessions) as session:  # running counters: not audited
        batch = session.get(IngestBatch, batch_id)
        assert batch is not None
        batch.ingested = 5

    def complete() -> None:
        with session_scope(platform.sessions) as session:
            batch = session.get(IngestBatch, batch_id)
            assert batch is not None
            batch.status = BatchStatus.completed

    with pytest.raises(UnrecordedChangeError):
        complete()
    with session_scope(platform.sessions) as session:
        batch = session.get(IngestBatch, batch_id)
        assert batch is not None
        assert batch.status == BatchStatus.running
        assert batch.ingested == 5


def test_a_rolled_back_event_does_not_excuse_the_next_transaction(platform: Platform) -> None:
    session = platform.sessions()
    try:
        ledger.record(session, TEST_EVENT, actor="host", subject="x")
        session.rollback()
        session.add(User(name="later", role=Role.admin, active=True))
        with pytest.raises(UnrecordedChangeError):
            session.commit()
        session.rollback()
    finally:
        session.close()
    with session_scope(platform.sessions) as check:
        assert check.scalar(select(func.count(LedgerEntry.index))) == 0
    assert _users(platform) == 0

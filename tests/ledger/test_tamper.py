"""Someone with database access edits the log directly; ``verify`` must notice and say where."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Connection, text

from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.ledger import tree
from insitu.ledger.keys import LogSigner
from insitu.ledger.models import LedgerEntry, LedgerNode
from tests.ledger.conftest import append_events, checkpoint

SIZE = 20


def _verify(platform: Platform, signer: LogSigner, outside: tuple[str, ...] = ()) -> list[str]:
    with session_scope(platform.sessions) as session:
        return ledger.verify(session, signer.parsed_key, outside).problems


def _edit(platform: Platform, change: Callable[[Connection], object]) -> None:
    with platform.engine.begin() as connection:  # straight to the database: no guard, no service
        change(connection)


@pytest.fixture
def log(platform: Platform, signer: LogSigner) -> str:
    append_events(platform, SIZE)
    note = checkpoint(platform, signer)
    assert _verify(platform, signer) == []
    return note


def test_an_updated_row_is_caught(platform: Platform, signer: LogSigner, log: str) -> None:
    _edit(
        platform,
        lambda c: c.execute(
            text("UPDATE ledger_entries SET payload = :p WHERE leaf_index = 11"), {"p": '{"n":99}'}
        ),
    )
    problems = _verify(platform, signer)
    assert any("does not match entries 0..19" in p for p in problems)
    assert any(p.startswith("entry 11 differs") for p in problems)


def test_a_deleted_row_is_caught(platform: Platform, signer: LogSigner, log: str) -> None:
    _edit(platform, lambda c: c.execute(text("DELETE FROM ledger_entries WHERE leaf_index = 4")))
    problems = _verify(platform, signer)
    assert problems[0].startswith("entry 4 is missing")
    assert any("covers 20 entries but the log holds 19" in p for p in problems)


def test_two_swapped_rows_are_caught(platform: Platform, signer: LogSigner, log: str) -> None:
    def swap(connection: Connection) -> None:
        rows = {
            row.leaf_index: row
            for row in connection.execute(
                text("SELECT * FROM ledger_entries WHERE leaf_index IN (3, 8)")
            )
        }
        for target, source in ((3, 8), (8, 3)):
            row = rows[source]
            connection.execute(
                text(
                    "UPDATE ledger_entries SET recorded_at = :t, event_type = :e, actor = :a, "
                    "subject = :s, payload = :p WHERE leaf_index = :i"
                ),
                {
                    "t": row.recorded_at,
                    "e": row.event_type,
                    "a": row.actor,
                    "s": row.subject,
                    "p": row.payload,
                    "i": target,
                },
            )

    _edit(platform, swap)
    problems = _verify(platform, signer)
    assert any(p.startswith("entry 3 differs") for p in problems)
    assert any(p.startswith("entry 8 differs") for p in problems)


def _truncate_and_reappend(platform: Platform, keep: int) -> None:
    """A careful forger: cut the log, rebuild the stored hashes, append a new history."""

    def cut(connection: Connection) -> None:
        connection.execute(text("DELETE FROM ledger_entries WHERE leaf_index >= :k"), {"k": keep})
        connection.execute(text("DELETE FROM ledger_nodes"))

    _edit(platform, cut)
    with session_scope(platform.sessions) as session:
        entries = session.query(LedgerEntry).order_by(LedgerEntry.index).all()
        created, _ = tree.append_nodes(0, {}, [ledger.entry_hash(e) for e in entries])
        for node, value in created:
            session.add(LedgerNode(node_id=node, hash=value))
    append_events(platform, 7, start=keep, tag="forged")


def test_a_truncated_and_reappended_log_is_caught(
    platform: Platform, signer: LogSigner, log: str
) -> None:
    _truncate_and_reappend(platform, keep=15)
    problems = _verify(platform, signer)
    assert any("does not match entries 0..19" in p for p in problems)


def test_a_forger_who_also_resigns_is_caught_by_a_checkpoint_kept_outside(
    platform: Platform, signer: LogSigner, log: str
) -> None:
    _truncate_and_reappend(platform, keep=15)
    _edit(platform, lambda c: c.execute(text("DELETE FROM ledger_checkpoints")))
    checkpoint(platform, signer)
    assert _verify(platform, signer) == []  # self-consistent: only an outside copy can tell
    problems = _verify(platform, signer, outside=(log,))
    assert problems[0] == "checkpoint file 1 (size 20) does not match entries 0..19"


def test_a_forged_checkpoint_is_caught(platform: Platform, signer: LogSigner, log: str) -> None:
    forged = log.replace("\n20\n", "\n19\n", 1)
    _edit(
        platform,
        lambda c: c.execute(text("UPDATE ledger_checkpoints SET note = :n"), {"n": forged}),
    )
    problems = _verify(platform, signer)
    assert any("not validly signed" in p and "forged" in p for p in problems)

"""Appending, proofs and checkpoints on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service as ledger
from insitu.ledger import verifier
from insitu.ledger.keys import LogSigner
from insitu.ledger.models import LedgerEntry
from tests.ledger.conftest import TEST_EVENT, append_events, checkpoint


def _leaf_hashes(platform: Platform) -> list[bytes]:
    with session_scope(platform.sessions) as session:
        return [ledger.entry_hash(e) for e in session.scalars(select(LedgerEntry))]


def test_appends_are_gapless_and_roots_match_a_recomputation(platform: Platform) -> None:
    append_events(platform, 23)
    append_events(platform, 10, start=23)
    leaves = _leaf_hashes(platform)
    with session_scope(platform.sessions) as session:
        assert ledger.tree_size(session) == 33
        indices = list(session.scalars(select(LedgerEntry.index).order_by(LedgerEntry.index)))
        assert indices == list(range(33))
        for size in (0, 1, 7, 16, 33):
            assert ledger.root_hash(session, size) == verifier.root_of(leaves[:size])


def test_proofs_from_the_database_verify(platform: Platform) -> None:
    append_events(platform, 21)
    leaves = _leaf_hashes(platform)
    with session_scope(platform.sessions) as session:
        for size in (1, 5, 8, 21):
            root = verifier.root_of(leaves[:size])
            for index in range(size):
                proof = ledger.inclusion_proof(session, index, size)
                verifier.verify_inclusion(index, size, leaves[index], proof, root)
            for old in range(1, size + 1):
                proof = ledger.consistency_proof(session, old, size)
                old_root = verifier.root_of(leaves[:old])
                verifier.verify_consistency(old, size, old_root, root, proof)
        with pytest.raises(ValueError, match="outside"):
            ledger.inclusion_proof(session, 0, 22)


def test_entries_are_canonical_json_of_every_column(platform: Platform) -> None:
    append_events(platform, 1)
    with session_scope(platform.sessions) as session:
        entry = session.scalars(select(LedgerEntry)).one()
        expected = verifier.canonical_json(
            {
                "index": 0,
                "time": entry.recorded_at,
                "type": "test.event",
                "actor": "user:0",
                "subject": "thing:a0",
                "payload": {"n": 0},
            }
        ).encode()
        assert (
            verifier.entry_leaf(
                entry.index,
                entry.recorded_at,
                entry.event_type,
                entry.actor,
                entry.subject,
                entry.payload,
            )
            == expected
        )


@pytest.mark.parametrize(
    ("payload", "error"),
    [({"x": 1.5}, TypeError), ({"x": object()}, TypeError), ({1: "x"}, TypeError)],
)
def test_bad_payloads_are_refused(
    platform: Platform, payload: dict[object, object], error: type[Exception]
) -> None:
    with session_scope(platform.sessions) as session, pytest.raises(error):
        ledger.record(session, TEST_EVENT, actor="host", subject="x", payload=payload)  # type: ignore[arg-type]


def test_unregistered_event_types_are_refused(platform: Platform) -> None:
    from insitu.ledger.events import EventType

    with session_scope(platform.sessions) as session, pytest.raises(ValueError, match="registered"):
        ledger.record(session, EventType("made.up", "?"), actor="host", subject="x")


def test_checkpoint_round_trips_through_the_signed_note_format(
    platform: Platform, signer: LogSigner
) -> None:
    append_events(platform, 5)
    note = checkpoint(platform, signer)
    parsed, parsed_note = verifier.open_checkpoint(note, signer.parsed_key)
    assert parsed.origin == signer.origin
    assert parsed.size == 5
    assert parsed.root == verifier.root_of(_leaf_hashes(platform))
    assert parsed_note.render() == note
    lines = note.split("\n")
    assert lines[0] == signer.origin
    assert lines[1] == "5"
    assert lines[3] == ""
    assert lines[4].startswith("\u2014 " + signer.origin + " ")
    forged = note.replace("\n5\n", "\n4\n", 1)
    with pytest.raises(verifier.VerificationError, match="not validly signed"):
        verifier.open_checkpoint(forged, signer.parsed_key)


def test_concurrent_appends_stay_gapless(platform: Platform) -> None:
    """Two writers at once: PostgreSQL serialises them with an advisory lock; SQLite has a
    single writer. Either way every index is used exactly once."""
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for _ in range(5):
                append_events(platform, 3, tag=tag)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with session_scope(platform.sessions) as session:
        indices = list(session.scalars(select(LedgerEntry.index).order_by(LedgerEntry.index)))
    assert indices == list(range(30))
    leaves = _leaf_hashes(platform)
    with session_scope(platform.sessions) as session:
        assert ledger.root_hash(session) == verifier.root_of(leaves)

"""Ledger fixtures: a log key and a helper that appends test events."""

from __future__ import annotations

import pytest

from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.ledger.keys import LogSigner, ensure_log_key

TEST_EVENT = events.register("test.event", "an event appended by the test suite")


@pytest.fixture
def signer(platform: Platform) -> LogSigner:
    return ensure_log_key(platform.settings)


def append_events(platform: Platform, count: int, start: int = 0, tag: str = "a") -> None:
    """Append ``count`` test events, in batches of up to 7 (so batches straddle subtrees)."""
    with session_scope(platform.sessions) as session:
        batch: list[ledger.Event] = []
        for number in range(start, start + count):
            batch.append(
                ledger.Event(
                    TEST_EVENT, f"user:{number % 3}", f"thing:{tag}{number}", {"n": number}
                )
            )
            if len(batch) == 7:
                ledger.record_many(session, batch)
                batch = []
        if batch:
            ledger.record_many(session, batch)


def checkpoint(platform: Platform, signer: LogSigner) -> str:
    with session_scope(platform.sessions) as session:
        return ledger.create_checkpoint(session, signer).note

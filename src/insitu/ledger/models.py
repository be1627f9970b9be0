"""Ledger tables: entries (the leaves), stored subtree hashes, checkpoints and witnesses.

Entries are append-only: the service never updates or deletes them, and every stored column
is inside the entry's leaf hash (``verifier.entry_leaf``). ``recorded_at`` is kept as the exact
text that was hashed, not as a timestamp type a database might round or re-zone.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from insitu.db import Base, UTCDateTime, utcnow


class LedgerEntry(Base):
    """One event: leaf ``index`` of the Merkle tree."""

    __tablename__ = "ledger_entries"

    index: Mapped[int] = mapped_column(
        "leaf_index", BigInteger, primary_key=True, autoincrement=False
    )
    recorded_at: Mapped[str] = mapped_column(String(32))
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)


class LedgerNode(Base):
    """The hash of one perfect subtree: ``2**level`` leaves from ``index * 2**level``.

    Kept so that a proof needs O(log n) reads; ``verify`` never trusts them, it recomputes.
    """

    __tablename__ = "ledger_nodes"

    node_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerCheckpoint(Base):
    """A signed tree head (C2SP tlog-checkpoint) with the cosignatures it has gathered."""

    __tablename__ = "ledger_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Witness(Base):
    """A registered witness: a partner whose cosignatures the platform accepts."""

    __tablename__ = "ledger_witnesses"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    verifier_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Cosignature(Base):
    """One witness's cosignature of one checkpoint."""

    __tablename__ = "ledger_cosignatures"
    __table_args__ = (UniqueConstraint("checkpoint_id", "witness_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("ledger_checkpoints.id"), index=True)
    witness_id: Mapped[int] = mapped_column(ForeignKey("ledger_witnesses.id"))
    signature: Mapped[bytes] = mapped_column(LargeBinary(80))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

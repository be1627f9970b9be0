"""Ledger service: append events, serve proofs, sign checkpoints, verify, witnesses.

Service functions never commit: an event is appended inside the caller's transaction, next to
the change it records, and commits or rolls back with it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from insitu.ledger import tree, verifier
from insitu.ledger.events import EVENT_TYPES, LEDGER_WITNESS_REGISTERED, EventType
from insitu.ledger.guard import AUDIT_ALL
from insitu.ledger.keys import LogSigner
from insitu.ledger.models import Cosignature, LedgerCheckpoint, LedgerEntry, LedgerNode, Witness
from insitu.ledger.verifier import (
    Checkpoint,
    VerificationError,
    VerifierKey,
    canonical_json,
    entry_leaf,
    leaf_hash,
)

ADVISORY_LOCK_KEY = 0x1E_D6E7  # PostgreSQL: serialises appends across connections
__all__ = ["AUDIT_ALL", "HOST_ACTOR", "Event", "record", "record_many", "user_actor"]
HOST_ACTOR = "host"  # commands run on the platform host itself, by its operator
VERIFY_BATCH = 20_000


@dataclass(frozen=True)
class Event:
    """One event to append."""

    event_type: EventType
    actor: str
    subject: str
    payload: Mapping[str, Any] = field(default_factory=dict)


def user_actor(user_id: int) -> str:
    """The pseudonymous actor id of an account (never its name)."""
    return f"user:{user_id}"


def _check_payload(value: Any, where: str = "payload") -> None:
    if isinstance(value, float):
        raise TypeError(f"{where}: floats are not allowed in ledger payloads; use int or str")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings")
            _check_payload(item, f"{where}.{key}")
    elif isinstance(value, list):
        for position, item in enumerate(value):
            _check_payload(item, f"{where}[{position}]")
    elif value is not None and not isinstance(value, str | int | bool):
        raise TypeError(f"{where}: {type(value).__name__} cannot go into a ledger payload")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lock(session: Session) -> None:
    """Serialise appends: the advisory lock on PostgreSQL; on SQLite, take the single write
    lock before reading the size (a no-op UPDATE begins the write transaction, and SQLite
    holds that lock until commit, so no other writer can read the same size)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    elif dialect == "sqlite":
        session.execute(text("UPDATE ledger_entries SET leaf_index = leaf_index WHERE 0 = 1"))


def tree_size(session: Session) -> int:
    """How many entries the log holds."""
    last = session.scalar(select(func.max(LedgerEntry.index)))
    return 0 if last is None else int(last) + 1


def _fetch_nodes(session: Session, ids: set[int]) -> dict[int, bytes]:
    if not ids:
        return {}
    rows = session.execute(
        select(LedgerNode.node_id, LedgerNode.hash).where(LedgerNode.node_id.in_(ids))
    ).all()
    found = {int(node): bytes(value) for node, value in rows}
    missing = ids - found.keys()
    if missing:
        raise VerificationError(f"{len(missing)} stored subtree hashes are missing")
    return found


def record_many(session: Session, events: Sequence[Event]) -> list[int]:
    """Append events in order, in the caller's transaction; returns their leaf indices."""
    for item in events:
        if item.event_type.name not in EVENT_TYPES:
            raise ValueError(f"event type {item.event_type.name!r} is not registered")
        _check_payload(dict(item.payload))
    _lock(session)
    size = tree_size(session)
    recorded_at = _now()
    rows: list[dict[str, Any]] = []
    leaves: list[bytes] = []
    for offset, item in enumerate(events):
        index = size + offset
        payload = canonical_json(dict(item.payload))
        name = item.event_type.name
        rows.append(
            {
                "index": index,
                "recorded_at": recorded_at,
                "event_type": name,
                "actor": item.actor,
                "subject": item.subject,
                "payload": payload,
            }
        )
        leaves.append(
            leaf_hash(entry_leaf(index, recorded_at, name, item.actor, item.subject, payload))
        )
    frontier_ids = {tree.node_id(level, index) for level, index in tree.frontier(size)}
    created, _ = tree.append_nodes(size, _fetch_nodes(session, frontier_ids), leaves)
    if rows:
        session.execute(insert(LedgerEntry), rows)
        session.execute(insert(LedgerNode), [{"node_id": n, "hash": h} for n, h in created])
    return [int(row["index"]) for row in rows]


def record(
    session: Session,
    event_type: EventType,
    *,
    actor: str,
    subject: str,
    payload: Mapping[str, Any] | None = None,
) -> int:
    """Append one event in the caller's transaction; returns its leaf index."""
    return record_many(session, [Event(event_type, actor, subject, payload or {})])[0]


def root_hash(session: Session, size: int | None = None) -> bytes:
    """The root hash of the first ``size`` entries (all of them by default)."""
    size = tree_size(session) if size is None else size
    return tree.hashes_for([(0, size)], lambda ids: _fetch_nodes(session, ids))[0]


def _check_size(session: Session, size: int) -> None:
    current = tree_size(session)
    if size < 0 or size > current:
        raise ValueError(f"tree size {size} is outside 0..{current}")


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
    _check_size(session, size)
    if not 0 <= index < size:
        raise ValueError(f"entry {index} is not in a tree of size {size}")
    ranges = tree.inclusion_ranges(index, 0, size)
    return tree.hashes_for(ranges, lambda ids: _fetch_nodes(session, ids))


def consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 consistency proof from the tree of ``old_size`` to the one of ``new_size``."""
    _check_size(session, new_size)
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    ranges = tree.consistency_ranges(old_size, new_size)
    return tree.hashes_for(ranges, lambda ids: _fetch_nodes(session, ids))


def entry_hash(entry: LedgerEntry) -> bytes:
    """The leaf hash of a stored entry, recomputed from its columns."""
    return leaf_hash(
        entry_leaf(
            entry.index,
            entry.recorded_at,
            entry.event_type,
            entry.actor,
            entry.subject,
            entry.payload,
        )
    )


def list_entries(
    session: Session, start: int, limit: int, type_prefix: str | None = None
) -> list[LedgerEntry]:
    """Entries from ``start`` on, in order (only types starting with ``type_prefix``)."""
    statement = select(LedgerEntry).where(LedgerEntry.index >= start)
    if type_prefix:
        statement = statement.where(LedgerEntry.event_type.startswith(type_prefix, autoescape=True))
    return list(session.scalars(statement.order_by(LedgerEntry.index).limit(limit)))


def entries_about(session: Session, subject: str, limit: int = 200) -> list[LedgerEntry]:
    """The newest entries about one subject (a dataset's history, say)."""
    statement = select(LedgerEntry).where(LedgerEntry.subject == subject)
    return list(session.scalars(statement.order_by(LedgerEntry.index.desc()).limit(limit)))


def entry_as_dict(entry: LedgerEntry) -> dict[str, Any]:
    """An entry as the API and the bundle show it (the payload parsed)."""
    return {
        "index": entry.index,
        "time": entry.recorded_at,
        "type": entry.event_type,
        "actor": entry.actor,
        "subject": entry.subject,
        "payload": json.loads(entry.payload),
    }


# -- checkpoints and witnesses -----------------------------------------------------------------


def create_checkpoint(session: Session, signer: LogSigner) -> LedgerCheckpoint:
    """Sign the current tree head and keep it."""
    _lock(session)
    size = tree_size(session)
    checkpoint = Checkpoint(signer.origin, size, root_hash(session, size))
    note = verifier.sign_note(checkpoint.text(), signer.origin, signer.private_key)
    row = LedgerCheckpoint(tree_size=size, root_hash=checkpoint.root, note=note.render())
    session.add(row)
    session.flush()
    return row


def latest_checkpoint(session: Session) -> LedgerCheckpoint | None:
    """The signed tree head with the largest size (the newest among equals)."""
    return session.scalars(
        select(LedgerCheckpoint)
        .order_by(LedgerCheckpoint.tree_size.desc(), LedgerCheckpoint.id.desc())
        .limit(1)
    ).first()


def witnesses(session: Session) -> list[Witness]:
    """Registered witnesses."""
    return list(session.scalars(select(Witness).order_by(Witness.name)))


def register_witness(session: Session, key: str, actor: str) -> Witness:
    """Register a witness's cosignature key (a C2SP vkey with algorithm 0x04)."""
    parsed = verifier.parse_verifier_key(key)
    if parsed.algorithm != verifier.ED25519_COSIGNATURE:
        raise ValueError("a witness key must be a cosignature key (vkey algorithm 0x04)")
    if session.scalar(select(Witness).where(Witness.name == parsed.name)) is not None:
        raise ValueError(f"a witness named {parsed.name!r} is already registered")
    witness = Witness(name=parsed.name, verifier_key=key.strip())
    session.add(witness)
    record(
        session,
        LEDGER_WITNESS_REGISTERED,
        actor=actor,
        subject=f"witness:{parsed.name}",
        payload={"key_id": parsed.key_id.hex()},
    )
    session.flush()
    return witness


def add_cosignature(session: Session, cosigned_note: str) -> list[str]:
    """Accept the registered witnesses' cosignatures on a checkpoint we signed.

    Returns the witnesses whose cosignatures were new. Raises ValueError when the note is not
    one of our checkpoints or carries no valid cosignature of a registered witness.
    """
    note = verifier.parse_note(cosigned_note)
    row = session.scalars(
        select(LedgerCheckpoint).where(
            LedgerCheckpoint.note.startswith(note.text + "\n", autoescape=True)
        )
    ).first()
    if row is None:
        raise ValueError("not a checkpoint of this log: nothing to cosign")
    known = {w.name: w for w in witnesses(session)}
    accepted: list[str] = []
    valid = 0
    for name, blob in note.signatures:
        witness = known.get(name)
        if witness is None:
            continue
        key = verifier.parse_verifier_key(witness.verifier_key)
        if not verifier.signature_valid(note, blob, key):
            raise ValueError(f"the cosignature of {name!r} does not verify with its key")
        valid += 1
        exists = session.scalar(
            select(Cosignature).where(
                Cosignature.checkpoint_id == row.id, Cosignature.witness_id == witness.id
            )
        )
        if exists is None:
            session.add(
                Cosignature(
                    checkpoint_id=row.id,
                    witness_id=witness.id,
                    signature=blob,
                    timestamp=int.from_bytes(blob[4:12], "big"),
                )
            )
            accepted.append(name)
    if not valid:
        raise ValueError(
            "no cosignature of a registered witness on this checkpoint: an admin registers "
            "witness keys with 'insitu ledger add-witness'"
        )
    session.flush()
    return accepted


def cosigners(session: Session, row: LedgerCheckpoint) -> list[str]:
    """The witnesses that cosigned a checkpoint."""
    return list(
        session.scalars(
            select(Witness.name)
            .join(Cosignature, Cosignature.witness_id == Witness.id)
            .where(Cosignature.checkpoint_id == row.id)
            .order_by(Witness.name)
        )
    )


def checkpoint_with_cosignatures(session: Session, row: LedgerCheckpoint) -> str:
    """A stored checkpoint note with its accepted cosignature lines appended."""
    note = verifier.parse_note(row.note)
    rows = session.execute(
        select(Witness.name, Cosignature.signature)
        .join(Witness, Witness.id == Cosignature.witness_id)
        .where(Cosignature.checkpoint_id == row.id)
        .order_by(Witness.name)
    ).all()
    note.signatures.extend((name, bytes(blob)) for name, blob in rows)
    return note.render()


# -- verification and export ------------------------------------------------------------------


@dataclass
class VerifyReport:
    """What ``verify`` checked and found."""

    entries: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong."""
        return not self.problems


def _iter_entry_rows(session: Session) -> Iterator[tuple[int, str, str, str, str, str]]:
    statement = select(
        LedgerEntry.index,
        LedgerEntry.recorded_at,
        LedgerEntry.event_type,
        LedgerEntry.actor,
        LedgerEntry.subject,
        LedgerEntry.payload,
    ).order_by(LedgerEntry.index)
    result = session.execute(statement.execution_options(yield_per=VERIFY_BATCH))
    for row in result:
        yield row[0], row[1], row[2], row[3], row[4], row[5]


def verify(
    session: Session,
    log_key: VerifierKey,
    outside_checkpoints: Sequence[str] = (),
    on_progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Recompute the tree from the stored entries; check it against every signed checkpoint.

    ``outside_checkpoints`` are notes kept elsewhere (by an auditor or a witness): each must be
    validly signed and the log must still hold exactly what it covered.
    """
    started = time.perf_counter()
    report = VerifyReport()
    wanted: dict[int, list[tuple[str, bytes]]] = {}
    stored = list(session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.id)))
    for label, raw in [(f"stored checkpoint #{c.id}", c.note) for c in stored] + [
        (f"checkpoint file {n + 1}", raw) for n, raw in enumerate(outside_checkpoints)
    ]:
        try:
            checkpoint, _ = verifier.open_checkpoint(raw, log_key)
        except VerificationError as exc:
            report.problems.append(f"{label}: {exc} (forged or damaged)")
            continue
        wanted.setdefault(checkpoint.size, []).append((label, checkpoint.root))
        report.checkpoints += 1
    if not stored:
        report.problems.append("no signed checkpoint yet: run 'insitu ledger checkpoint'")
    builder = verifier.RootBuilder()
    first_gap: str | None = None
    for index, recorded_at, event_type, actor, subject, payload in _iter_entry_rows(session):
        if index != builder.size and first_gap is None:
            first_gap = (
                f"entry {builder.size} is missing (the next stored entry is {index}): "
                "entries were deleted or inserted"
            )
        builder.add(leaf_hash(entry_leaf(index, recorded_at, event_type, actor, subject, payload)))
        if on_progress is not None and builder.size % VERIFY_BATCH == 0:
            on_progress(VERIFY_BATCH)
        for label, root in wanted.get(builder.size, ()):
            if root != builder.root():
                report.problems.append(
                    f"{label} (size {builder.size}) does not match entries 0..{builder.size - 1}"
                )
    report.entries = builder.size
    if first_gap:
        report.problems.insert(0, first_gap)
    for size, labels in wanted.items():
        if size > builder.size:
            report.problems.extend(
                f"{label} covers {size} entries but the log holds {builder.size}: "
                "entries were removed"
                for label, _ in labels
            )
    if any("does not match" in p for p in report.problems):
        report.problems.extend(_locate_changes(session))
    report.seconds = time.perf_counter() - started
    return report


def _locate_changes(session: Session) -> list[str]:
    """Which entries no longer hash to the leaf stored when they were appended."""
    changed: list[str] = []
    for row in _iter_entry_rows(session):
        stored = session.get(LedgerNode, tree.node_id(0, row[0]))
        if stored is None or bytes(stored.hash) != leaf_hash(entry_leaf(*row)):
            changed.append(f"entry {row[0]} differs from what was appended at that index")
            if len(changed) >= 10:
                changed.append("… (first 10 shown)")
                break
    if not changed:
        changed.append(
            "every entry matches its stored leaf hash, so those were rewritten too: "
            "compare with a checkpoint kept outside the platform (verify --checkpoint)"
        )
    return changed


def export_bundle(session: Session, signer: LogSigner) -> dict[str, Any]:
    """Everything an offline verifier needs: entries, signed checkpoints, keys."""
    entries = [list(row) for row in _iter_entry_rows(session)]
    checkpoints = [
        checkpoint_with_cosignatures(session, row)
        for row in session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.id))
    ]
    return {
        "format": verifier.BUNDLE_FORMAT,
        "log_key": signer.verifier_key,
        "witness_keys": [w.verifier_key for w in witnesses(session)],
        "checkpoints": checkpoints,
        "entries": entries,
    }

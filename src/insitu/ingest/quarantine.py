"""The quarantine at volume: stewards list it by series and by reason, release or delete in
bulk (one ledger entry per decision), and a retention setting expires undecided instances.

Functions here never commit; the caller owns the transaction. A deletion returns the blob
digests that no row references any more: the caller deletes them after its commit, so a
failed commit never leaves a row pointing at a deleted blob.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from insitu.catalog import service as catalog
from insitu.catalog.models import Instance
from insitu.db import utcnow
from insitu.ingest.models import QuarantinedInstance
from insitu.ingest.processor import QUARANTINE_CODES, catalog_attributes
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.storage.protocol import BlobStore

QUARANTINE_RELEASED = events.register(
    "ingest.quarantine.released",
    "a steward released quarantined instances into the catalogue: count, reasons, UID hash",
)
QUARANTINE_DELETED = events.register(
    "ingest.quarantine.deleted",
    "a steward deleted quarantined instances: count, reasons, UID hash",
)
QUARANTINE_EXPIRED = events.register(
    "ingest.quarantine.expired",
    "undecided quarantined instances past the retention period were deleted",
)
MAX_PER_DECISION = 10_000


class Decision(enum.StrEnum):
    """What a steward does with quarantined instances."""

    release = "release"
    delete = "delete"


class QuarantineError(ValueError):
    """A decision that cannot be carried out; the message says why and what to do."""


@dataclass(frozen=True)
class Selection:
    """Which quarantined instances: every given criterion must match (at least one given)."""

    reason_code: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uids: Sequence[str] = ()
    batch_id: int | None = None

    def check(self) -> None:
        """Refuse an empty selection and an unknown reason code."""
        if not (
            self.reason_code or self.series_instance_uid or self.sop_instance_uids or self.batch_id
        ):
            raise QuarantineError(
                "say which instances: a reason code, a series, a batch or SOP Instance UIDs "
                "(a decision on the whole quarantine at once is refused)"
            )
        if self.reason_code is not None and self.reason_code not in QUARANTINE_CODES:
            raise QuarantineError(
                f"unknown reason code {self.reason_code!r}; known: {', '.join(QUARANTINE_CODES)}"
            )

    def where(self, query: Select[Any]) -> Select[Any]:
        """Add this selection's filters to a query on QuarantinedInstance."""
        if self.reason_code:
            query = query.where(QuarantinedInstance.reason_code == self.reason_code)
        if self.series_instance_uid:
            query = query.where(QuarantinedInstance.series_instance_uid == self.series_instance_uid)
        if self.sop_instance_uids:
            query = query.where(
                QuarantinedInstance.sop_instance_uid.in_(list(self.sop_instance_uids))
            )
        if self.batch_id:
            query = query.where(QuarantinedInstance.batch_id == self.batch_id)
        return query


@dataclass
class Outcome:
    """What a decision did; ``unreferenced`` blobs are the caller's to delete after commit."""

    decision: str
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    unreferenced: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON answer of the API and the CLI."""
        return {"decision": self.decision, "count": self.count, "reasons": dict(self.reasons)}


def held(
    attributes: dict[str, Any],
    *,
    site: str,
    blob: tuple[str, int],
    reason: tuple[str, str],
    deid_options: str,
    batch_id: int | None,
) -> QuarantinedInstance:
    """A new quarantine row for a de-identified instance (``catalog_attributes``), its blob
    (digest, size) and its reason (code, text)."""
    return QuarantinedInstance(
        sop_instance_uid=attributes["sop_instance_uid"],
        series_instance_uid=attributes["series_instance_uid"],
        study_instance_uid=attributes["study_instance_uid"],
        subject_pseudonym=attributes["subject_pseudonym"],
        site=site,
        modality=attributes["modality"],
        sop_class_uid=attributes["sop_class_uid"],
        blob_digest=blob[0],
        size=blob[1],
        reason_code=reason[0],
        reason=reason[1],
        deid_options=deid_options,
        batch_id=batch_id,
    )


def item(q: QuarantinedInstance) -> dict[str, Any]:
    """One quarantined instance as the API shows it."""
    return {
        "sop_instance_uid": q.sop_instance_uid,
        "series_instance_uid": q.series_instance_uid,
        "study_instance_uid": q.study_instance_uid,
        "subject": q.subject_pseudonym,
        "site": q.site,
        "modality": q.modality,
        "sop_class_uid": q.sop_class_uid,
        "size": q.size,
        "reason": q.reason,
        "reason_code": q.reason_code,
        "batch_id": q.batch_id,
        "created_at": q.created_at.isoformat(),
    }


def list_items(
    session: Session, selection: Selection | None = None, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Quarantined instances, newest first, optionally filtered."""
    query = select(QuarantinedInstance)
    if selection is not None:
        query = selection.where(query)
    rows = session.scalars(
        query.order_by(QuarantinedInstance.id.desc()).limit(limit).offset(offset)
    )
    return [item(q) for q in rows]


def summary(session: Session, limit: int = 500) -> dict[str, Any]:
    """The quarantine grouped by reason and by series: what a steward decides on in bulk."""
    by_reason = session.execute(
        select(QuarantinedInstance.reason_code, func.count()).group_by(
            QuarantinedInstance.reason_code
        )
    ).all()
    by_series = session.execute(
        select(
            QuarantinedInstance.series_instance_uid,
            QuarantinedInstance.reason_code,
            func.min(QuarantinedInstance.subject_pseudonym),
            func.min(QuarantinedInstance.modality),
            func.count(),
            func.min(QuarantinedInstance.created_at),
            func.min(QuarantinedInstance.sop_instance_uid),
        )
        .group_by(QuarantinedInstance.series_instance_uid, QuarantinedInstance.reason_code)
        .order_by(func.min(QuarantinedInstance.created_at))
        .limit(limit)
    ).all()
    return {
        "total": sum(int(n) for _, n in by_reason),
        "reasons": [
            {"reason_code": code, "meaning": QUARANTINE_CODES.get(code, code), "count": int(n)}
            for code, n in sorted(by_reason)
        ],
        "series": [
            {
                "series_instance_uid": series,
                "reason_code": code,
                "subject": subject,
                "modality": modality,
                "count": int(n),
                "oldest": oldest.isoformat(),
                "first_sop_instance_uid": first,
            }
            for series, code, subject, modality, n, oldest, first in by_series
        ],
    }


def blob_of(session: Session, sop_instance_uid: str) -> QuarantinedInstance | None:
    """One quarantined instance by its SOP Instance UID."""
    return session.scalars(
        select(QuarantinedInstance).where(QuarantinedInstance.sop_instance_uid == sop_instance_uid)
    ).first()


def _uid_hash(uids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(uids)).encode()).hexdigest()


def unreferenced_blobs(session: Session, digests: set[str]) -> list[str]:
    """Those of ``digests`` that no catalogued or quarantined instance uses any more."""
    return sorted(digests - _still_referenced(session, digests))


def _still_referenced(session: Session, digests: set[str]) -> set[str]:
    if not digests:
        return set()
    used = set(
        session.scalars(select(Instance.blob_digest).where(Instance.blob_digest.in_(digests)))
    )
    used |= set(
        session.scalars(
            select(QuarantinedInstance.blob_digest).where(
                QuarantinedInstance.blob_digest.in_(digests)
            )
        )
    )
    return used


def _remove(session: Session, rows: Sequence[QuarantinedInstance], outcome: Outcome) -> None:
    digests = {q.blob_digest for q in rows}
    for q in rows:
        session.delete(q)
    session.flush()
    outcome.unreferenced = unreferenced_blobs(session, digests)


def decide(
    session: Session,
    store: BlobStore,
    selection: Selection,
    decision: Decision,
    actor: str,
) -> Outcome:
    """Release (catalogue) or delete the selected quarantined instances, with a ledger entry."""
    selection.check()
    rows = list(
        session.scalars(
            selection.where(select(QuarantinedInstance))
            .order_by(QuarantinedInstance.id)
            .limit(MAX_PER_DECISION + 1)
        )
    )
    if not rows:
        raise QuarantineError("no quarantined instance matches; list them with the same filters")
    if len(rows) > MAX_PER_DECISION:
        raise QuarantineError(
            f"more than {MAX_PER_DECISION} instances match: decide by series or batch as well"
        )
    outcome = Outcome(decision.value, len(rows), Counter(q.reason_code for q in rows))
    if decision == Decision.release:
        _release(session, store, rows)
        for q in rows:
            session.delete(q)
        event = QUARANTINE_RELEASED
    else:
        _remove(session, rows, outcome)
        event = QUARANTINE_DELETED
    ledger.record(
        session,
        event,
        actor=actor,
        subject="quarantine",
        payload={
            "count": outcome.count,
            "reasons": dict(sorted(outcome.reasons.items())),
            "sop_instance_uids_sha256": _uid_hash([q.sop_instance_uid for q in rows]),
        },
    )
    return outcome


def _release(session: Session, store: BlobStore, rows: Sequence[QuarantinedInstance]) -> None:
    """Catalogue released instances from their stored (already de-identified) blobs."""
    by_site: dict[str, list[dict[str, Any]]] = {}
    already = catalog.existing_instances(session, [q.sop_instance_uid for q in rows])
    for q in rows:
        if q.sop_instance_uid in already:
            continue
        ds = pydicom.dcmread(io.BytesIO(store.get(q.blob_digest)), stop_before_pixels=True)
        attributes = catalog_attributes(ds, str(ds.file_meta.TransferSyntaxUID))
        by_site.setdefault(q.site, []).append(
            {
                **attributes,
                "blob_digest": q.blob_digest,
                "size": q.size,
                "deid_options": q.deid_options,
            }
        )
    for site, items in by_site.items():
        catalog.register_instances(session, items, site, None)


def expire(session: Session, days: int, actor: str, now: dt.datetime | None = None) -> Outcome:
    """Delete undecided instances quarantined more than ``days`` ago (0: nothing expires)."""
    outcome = Outcome("expire")
    if days <= 0:
        return outcome
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    rows = list(
        session.scalars(select(QuarantinedInstance).where(QuarantinedInstance.created_at < cutoff))
    )
    if not rows:
        return outcome
    outcome.count = len(rows)
    outcome.reasons = Counter(q.reason_code for q in rows)
    uids = [q.sop_instance_uid for q in rows]
    _remove(session, rows, outcome)
    ledger.record(
        session,
        QUARANTINE_EXPIRED,
        actor=actor,
        subject="quarantine",
        payload={
            "count": outcome.count,
            "retention_days": days,
            "reasons": dict(sorted(outcome.reasons.items())),
            "sop_instance_uids_sha256": _uid_hash(uids),
        },
    )
    return outcome


def delete_blobs(store: BlobStore, digests: Sequence[str]) -> None:
    """Delete blobs no row references (after the decision's transaction committed)."""
    for digest in digests:
        store.delete(digest)

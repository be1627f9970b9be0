"""Access requests: a user asks to use a dataset, stating a purpose; a steward approves
(granting the use) or refuses with a reason. Reached through ``datasets.service``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.datasets import service
from insitu.datasets.models import AccessRequest, Dataset, DatasetState, RequestState
from insitu.db import utcnow
from insitu.ledger import service as ledger


def request_access(session: Session, dataset: Dataset, user_id: int, purpose: str) -> AccessRequest:
    """Ask to use a dataset, stating the purpose (one pending request per user and version)."""
    if not purpose.strip():
        raise service.DatasetError("say what you will use the dataset for (--purpose)")
    if dataset.state in (DatasetState.draft, DatasetState.invalidated):
        raise service.StateConflictError(
            f"{dataset.name} is {dataset.state.value}: it cannot be requested"
        )
    pending = session.scalar(
        select(AccessRequest.id).where(
            AccessRequest.dataset_id == dataset.id,
            AccessRequest.user_id == user_id,
            AccessRequest.state == RequestState.pending,
        )
    )
    if pending is not None:
        raise service.StateConflictError(
            f"you already asked for {dataset.name} (request {pending})"
        )
    row = AccessRequest(dataset_id=dataset.id, user_id=user_id, purpose=purpose.strip())
    session.add(row)
    session.flush()
    ledger.record(
        session,
        service.DATASET_REQUESTED,
        actor=ledger.user_actor(user_id),
        subject=service.subject_of(dataset),
        payload={"request": row.id},
    )
    return row


def requests_of(session: Session, dataset: Dataset) -> list[AccessRequest]:
    """A dataset version's access requests, newest first."""
    return list(
        session.scalars(
            select(AccessRequest)
            .where(AccessRequest.dataset_id == dataset.id)
            .order_by(AccessRequest.id.desc())
        )
    )


def decide_request(
    session: Session,
    dataset: Dataset,
    request_id: int,
    actor_id: int,
    *,
    approve: bool,
    note: str = "",
    until: dt.datetime | None = None,
) -> AccessRequest:
    """Approve (granting the use, optionally until a date) or refuse a pending request."""
    service.require_steward(session, dataset, actor_id)
    row = session.get(AccessRequest, request_id)
    if row is None or row.dataset_id != dataset.id:
        raise service.DatasetError(f"no request {request_id} for {dataset.name}")
    if row.state != RequestState.pending:
        raise service.StateConflictError(f"request {request_id} was {row.state.value} already")
    if not approve and not note.strip():
        raise service.DatasetError("refusing a request needs a reason for the requester")
    row.state = RequestState.approved if approve else RequestState.refused
    row.decided_by = actor_id
    row.decided_at = utcnow()
    row.decision_note = note.strip()
    ledger.record(
        session,
        service.DATASET_REQUEST_DECIDED,
        actor=ledger.user_actor(actor_id),
        subject=service.subject_of(dataset),
        payload={"request": row.id, "decision": row.state.value},
    )
    if approve:
        service.grant(session, dataset, actor_id, user_id=row.user_id, until=until)
    return row

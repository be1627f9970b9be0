"""Subject withdrawal: a subject withdrew consent, so their data leave every dataset and the
catalogue, and their blobs are deleted once nothing references them.

In one transaction (``withdraw_subject``):
- every released or published version holding the subject gets a new version without them,
  released (and published, if the old one was) at once, with the old version's live grants
  and terms acceptances carried over, so that users keep working on the new version;
- the old versions are invalidated with the reason "withdrawal";
- drafts simply lose the subject's series;
- no dataset version keeps a reference to the subject's series (invalidated ones included),
  and the subject leaves the catalogue;
- each step is a ledger entry; the ledger names the subject only by a SHA-256 of its
  pseudonym, since the ledger is public.

After the commit (``collect_blobs``): the views of the invalidated versions are removed (their
hard links would keep the bytes alive) and blobs that no catalogue entry references any more
are deleted, with a ledger entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from insitu.catalog import service as catalog
from insitu.datasets import service
from insitu.datasets.models import (
    Dataset,
    DatasetSeries,
    DatasetState,
    TermsAcceptance,
)
from insitu.datasets.pids import Publication
from insitu.datasets.view import remove_view
from insitu.db import utcnow
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.storage.protocol import BlobStore

WITHDRAWAL_REASON = "withdrawal"
DATASET_SUBJECT_WITHDRAWN = events.register(
    "dataset.subject_withdrawn", "a withdrawn subject's series left a dataset version"
)
CATALOG_SUBJECT_WITHDRAWN = events.register(
    "catalog.subject_withdrawn", "a subject who withdrew consent left the catalogue"
)
STORAGE_BLOBS_DELETED = events.register(
    "storage.blobs_deleted", "blobs that nothing references any more were deleted"
)


@dataclass
class Withdrawal:
    """What a withdrawal changed; ``digests`` are the blobs to collect after the commit."""

    subject_sha256: str
    instances: int = 0
    new_versions: list[tuple[str, int]] = field(default_factory=list)
    invalidated: list[tuple[str, int]] = field(default_factory=list)
    drafts: list[tuple[str, int]] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    emptied: list[tuple[str, int]] = field(default_factory=list)
    """Versions that held only this subject: invalidated, with no new version."""
    held: list[tuple[str, int]] = field(default_factory=list)
    """Every version that held the subject: none of their views may survive."""


def subject_digest(pseudonym: str) -> str:
    """How the public ledger names a subject."""
    return hashlib.sha256(pseudonym.encode()).hexdigest()


def _carry_over_use(session: Session, old: Dataset, new: Dataset, actor_id: int) -> None:
    """Live grants and terms acceptances of the old version hold for the new one (same terms,
    same content less one subject), each written to the ledger as carried over."""
    now = utcnow()
    for grant in service.grants_of(session, old):
        if grant.revoked_at is None and (grant.until is None or grant.until > now):
            service.grant(
                session,
                new,
                actor_id,
                user_id=grant.user_id,
                project_id=grant.project_id,
                until=grant.until,
            )
    accepted = session.scalars(
        select(TermsAcceptance.user_id).where(TermsAcceptance.dataset_id == old.id)
    ).all()
    for user_id in accepted:
        session.add(TermsAcceptance(dataset_id=new.id, user_id=user_id))
        ledger.record(
            session,
            service.DATASET_TERMS_ACCEPTED,
            actor=ledger.user_actor(actor_id),
            subject=f"dataset:{new.id}",
            payload={"user": ledger.user_actor(user_id), "carried_over_from": f"dataset:{old.id}"},
        )


def withdraw_subject(
    session: Session, pseudonym: str, actor_id: int, publication: Publication
) -> Withdrawal:
    """Remove a subject from every dataset version and from the catalogue (see the module)."""
    series_ids = catalog.subject_series(session, pseudonym)
    if series_ids is None:
        raise service.DatasetError(
            f"no subject {pseudonym!r} in the catalogue: give the pseudonym as it appears in "
            "manifest.csv or `insitu catalog subjects`"
        )
    result = Withdrawal(subject_sha256=subject_digest(pseudonym))
    affected = list(
        session.scalars(
            select(Dataset)
            .where(
                Dataset.id.in_(
                    select(DatasetSeries.dataset_id).where(DatasetSeries.series_id.in_(series_ids))
                )
            )
            .order_by(Dataset.id)
        )
    )
    not_yours = [
        f"{d.name} v{d.version}" for d in affected if not service.is_steward(session, d, actor_id)
    ]
    if not_yours:
        raise service.NotStewardError(
            f"the subject is in datasets you do not steward: {', '.join(not_yours)}; "
            "their stewards must be added first (or withdraw it themselves)"
        )
    withdrawn = set(series_ids)
    actor = ledger.user_actor(actor_id)
    for dataset in affected:
        result.held.append((dataset.name, dataset.version))
        if dataset.state in (DatasetState.released, DatasetState.published):
            remaining = [s for s in service.series_of(session, dataset) if s not in withdrawn]
            if remaining:
                was_published = dataset.state == DatasetState.published
                successor = service.new_version(session, dataset, actor_id)
                session.execute(
                    delete(DatasetSeries).where(
                        DatasetSeries.dataset_id == successor.id,
                        DatasetSeries.series_id.in_(series_ids),
                    )
                )
                service.release(session, successor, actor_id, publication)
                if was_published:
                    service.publish(session, successor, actor_id, publication)
                _carry_over_use(session, dataset, successor, actor_id)
                result.new_versions.append((successor.name, successor.version))
            else:
                result.emptied.append((dataset.name, dataset.version))
            service.invalidate(session, dataset, WITHDRAWAL_REASON, actor_id)
            result.invalidated.append((dataset.name, dataset.version))
        elif dataset.state == DatasetState.draft:
            result.drafts.append((dataset.name, dataset.version))
        session.execute(
            delete(DatasetSeries).where(
                DatasetSeries.dataset_id == dataset.id, DatasetSeries.series_id.in_(series_ids)
            )
        )
        ledger.record(
            session,
            DATASET_SUBJECT_WITHDRAWN,
            actor=actor,
            subject=f"dataset:{dataset.id}",
            payload={"subject_sha256": result.subject_sha256, "series": len(series_ids)},
        )
    result.instances = sum(1 for _ in catalog.instances_of_series(session, series_ids))
    result.digests = catalog.delete_subject(session, pseudonym)
    ledger.record(
        session,
        CATALOG_SUBJECT_WITHDRAWN,
        actor=actor,
        subject=f"subject-sha256:{result.subject_sha256}",
        payload={
            "series": len(series_ids),
            "instances": result.instances,
            "datasets": [f"{n} v{v}" for n, v in result.invalidated + result.drafts],
        },
    )
    return result


def collect_blobs(
    session: Session,
    store: BlobStore,
    views_root: Path,
    withdrawal: Withdrawal,
) -> int:
    """After the withdrawal is committed: remove the invalidated versions' views and delete the
    blobs no catalogue entry references any more. Returns how many blobs were deleted."""
    for name, version in withdrawal.held:
        dataset = service.get_dataset(session, name, version)
        if dataset is not None:
            remove_view(views_root, dataset)
    unreferenced = [d for d in withdrawal.digests if not catalog.blob_referenced(session, d)]
    for digest in unreferenced:
        store.delete(digest)
    ledger.record(
        session,
        STORAGE_BLOBS_DELETED,
        actor=ledger.HOST_ACTOR,
        subject=f"subject-sha256:{withdrawal.subject_sha256}",
        payload={"blobs": len(unreferenced), "reason": WITHDRAWAL_REASON},
    )
    return len(unreferenced)

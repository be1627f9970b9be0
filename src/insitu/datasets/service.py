"""Dataset service: create from the catalogue, lifecycle, stewards, grants, terms, and the one
decision of who may use a dataset (``can_use_dataset``). Functions never commit; each change
is written with its ledger event in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.catalog import service as catalog
from insitu.datasets import fair

# The explorer's list lives in its own module; these re-export it as part of this interface.
from insitu.datasets.listing import DatasetFilter as DatasetFilter  # noqa: PLC0414
from insitu.datasets.listing import DatasetRow as DatasetRow  # noqa: PLC0414
from insitu.datasets.listing import search_datasets as search_datasets  # noqa: PLC0414
from insitu.datasets.models import (
    Dataset,
    DatasetGrant,
    DatasetSeries,
    DatasetState,
    DatasetStatistics,
    DatasetSteward,
    ReviewPolicy,
    TermsAcceptance,
    Tier,
)
from insitu.datasets.pids import MinterError, Publication
from insitu.db import utcnow
from insitu.ledger import events
from insitu.ledger import service as ledger
from insitu.storage.protocol import BlobNotFoundError, BlobStore, BlobStoreError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
DATASET_CREATED = events.register("dataset.created", "a draft dataset was created")
DATASET_UPDATED = events.register("dataset.updated", "a draft dataset's metadata changed")
DATASET_RELEASED = events.register(
    "dataset.released", "a dataset version was frozen, with its content hash"
)
DATASET_PUBLISHED = events.register("dataset.published", "a dataset version's metadata went public")
DATASET_INVALIDATED = events.register("dataset.invalidated", "a dataset version became unusable")
DATASET_CORRUPTED = events.register(
    "dataset.corrupted", "a dataset's stored content no longer matches its release hash"
)
DATASET_STEWARD_ADDED = events.register("dataset.steward_added", "a dataset got another steward")
DATASET_GRANTED = events.register("dataset.granted", "the use of a dataset was granted")
DATASET_REVOKED = events.register("dataset.revoked", "a grant of a dataset was revoked")
DATASET_REQUESTED = events.register("dataset.requested", "a user asked to use a dataset")
DATASET_REQUEST_DECIDED = events.register(
    "dataset.request_decided", "a steward approved (with a grant) or refused an access request"
)
DATASET_REVIEW_POLICY = events.register(
    "dataset.review_policy", "a steward set how job results on a dataset are reviewed"
)
DATASET_TERMS_ACCEPTED = events.register(
    "dataset.terms_accepted", "a user accepted a dataset's terms of use"
)


class DatasetError(ValueError):
    """A dataset request that cannot be fulfilled, with the reason (bad input)."""


class NotStewardError(DatasetError):
    """Only the dataset's stewards may do that."""


class StateConflictError(DatasetError):
    """Not in the dataset's (or request's) current state."""


class PidUnavailableError(DatasetError):
    """The PID minter failed; nothing was changed."""


@dataclass(frozen=True)
class DatasetMetadata:
    """What a steward says about a dataset."""

    title: str
    description: str = ""
    authors: tuple[str, ...] = ()
    license: str = ""
    purpose: str = ""
    terms: str = ""
    tier: Tier = Tier.real


def _subject(dataset: Dataset) -> str:
    return f"dataset:{dataset.id}"


def create_dataset(
    session: Session,
    name: str,
    metadata: DatasetMetadata,
    creator_id: int,
    *,
    criteria: catalog.SelectionCriteria | None = None,
    series_uids: Sequence[str] | None = None,
) -> Dataset:
    """A draft dataset from a catalogue query or an explicit list of series. Only references
    are written: no image byte is read or copied."""
    if not _NAME_RE.match(name):
        raise DatasetError(
            f"dataset name {name!r} is not valid: use 2-64 characters a-z, 0-9, '.', '_', '-'"
        )
    if session.scalar(select(Dataset.id).where(Dataset.name == name).limit(1)) is not None:
        raise DatasetError(f"dataset {name!r} exists: make a new version of it instead")
    if (criteria is None) == (series_uids is None):
        raise DatasetError("give either catalogue criteria or a list of series, not both")
    if series_uids is not None:
        found = catalog.series_ids_for_uids(session, list(series_uids))
        missing = [uid for uid in series_uids if uid not in found]
        if missing:
            raise DatasetError(f"{len(missing)} series are not in the catalogue, e.g. {missing[0]}")
        series_ids = sorted(set(found.values()))
        selection: dict[str, object] = {"series": len(series_ids), "kind": "explicit list"}
    else:
        assert criteria is not None  # noqa: S101 - checked above
        series_ids = catalog.select_series(session, criteria)
        selection = {
            "kind": "catalogue query",
            **{k: v for k, v in vars(criteria).items() if v is not None},
        }
    if not series_ids:
        raise DatasetError("no catalogued series match: the dataset would be empty")
    dataset = Dataset(
        name=name,
        version=1,
        title=metadata.title,
        description=metadata.description,
        authors=list(metadata.authors),
        license=metadata.license,
        purpose=metadata.purpose,
        terms=metadata.terms,
        tier=metadata.tier,
        # Synthetic data may leave after the automatic checks alone; real data need a person.
        review_policy=ReviewPolicy.automatic
        if metadata.tier == Tier.synthetic
        else ReviewPolicy.one_reviewer,
        state=DatasetState.draft,
        provenance=catalog.provenance_of_series(session, series_ids),
        selection=selection,
        created_by=creator_id,
    )
    session.add(dataset)
    session.flush()
    _attach(session, dataset, series_ids)
    session.add(DatasetSteward(dataset_id=dataset.id, user_id=creator_id))
    ledger.record(
        session,
        DATASET_CREATED,
        actor=ledger.user_actor(creator_id),
        subject=_subject(dataset),
        payload={"series": len(series_ids), "tier": metadata.tier.value, "version": 1},
    )
    return dataset


def _attach(session: Session, dataset: Dataset, series_ids: Sequence[int]) -> None:
    if series_ids:
        session.execute(
            insert(DatasetSeries),
            [{"dataset_id": dataset.id, "series_id": s} for s in series_ids],
        )


def series_of(session: Session, dataset: Dataset) -> list[int]:
    """The catalogue series ids of a dataset version."""
    return list(
        session.scalars(
            select(DatasetSeries.series_id)
            .where(DatasetSeries.dataset_id == dataset.id)
            .order_by(DatasetSeries.series_id)
        )
    )


def is_steward(session: Session, dataset: Dataset, user_id: int) -> bool:
    """Whether a user is one of the dataset's stewards."""
    return (
        session.scalar(
            select(DatasetSteward.id).where(
                DatasetSteward.dataset_id == dataset.id, DatasetSteward.user_id == user_id
            )
        )
        is not None
    )


def require_steward(session: Session, dataset: Dataset, user_id: int) -> None:
    """Refuse anyone but the dataset's stewards."""
    _require_steward(session, dataset, user_id)


def _require_steward(session: Session, dataset: Dataset, user_id: int) -> None:
    if not is_steward(session, dataset, user_id):
        raise NotStewardError(f"only the stewards of {dataset.name} may do that")


def update_metadata(
    session: Session, dataset: Dataset, metadata: DatasetMetadata, actor_id: int
) -> None:
    """Change a draft's metadata (released content and metadata are frozen)."""
    _require_steward(session, dataset, actor_id)
    if dataset.state != DatasetState.draft:
        raise StateConflictError(
            f"{dataset.name} v{dataset.version} is {dataset.state.value}: make a new version "
            "to change it"
        )
    dataset.title = metadata.title
    dataset.description = metadata.description
    dataset.authors = list(metadata.authors)
    dataset.license = metadata.license
    dataset.purpose = metadata.purpose
    dataset.terms = metadata.terms
    ledger.record(
        session, DATASET_UPDATED, actor=ledger.user_actor(actor_id), subject=_subject(dataset)
    )


def add_steward(session: Session, dataset: Dataset, user_id: int, actor_id: int) -> None:
    """Another steward for the dataset (by one of its stewards)."""
    _require_steward(session, dataset, actor_id)
    if is_steward(session, dataset, user_id):
        return
    session.add(DatasetSteward(dataset_id=dataset.id, user_id=user_id))
    ledger.record(
        session,
        DATASET_STEWARD_ADDED,
        actor=ledger.user_actor(actor_id),
        subject=_subject(dataset),
        payload={"user": ledger.user_actor(user_id)},
    )


def set_review_policy(
    session: Session, dataset: Dataset, policy: ReviewPolicy, actor_id: int
) -> None:
    """How results of jobs on this version are reviewed (its stewards). ``automatic`` is
    refused on real data: a person must look at what leaves."""
    _require_steward(session, dataset, actor_id)
    if policy == ReviewPolicy.automatic and dataset.tier != Tier.synthetic:
        raise DatasetError(
            f"{dataset.name} holds real data: the automatic review policy is only for "
            "synthetic datasets; use one_reviewer or two_reviewers"
        )
    dataset.review_policy = policy
    ledger.record(
        session,
        DATASET_REVIEW_POLICY,
        actor=ledger.user_actor(actor_id),
        subject=_subject(dataset),
        payload={"policy": policy.value},
    )


def content_hash(session: Session, dataset: Dataset) -> str:
    """SHA-256 over the sorted instance digests and clinical rows: no image byte is read."""
    digest = hashlib.sha256()
    for line in catalog.content_of_series(session, series_of(session, dataset)):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _reserve_pid(dataset: Dataset, publication: Publication) -> None:
    if dataset.pid is not None:
        return
    identifier = publication.minter.identifier_for(f"{dataset.name}.v{dataset.version}")
    try:
        publication.minter.reserve(identifier)
    except MinterError as exc:
        raise PidUnavailableError(str(exc)) from exc
    dataset.pid = identifier


def release(session: Session, dataset: Dataset, actor_id: int, publication: Publication) -> str:
    """Freeze a draft: its content hash is computed and kept, and its PID reserved."""
    _require_steward(session, dataset, actor_id)
    if dataset.state != DatasetState.draft:
        raise StateConflictError(f"only a draft can be released; {dataset.name} is {dataset.state}")
    dataset.content_hash = content_hash(session, dataset)
    dataset.state = DatasetState.released
    dataset.released_at = utcnow()
    _reserve_pid(dataset, publication)
    ledger.record(
        session,
        DATASET_RELEASED,
        actor=ledger.user_actor(actor_id),
        subject=_subject(dataset),
        payload={
            "content_sha256": dataset.content_hash,
            "version": dataset.version,
            "pid": dataset.pid,
        },
    )
    return dataset.content_hash


def publish(session: Session, dataset: Dataset, actor_id: int, publication: Publication) -> None:
    """Make a released version's metadata public and register its PID."""
    _require_steward(session, dataset, actor_id)
    if dataset.state != DatasetState.released:
        raise StateConflictError(
            f"only a released version can be published; {dataset.name} is {dataset.state}"
        )
    _reserve_pid(dataset, publication)
    dataset.state = DatasetState.published
    dataset.published_at = utcnow()
    record = citable(session, dataset, publication, viewer_id=None)
    assert dataset.pid is not None  # noqa: S101 - reserved just above
    try:
        publication.minter.register(
            dataset.pid,
            publication.landing_url(dataset.name, dataset.version),
            fair.datacite_json(record),
        )
    except MinterError as exc:
        raise PidUnavailableError(str(exc)) from exc
    dataset.pid_registered = True
    ledger.record(
        session,
        DATASET_PUBLISHED,
        actor=ledger.user_actor(actor_id),
        subject=_subject(dataset),
        payload={"pid": dataset.pid},
    )


def is_public(dataset: Dataset) -> bool:
    """Whether a version's metadata is public: it was published (even if invalidated since)."""
    return dataset.published_at is not None


def citable(
    session: Session, dataset: Dataset, publication: Publication, viewer_id: int | None
) -> fair.Citable:
    """The public facts of a version, small counts suppressed unless the viewer stewards it."""
    stats = statistics(session, dataset, viewer_id)
    previous = session.get(Dataset, dataset.previous_id) if dataset.previous_id else None
    minter = publication.minter
    keywords: list[str] = []
    for breakdown in ("by_modality", "by_body_part"):
        values = stats.get(breakdown)
        if isinstance(values, dict):
            keywords += [str(key) for key in values if key != "unknown"]
    issued = dataset.released_at or dataset.created_at
    return fair.Citable(
        name=dataset.name,
        version=dataset.version,
        title=dataset.title,
        description=dataset.description,
        authors=tuple(dataset.authors),
        license=dataset.license,
        tier=dataset.tier.value,
        state=dataset.state.value,
        identifier=dataset.pid,
        identifier_url=minter.resolver_url(dataset.pid) if dataset.pid else None,
        landing_url=publication.landing_url(dataset.name, dataset.version),
        publisher=publication.publisher,
        year=(dataset.published_at or issued).year,
        issued=issued.date().isoformat(),
        previous_identifier_url=(
            minter.resolver_url(previous.pid) if previous is not None and previous.pid else None
        ),
        invalidated_reason=dataset.invalidated_reason,
        content_hash=dataset.content_hash,
        contact_email=publication.contact_email,
        pid_kind=minter.kind,
        keywords=("medical imaging", *keywords),
        statistics=stats,
        provenance=dict(dataset.provenance),
    )


def get_by_pid(session: Session, identifier: str) -> Dataset | None:
    """The version a PID was given to."""
    return session.scalars(select(Dataset).where(Dataset.pid == identifier)).first()


def invalidate(session: Session, dataset: Dataset, reason: str, actor_id: int | None) -> None:
    """Make a version unusable for good; its landing page will say why."""
    if actor_id is not None:
        _require_steward(session, dataset, actor_id)
    if not reason.strip():
        raise DatasetError("invalidating a dataset needs a reason")
    if dataset.state == DatasetState.invalidated:
        return
    dataset.state = DatasetState.invalidated
    dataset.invalidated_reason = reason.strip()
    ledger.record(
        session,
        DATASET_INVALIDATED,
        actor=ledger.user_actor(actor_id) if actor_id is not None else ledger.HOST_ACTOR,
        subject=_subject(dataset),
        payload={"reason": reason.strip()},
    )


def mark_corrupted(session: Session, dataset: Dataset, detail: str) -> None:
    """Record that an integrity check failed: the version can no longer be used."""
    if dataset.corrupted:
        return
    dataset.corrupted = True
    ledger.record(
        session,
        DATASET_CORRUPTED,
        actor=ledger.HOST_ACTOR,
        subject=_subject(dataset),
        payload={"detail": detail},
    )


def new_version(session: Session, dataset: Dataset, actor_id: int | None) -> Dataset:
    """A draft that starts as a copy of a released version and links back to it.

    ``actor_id`` None: the host made it (``insitu ingest rescrub``), for the stewards to
    check and release; it is recorded as the previous version's creator's draft."""
    if actor_id is not None:
        _require_steward(session, dataset, actor_id)
    if dataset.state == DatasetState.draft:
        raise StateConflictError(f"{dataset.name} v{dataset.version} is still a draft: edit it")
    latest = session.scalar(select(func.max(Dataset.version)).where(Dataset.name == dataset.name))
    draft = Dataset(
        name=dataset.name,
        version=int(latest or dataset.version) + 1,
        previous_id=dataset.id,
        title=dataset.title,
        description=dataset.description,
        authors=list(dataset.authors),
        license=dataset.license,
        purpose=dataset.purpose,
        terms=dataset.terms,
        tier=dataset.tier,
        review_policy=dataset.review_policy,
        state=DatasetState.draft,
        provenance=dict(dataset.provenance),
        selection={**dataset.selection, "from_version": dataset.version},
        created_by=actor_id if actor_id is not None else dataset.created_by,
    )
    session.add(draft)
    session.flush()
    _attach(session, draft, series_of(session, dataset))
    stewards = session.scalars(
        select(DatasetSteward.user_id).where(DatasetSteward.dataset_id == dataset.id)
    ).all()
    session.add_all(DatasetSteward(dataset_id=draft.id, user_id=u) for u in stewards)
    ledger.record(
        session,
        DATASET_CREATED,
        actor=ledger.user_actor(actor_id) if actor_id is not None else ledger.HOST_ACTOR,
        subject=_subject(draft),
        payload={"version": draft.version, "previous": _subject(dataset)},
    )
    return draft


# -- who may use a dataset -------------------------------------------------------------------


def grant(
    session: Session,
    dataset: Dataset,
    actor_id: int,
    *,
    user_id: int | None = None,
    project_id: int | None = None,
    until: dt.datetime | None = None,
) -> DatasetGrant:
    """Grant the use of a dataset to a user or a project (by one of its stewards)."""
    _require_steward(session, dataset, actor_id)
    if (user_id is None) == (project_id is None):
        raise DatasetError("grant to a user or to a project")
    row = DatasetGrant(dataset_id=dataset.id, user_id=user_id, project_id=project_id, until=until)
    session.add(row)
    session.flush()
    grantee = ledger.user_actor(user_id) if user_id is not None else f"project:{project_id}"
    ledger.record(
        session,
        DATASET_GRANTED,
        actor=ledger.user_actor(actor_id),
        subject=_subject(dataset),
        payload={"grant": row.id, "to": grantee, "until": until.isoformat() if until else None},
    )
    return row


def revoke(session: Session, dataset: Dataset, grant_id: int, actor_id: int) -> None:
    """Revoke a grant (by one of the dataset's stewards)."""
    _require_steward(session, dataset, actor_id)
    row = session.get(DatasetGrant, grant_id)
    if row is None or row.dataset_id != dataset.id:
        raise DatasetError(f"no grant {grant_id} on {dataset.name}")
    if row.revoked_at is not None:
        return
    row.revoked_at = utcnow()
    ledger.record(
        session,
        DATASET_REVOKED,
        actor=ledger.user_actor(actor_id),
        subject=_subject(dataset),
        payload={"grant": row.id},
    )


def revoke_grantee(
    session: Session,
    dataset: Dataset,
    actor_id: int,
    *,
    user_id: int | None = None,
    project_id: int | None = None,
) -> int:
    """Revoke every live grant of the dataset to a user or a project; how many."""
    rows = session.scalars(
        select(DatasetGrant.id).where(
            DatasetGrant.dataset_id == dataset.id,
            DatasetGrant.revoked_at.is_(None),
            DatasetGrant.user_id == user_id
            if user_id is not None
            else DatasetGrant.project_id == project_id,
        )
    ).all()
    for grant_id in rows:
        revoke(session, dataset, grant_id, actor_id)
    return len(rows)


def grants_of(session: Session, dataset: Dataset) -> list[DatasetGrant]:
    """A dataset version's grants, newest first."""
    return list(
        session.scalars(
            select(DatasetGrant)
            .where(DatasetGrant.dataset_id == dataset.id)
            .order_by(DatasetGrant.id.desc())
        )
    )


def can_see_dataset(session: Session, user_id: int, dataset: Dataset) -> bool:
    """Published metadata is for everyone; unpublished for the stewards and grantees only."""
    if dataset.state == DatasetState.published or is_steward(session, dataset, user_id):
        return True
    projects = access.project_ids_of(session, user_id)
    return any(
        g.revoked_at is None and (g.user_id == user_id or g.project_id in projects)
        for g in grants_of(session, dataset)
    )


def visible_datasets(session: Session, user_id: int, limit: int, offset: int) -> list[Dataset]:
    """The newest-first dataset versions a user may see."""
    projects = access.project_ids_of(session, user_id)
    granted = select(DatasetGrant.dataset_id).where(
        DatasetGrant.revoked_at.is_(None),
        (DatasetGrant.user_id == user_id) | DatasetGrant.project_id.in_(projects or {-1}),
    )
    stewarded = select(DatasetSteward.dataset_id).where(DatasetSteward.user_id == user_id)
    return list(
        session.scalars(
            select(Dataset)
            .where(
                (Dataset.state == DatasetState.published)
                | Dataset.id.in_(granted)
                | Dataset.id.in_(stewarded)
            )
            .order_by(Dataset.name, Dataset.version.desc())
            .limit(limit)
            .offset(offset)
        )
    )


def accept_terms(session: Session, dataset: Dataset, user_id: int) -> None:
    """Record that a user accepted the dataset's terms (once)."""
    exists = session.scalar(
        select(TermsAcceptance.id).where(
            TermsAcceptance.dataset_id == dataset.id, TermsAcceptance.user_id == user_id
        )
    )
    if exists is not None:
        return
    session.add(TermsAcceptance(dataset_id=dataset.id, user_id=user_id))
    ledger.record(
        session,
        DATASET_TERMS_ACCEPTED,
        actor=ledger.user_actor(user_id),
        subject=_subject(dataset),
    )


@dataclass(frozen=True)
class UseDecision:
    """Whether a user may use a dataset now, and if not, why."""

    allowed: bool
    reason: str = ""


def can_use_dataset(
    session: Session, user_id: int, dataset: Dataset, now: dt.datetime | None = None
) -> UseDecision:
    """The one place that decides whether ``user_id`` may use ``dataset`` (jobs, sessions and
    the explorer all ask here). Refuses drafts, invalidated or corrupted versions, missing or
    expired grants, and terms not yet accepted."""
    now = now or utcnow()
    if dataset.state == DatasetState.draft:
        return UseDecision(False, "the dataset is a draft: it must be released first")
    if dataset.state == DatasetState.invalidated:
        return UseDecision(False, f"the dataset was invalidated: {dataset.invalidated_reason}")
    if dataset.corrupted:
        return UseDecision(False, "the dataset failed its integrity check: ask its stewards")
    user = access.get_user_by_id(session, user_id)
    if user is None or not user.active:
        return UseDecision(False, "no such active account")
    projects = access.project_ids_of(session, user_id)
    grants = session.scalars(
        select(DatasetGrant).where(
            DatasetGrant.dataset_id == dataset.id, DatasetGrant.revoked_at.is_(None)
        )
    ).all()
    live = [
        g
        for g in grants
        if (g.user_id == user_id or (g.project_id is not None and g.project_id in projects))
        and (g.until is None or g.until > now)
    ]
    if not live:
        expired = any(
            g.until is not None and g.until <= now
            for g in grants
            if g.user_id == user_id or g.project_id in projects
        )
        return UseDecision(
            False, "your grant has expired" if expired else "you have no grant for this dataset"
        )
    accepted = session.scalar(
        select(TermsAcceptance.id).where(
            TermsAcceptance.dataset_id == dataset.id, TermsAcceptance.user_id == user_id
        )
    )
    if accepted is None:
        return UseDecision(False, "accept the dataset's terms of use first")
    return UseDecision(True)


def usable_datasets(session: Session, user_id: int) -> list[Dataset]:
    """The dataset versions a user may use now (a live grant, terms accepted, released)."""
    projects = access.project_ids_of(session, user_id)
    granted = select(DatasetGrant.dataset_id).where(
        DatasetGrant.revoked_at.is_(None),
        (DatasetGrant.user_id == user_id) | DatasetGrant.project_id.in_(projects or {-1}),
    )
    candidates = session.scalars(
        select(Dataset).where(Dataset.id.in_(granted)).order_by(Dataset.id)
    )
    return [d for d in candidates if can_use_dataset(session, user_id, d).allowed]


def series_ids_of(dataset_ids: Sequence[int]) -> Select[int]:
    """A query of the catalogue series in these dataset versions (for ``IN`` clauses)."""
    return select(DatasetSeries.series_id).where(DatasetSeries.dataset_id.in_(list(dataset_ids)))


def subject_of(dataset: Dataset) -> str:
    """How the ledger names a dataset version."""
    return _subject(dataset)


def get_dataset_by_id(session: Session, dataset_id: int) -> Dataset:
    """A dataset version by its id (jobs keep ids); raises DatasetError when unknown."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise DatasetError(f"no dataset with id {dataset_id}")
    return dataset


def get_dataset(session: Session, name: str, version: int | None = None) -> Dataset | None:
    """A dataset version by name (the newest when no version is given)."""
    statement = select(Dataset).where(Dataset.name == name)
    if version is not None:
        statement = statement.where(Dataset.version == version)
    return session.scalars(statement.order_by(Dataset.version.desc()).limit(1)).first()


@dataclass
class VerifyResult:
    """What ``verify_dataset`` found."""

    instances: int = 0
    problems: list[str] | None = None

    @property
    def ok(self) -> bool:
        """Whether the stored content is what was released."""
        return not self.problems


def verify_dataset(
    session: Session,
    store: BlobStore,
    dataset: Dataset,
    on_progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Re-read and re-hash every stored instance of a released version, recompute its content
    hash and compare with the one taken at release; a mismatch marks it corrupted."""
    if dataset.content_hash is None:
        raise StateConflictError(
            f"{dataset.name} v{dataset.version} was never released: nothing to verify"
        )
    result = VerifyResult(problems=[])
    problems: list[str] = []
    for uid, digest in catalog.instances_of_series(session, series_of(session, dataset)):
        result.instances += 1
        try:
            data = store.get(digest)
        except (OSError, BlobNotFoundError, BlobStoreError) as exc:
            problems.append(f"instance {uid}: blob {digest} cannot be read ({exc})")
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            problems.append(f"instance {uid}: blob {digest} was changed on disk")
        if on_progress is not None:
            on_progress(1)
    if content_hash(session, dataset) != dataset.content_hash:
        problems.append("the catalogue rows no longer match the content hash taken at release")
    result.problems = problems
    if problems:
        mark_corrupted(session, dataset, problems[0])
    return result


SMALL_COUNT = 5  # counts under this are shown as "<5" to anyone but the dataset's stewards


def forget_statistics(session: Session, dataset: Dataset) -> None:
    """Drop a frozen version's cached statistics (re-scrub purged values they counted)."""
    cached = session.get(DatasetStatistics, dataset.id)
    if cached is not None:
        session.delete(cached)


def _frozen_statistics(session: Session, dataset: Dataset) -> dict[str, Any]:
    """A version's statistics: computed each time for drafts, once for frozen versions."""
    if dataset.state == DatasetState.draft:
        return catalog.statistics_of_series(session, series_of(session, dataset))
    cached = session.get(DatasetStatistics, dataset.id)
    if cached is not None:
        return dict(cached.data)
    data = catalog.statistics_of_series(session, series_of(session, dataset))
    dialect = session.get_bind().dialect.name
    insert_row = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(
        DatasetStatistics
    ).values(dataset_id=dataset.id, data=data)
    # Two first views at once: the second insert does nothing (no savepoint, which would
    # commit a caller's pending change before its ledger entry).
    session.execute(insert_row.on_conflict_do_nothing(index_elements=["dataset_id"]))
    return data


def statistics(session: Session, dataset: Dataset, user_id: int | None) -> dict[str, object]:
    """A version's counts and breakdowns; small counts suppressed for non-stewards (and for
    anonymous readers of public metadata)."""
    stats: dict[str, object] = dict(_frozen_statistics(session, dataset))
    if user_id is not None and is_steward(session, dataset, user_id):
        return stats

    def suppress(value: object) -> object:
        if isinstance(value, int) and 0 < value < SMALL_COUNT:
            return f"<{SMALL_COUNT}"
        if isinstance(value, dict):
            return {k: suppress(v) for k, v in value.items()}
        return value

    return {key: value if key == "bytes" else suppress(value) for key, value in stats.items()}


# Access requests live in their own module (they build on this one); part of this interface.
from insitu.datasets.requests import decide_request as decide_request  # noqa: E402, PLC0414
from insitu.datasets.requests import request_access as request_access  # noqa: E402, PLC0414
from insitu.datasets.requests import requests_of as requests_of  # noqa: E402, PLC0414

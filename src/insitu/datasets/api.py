"""Dataset routes: stewards create and look after datasets; users see and use what they may.

Unpublished datasets are visible to their stewards and grantees only; to anyone else a missing
and a hidden dataset get the same 403, so names cannot be probed. The decision to *use* a
dataset is ``service.can_use_dataset`` (``GET /datasets/{name}/use``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.permissions import AnyUser, Steward, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.catalog.service import SelectionCriteria
from insitu.core.platform import Platform
from insitu.datasets import service, withdrawal
from insitu.datasets.models import Dataset, ReviewPolicy, Tier
from insitu.datasets.view import remove_view
from insitu.db import session_scope

router = APIRouter(prefix="/datasets", tags=["datasets"])
withdrawals_router = APIRouter(prefix="/withdrawals", tags=["datasets"])
PlatformDep = Annotated[Platform, Depends(get_platform)]
DatePattern = Field(default=None, pattern=r"^\d{8}$")


class Criteria(BaseModel):
    """Catalogue and clinical criteria (all optional, combined with AND)."""

    modality: str | None = Field(default=None, max_length=16)
    body_part: str | None = Field(default=None, max_length=16)
    manufacturer: str | None = Field(default=None, max_length=64)
    study_date_from: str | None = DatePattern
    study_date_to: str | None = DatePattern
    diagnosis: str | None = Field(default=None, max_length=200)
    age_min: int | None = Field(default=None, ge=0, le=150)
    age_max: int | None = Field(default=None, ge=0, le=150)


class NewDataset(BaseModel):
    """A dataset to create from a catalogue query or an explicit series list."""

    name: str = Field(max_length=64)
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=10_000)
    authors: list[str] = Field(default_factory=list, max_length=200)
    license: str = Field(default="", max_length=64)
    purpose: str = Field(default="", max_length=2_000)
    terms: str = Field(default="", max_length=20_000)
    tier: Tier = Tier.real
    query: Criteria | None = None
    series: list[str] | None = Field(default=None, max_length=100_000)


class MetadataChange(BaseModel):
    """Fields of a draft to change; those left out keep their value."""

    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    authors: list[str] | None = Field(default=None, max_length=200)
    license: str | None = Field(default=None, max_length=64)
    purpose: str | None = Field(default=None, max_length=2_000)
    terms: str | None = Field(default=None, max_length=20_000)


class NewSteward(BaseModel):
    """A user who will look after the dataset too."""

    user: str = Field(max_length=64)


class Invalidation(BaseModel):
    """Why a version becomes unusable."""

    reason: str = Field(min_length=1, max_length=2_000)


class NewGrant(BaseModel):
    """Who may use the dataset, and until when."""

    user: str | None = Field(default=None, max_length=64)
    project: str | None = Field(default=None, max_length=64)
    until: dt.datetime | None = None


def _info(session: Session, dataset: Dataset, user_id: int) -> dict[str, Any]:
    steward = service.is_steward(session, dataset, user_id)
    info: dict[str, Any] = {
        "name": dataset.name,
        "version": dataset.version,
        "state": dataset.state.value,
        "title": dataset.title,
        "description": dataset.description,
        "authors": dataset.authors,
        "license": dataset.license,
        "purpose": dataset.purpose,
        "terms": dataset.terms,
        "tier": dataset.tier.value,
        "review_policy": dataset.review_policy.value,
        "provenance": dataset.provenance,
        "content_hash": dataset.content_hash,
        "pid": dataset.pid,
        "pid_registered": dataset.pid_registered,
        "invalidated_reason": dataset.invalidated_reason,
        "corrupted": dataset.corrupted,
        "you_are_steward": steward,
    }
    if steward:
        info["selection"] = dataset.selection
        info["grants"] = [
            {
                "id": g.id,
                "user": g.user_id,
                "project": g.project_id,
                "until": g.until,
                "revoked_at": g.revoked_at,
            }
            for g in service.grants_of(session, dataset)
        ]
    return info


def _visible(session: Session, name: str, user_id: int, version: int | None = None) -> Dataset:
    dataset = service.get_dataset(session, name, version)
    if dataset is None or not service.can_see_dataset(session, user_id, dataset):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"no dataset {name!r} of yours")
    return dataset


def _refused(exc: service.DatasetError) -> HTTPException:
    if isinstance(exc, service.NotStewardError):
        code = status.HTTP_403_FORBIDDEN
    elif isinstance(exc, service.PidUnavailableError):
        code = status.HTTP_502_BAD_GATEWAY
    elif isinstance(exc, service.StateConflictError):
        code = status.HTTP_409_CONFLICT
    else:
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return HTTPException(code, detail=str(exc))


@router.get("")
def list_datasets(
    principal: AnyUser,
    session: DbSessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Datasets you may see: published ones, and those you steward or were granted."""
    return [
        {
            "name": d.name,
            "version": d.version,
            "state": d.state.value,
            "title": d.title,
            "tier": d.tier.value,
        }
        for d in service.visible_datasets(session, principal.user_id, limit, offset)
    ]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_dataset(body: NewDataset, principal: Steward, session: DbSessionDep) -> dict[str, Any]:
    """Create a draft from a catalogue query or a list of Series Instance UIDs (stewards)."""
    metadata = service.DatasetMetadata(
        title=body.title,
        description=body.description,
        authors=tuple(body.authors),
        license=body.license,
        purpose=body.purpose,
        terms=body.terms,
        tier=body.tier,
    )
    criteria = SelectionCriteria(**body.query.model_dump()) if body.query is not None else None
    try:
        dataset = service.create_dataset(
            session,
            body.name,
            metadata,
            principal.user_id,
            criteria=criteria,
            series_uids=body.series,
        )
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return _info(session, dataset, principal.user_id)


@router.get("/{name}")
def show_dataset(
    name: str,
    principal: AnyUser,
    session: DbSessionDep,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """A dataset version (the newest by default), if you may see it."""
    return _info(session, _visible(session, name, principal.user_id, version), principal.user_id)


@router.patch("/{name}")
def update_dataset(
    name: str, body: MetadataChange, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Change the newest draft's metadata (its stewards; released versions are frozen)."""
    dataset = _visible(session, name, principal.user_id)
    metadata = service.DatasetMetadata(
        title=body.title if body.title is not None else dataset.title,
        description=body.description if body.description is not None else dataset.description,
        authors=tuple(body.authors if body.authors is not None else dataset.authors),
        license=body.license if body.license is not None else dataset.license,
        purpose=body.purpose if body.purpose is not None else dataset.purpose,
        terms=body.terms if body.terms is not None else dataset.terms,
        tier=dataset.tier,
    )
    try:
        service.update_metadata(session, dataset, metadata, principal.user_id)
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return _info(session, dataset, principal.user_id)


@router.post("/{name}/stewards", status_code=status.HTTP_201_CREATED)
def add_steward(
    name: str, body: NewSteward, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Add a steward to the newest version (its stewards)."""
    dataset = _visible(session, name, principal.user_id)
    user = access.get_user(session, body.user)
    if user is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="no such user")
    try:
        service.add_steward(session, dataset, user.id, principal.user_id)
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return {"steward": user.name}


def _steward_action(
    session: Session,
    platform: Platform,
    name: str,
    principal: access.Principal,
    action: str,
    reason: str = "",
) -> dict[str, Any]:
    dataset = _visible(session, name, principal.user_id)
    try:
        if action == "release":
            service.release(session, dataset, principal.user_id, platform.publication)
        elif action == "publish":
            service.publish(session, dataset, principal.user_id, platform.publication)
        elif action == "invalidate":
            service.invalidate(session, dataset, reason, principal.user_id)
            # The view is a cache of released content: dropping it early is harmless, and an
            # invalidated version must not be mountable any more.
            remove_view(platform.settings.resolved_views_root, dataset)
        else:
            dataset = service.new_version(session, dataset, principal.user_id)
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return _info(session, dataset, principal.user_id)


@router.post("/{name}/release")
def release(
    name: str, principal: AnyUser, session: DbSessionDep, platform: PlatformDep
) -> dict[str, Any]:
    """Freeze the newest draft (its stewards)."""
    return _steward_action(session, platform, name, principal, "release")


@router.post("/{name}/publish")
def publish(
    name: str, principal: AnyUser, session: DbSessionDep, platform: PlatformDep
) -> dict[str, Any]:
    """Make the newest released version's metadata public (its stewards)."""
    return _steward_action(session, platform, name, principal, "publish")


@router.post("/{name}/invalidate")
def invalidate(
    name: str,
    body: Invalidation,
    principal: AnyUser,
    session: DbSessionDep,
    platform: PlatformDep,
) -> dict[str, Any]:
    """Make the newest version unusable, with a reason (its stewards)."""
    return _steward_action(session, platform, name, principal, "invalidate", body.reason)


@router.post("/{name}/new-version", status_code=status.HTTP_201_CREATED)
def new_version(
    name: str, principal: AnyUser, session: DbSessionDep, platform: PlatformDep
) -> dict[str, Any]:
    """A new draft version from the newest released one (its stewards)."""
    return _steward_action(session, platform, name, principal, "new-version")


@router.post("/{name}/grants", status_code=status.HTTP_201_CREATED)
def grant(name: str, body: NewGrant, principal: AnyUser, session: DbSessionDep) -> dict[str, Any]:
    """Grant the use of the newest version to a user or a project (its stewards)."""
    dataset = _visible(session, name, principal.user_id)
    user = access.get_user(session, body.user) if body.user else None
    project = access.get_project(session, body.project) if body.project else None
    if (body.user and user is None) or (body.project and project is None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="no such user or project")
    try:
        row = service.grant(
            session,
            dataset,
            principal.user_id,
            user_id=user.id if user else None,
            project_id=project.id if project else None,
            until=body.until,
        )
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return {"id": row.id, "until": row.until}


@router.delete("/{name}/grants/{grant_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke(name: str, grant_id: int, principal: AnyUser, session: DbSessionDep) -> None:
    """Revoke a grant (the dataset's stewards)."""
    dataset = _visible(session, name, principal.user_id)
    try:
        service.revoke(session, dataset, grant_id, principal.user_id)
    except service.DatasetError as exc:
        raise _refused(exc) from None


@router.post("/{name}/revoke")
def revoke_grantee(
    name: str, body: NewGrant, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Revoke every live grant to a user or a project (the dataset's stewards)."""
    dataset = _visible(session, name, principal.user_id)
    user = access.get_user(session, body.user) if body.user else None
    project = access.get_project(session, body.project) if body.project else None
    if (user is None) == (project is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="name one existing user or project"
        )
    try:
        count = service.revoke_grantee(
            session,
            dataset,
            principal.user_id,
            user_id=user.id if user else None,
            project_id=project.id if project else None,
        )
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return {"revoked": count}


@router.post("/{name}/terms")
def accept_terms(name: str, principal: AnyUser, session: DbSessionDep) -> dict[str, Any]:
    """Accept the newest version's terms of use (once, before first use)."""
    dataset = _visible(session, name, principal.user_id)
    service.accept_terms(session, dataset, principal.user_id)
    return {"accepted": True, "terms": dataset.terms}


class PolicyChange(BaseModel):
    """How job results on the dataset are reviewed before they leave."""

    policy: ReviewPolicy


@router.put("/{name}/review-policy")
def set_review_policy(
    name: str, body: PolicyChange, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Set the newest version's review policy (its stewards): ``automatic`` (synthetic data
    only), ``one_reviewer`` or ``two_reviewers``."""
    dataset = _visible(session, name, principal.user_id)
    try:
        service.set_review_policy(session, dataset, body.policy, principal.user_id)
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return _info(session, dataset, principal.user_id)


@router.get("/{name}/stats")
def dataset_statistics(name: str, principal: AnyUser, session: DbSessionDep) -> dict[str, Any]:
    """Counts and breakdowns of the newest version; counts under 5 show as "<5" to anyone
    who is not one of its stewards."""
    dataset = _visible(session, name, principal.user_id)
    return service.statistics(session, dataset, principal.user_id)


@router.get("/{name}/use")
def may_use(name: str, principal: AnyUser, session: DbSessionDep) -> dict[str, Any]:
    """Whether you may use the newest version now, and if not, why."""
    dataset = _visible(session, name, principal.user_id)
    decision = service.can_use_dataset(session, principal.user_id, dataset)
    return {"allowed": decision.allowed, "reason": decision.reason}


class NewRequest(BaseModel):
    """Why you want to use a dataset."""

    purpose: str = Field(min_length=1, max_length=4_000)


class Decision(BaseModel):
    """A steward's answer to an access request."""

    note: str = Field(default="", max_length=4_000)
    until: dt.datetime | None = None


@router.post("/{name}/requests", status_code=status.HTTP_201_CREATED)
def request_access(
    name: str, body: NewRequest, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Ask to use a dataset you can see, stating your purpose."""
    dataset = _visible(session, name, principal.user_id)
    try:
        row = service.request_access(session, dataset, principal.user_id, body.purpose)
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return {"id": row.id, "state": row.state.value}


@router.get("/{name}/requests")
def list_requests(name: str, principal: AnyUser, session: DbSessionDep) -> list[dict[str, Any]]:
    """The access requests of the newest version (its stewards)."""
    dataset = _visible(session, name, principal.user_id)
    if not service.is_steward(session, dataset, principal.user_id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"only the stewards of {name} see its requests"
        )
    names = access.user_names(session, {r.user_id for r in service.requests_of(session, dataset)})
    return [
        {
            "id": r.id,
            "user": names.get(r.user_id, str(r.user_id)),
            "purpose": r.purpose,
            "state": r.state.value,
            "note": r.decision_note,
            "created_at": r.created_at,
        }
        for r in service.requests_of(session, dataset)
    ]


def _decide(
    session: Session,
    name: str,
    request_id: int,
    principal: access.Principal,
    body: Decision,
    *,
    approve: bool,
) -> dict[str, Any]:
    dataset = _visible(session, name, principal.user_id)
    try:
        row = service.decide_request(
            session,
            dataset,
            request_id,
            principal.user_id,
            approve=approve,
            note=body.note,
            until=body.until,
        )
    except service.DatasetError as exc:
        raise _refused(exc) from None
    return {"id": row.id, "state": row.state.value}


@router.post("/{name}/requests/{request_id}/approve")
def approve_request(
    name: str, request_id: int, body: Decision, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Approve a request: the requester gets a grant (optionally until a date)."""
    return _decide(session, name, request_id, principal, body, approve=True)


@router.post("/{name}/requests/{request_id}/refuse")
def refuse_request(
    name: str, request_id: int, body: Decision, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Refuse a request, with a reason the requester will read."""
    return _decide(session, name, request_id, principal, body, approve=False)


class WithdrawalRequest(BaseModel):
    """A subject who withdrew consent, by pseudonym."""

    subject: str = Field(min_length=1, max_length=64)


@withdrawals_router.post("")
def withdraw_subject(
    body: WithdrawalRequest, principal: Steward, platform: PlatformDep
) -> dict[str, Any]:
    """Withdraw a subject from every dataset and the catalogue (stewards of every dataset
    holding the subject). Released versions get new versions without the subject; the old
    ones are invalidated ("withdrawal"); unreferenced blobs are deleted after the commit."""
    # This route owns two transactions: blobs may only go once the withdrawal is committed.
    try:
        with session_scope(platform.sessions) as session:
            result = withdrawal.withdraw_subject(
                session, body.subject, principal.user_id, platform.publication
            )
    except service.DatasetError as exc:
        raise _refused(exc) from None
    with session_scope(platform.sessions) as session:
        deleted = withdrawal.collect_blobs(
            session, platform.store, platform.settings.resolved_views_root, result
        )
    return {
        "subject_sha256": result.subject_sha256,
        "instances": result.instances,
        "new_versions": [f"{n} v{v}" for n, v in result.new_versions],
        "invalidated": [f"{n} v{v}" for n, v in result.invalidated],
        "drafts_changed": [f"{n} v{v}" for n, v in result.drafts],
        "blobs_deleted": deleted,
    }

"""Release routes: list and show requests, vote on them (reviewers), preview text and
pictures in the browser (reviewers), download approved files (the requester)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.permissions import AnyUser, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.core.platform import Platform
from insitu.releases import service
from insitu.releases.models import ReleaseRequest, VoteDecision

router = APIRouter(prefix="/releases", tags=["releases"])
PlatformDep = Annotated[Platform, Depends(get_platform)]
# A preview is shown, never run: no script, no plug-in, no framing, no content sniffing.
PREVIEW_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class Vote(BaseModel):
    """A reviewer's vote; a reject must say what to change."""

    comment: str = Field(default="", max_length=10_000)


def info(session: Session, request: ReleaseRequest) -> dict[str, Any]:
    """A request as the API shows it."""
    votes = service.votes_of(session, request)
    names = access.user_names(session, {request.user_id, *(v.reviewer_id for v in votes)})
    tool, command = service.job_of(session, request)
    return {
        "id": request.id,
        "job": request.job_id,
        "tool": tool,
        "command": command,
        "user": names.get(request.user_id, ""),
        "datasets": [f"{d.name} v{d.version}" for d in service.datasets_of(session, request)],
        "state": request.state.value,
        "policy": request.policy,
        "approvals_needed": request.approvals_needed,
        "reason": request.reason,
        "total_bytes": request.total_bytes,
        "created_at": request.created_at,
        "decided_at": request.decided_at,
        "votes": [
            {
                "reviewer": names.get(v.reviewer_id, ""),
                "decision": v.decision.value,
                "comment": v.comment,
                "at": v.created_at,
            }
            for v in votes
        ],
        "files": [
            {
                "id": f.id,
                "path": f.path,
                "size": f.size,
                "sha256": f.sha256,
                "media_type": f.media_type,
                "verdict": f.verdict.value,
                "checks": f.checks,
            }
            for f in service.files_of(session, request)
        ],
    }


def http_error(exc: service.ReleaseError) -> HTTPException:
    """The HTTP answer to a refused release action: 403, 409 or 422, with the reason."""
    if isinstance(exc, service.NotAllowedError):
        code = status.HTTP_403_FORBIDDEN
    elif isinstance(exc, service.ReleaseStateError):
        code = status.HTTP_409_CONFLICT
    else:
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return HTTPException(code, detail=str(exc))


@router.get("")
def list_releases(
    principal: AnyUser,
    session: DbSessionDep,
    review: Annotated[bool, Query(description="those waiting for your vote")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Your release requests, newest first; with ``review``, the queue waiting for you."""
    return [info(session, r) for r in service.list_requests(session, principal, review, limit)]


@router.get("/{release_id}")
def show_release(release_id: int, principal: AnyUser, session: DbSessionDep) -> dict[str, Any]:
    """A request with each file's check results (its requester, its possible reviewers,
    admins and auditors)."""
    try:
        return info(session, service.get_request(session, principal, release_id))
    except service.ReleaseError as exc:
        raise http_error(exc) from None


def _vote(session: Session, principal: access.Principal, release_id: int,
          decision: VoteDecision, comment: str) -> dict[str, Any]:  # fmt: skip
    try:
        request = service.vote(session, principal, release_id, decision, comment)
    except service.ReleaseError as exc:
        raise http_error(exc) from None
    return info(session, request)


@router.post("/{release_id}/approve")
def approve(
    release_id: int, body: Vote, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Approve (a steward of every dataset the job used, never the requester)."""
    return _vote(session, principal, release_id, VoteDecision.approve, body.comment)


@router.post("/{release_id}/reject")
def reject(
    release_id: int, body: Vote, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Reject, saying what the requester should change."""
    return _vote(session, principal, release_id, VoteDecision.reject, body.comment)


@router.get("/{release_id}/files/{file_id}/preview")
def preview(
    release_id: int,
    file_id: int,
    principal: AnyUser,
    session: DbSessionDep,
    platform: PlatformDep,
) -> Response:
    """A text, CSV, JSON or picture file shown in the browser, for reviewers only."""
    try:
        item, data = service.open_preview(
            session, platform.settings, principal, release_id, file_id
        )
    except service.ReleaseError as exc:
        raise http_error(exc) from None
    shown = item.media_type
    media_type = shown if shown.startswith("image/") else "text/plain; charset=utf-8"
    return Response(
        data,
        media_type=media_type,
        headers={**PREVIEW_HEADERS, "Content-Disposition": "inline"},
    )


@router.get("/{release_id}/files/{file_id}")
def download(
    release_id: int,
    file_id: int,
    principal: AnyUser,
    session: DbSessionDep,
    platform: PlatformDep,
) -> FileResponse:
    """An approved file, streamed to its requester; ``X-Insitu-SHA256`` gives its hash,
    which the client checks (``insitu release download`` does)."""
    try:
        item, path = service.open_download(
            session, platform.settings, principal, release_id, file_id
        )
    except service.ReleaseError as exc:
        raise http_error(exc) from None
    session.commit()  # the download is on the ledger before a byte leaves
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=item.path.rsplit("/", 1)[-1],
        headers={"X-Insitu-SHA256": item.sha256, "X-Content-Type-Options": "nosniff"},
    )

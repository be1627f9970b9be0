"""Release pages in the browser: your requests and your review queue, and one request with its
check results, where reviewers open text, CSV and pictures and vote, and the requester
downloads approved files. The explorer (a later issue) links here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.permissions import AnyUser, Public, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.web import page_context, page_principal, to_sign_in
from insitu.core.platform import Platform
from insitu.releases import service
from insitu.releases.api import http_error, info
from insitu.releases.models import ReleaseRequest, ReleaseState, VoteDecision
from insitu.web.render import cannot_show, render

router = APIRouter(tags=["pages"], include_in_schema=False)
PlatformDep = Annotated[Platform, Depends(get_platform)]


@router.get("/releases", dependencies=[Public], response_model=None)
def releases_page(request: Request, session: DbSessionDep, platform: PlatformDep) -> Response:
    """Your release requests and, for stewards, the queue waiting for your review (sign-in
    needed: others are sent to the sign-in page)."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in("/releases")
    context = page_context(platform, principal, token) | {
        "mine": [info(session, r) for r in service.list_requests(session, principal)],
        "queue": [info(session, r) for r in service.list_requests(session, principal, True)],
    }
    return render(request, "releases.html", context)


def _page_of(session: Session, principal: access.Principal, request: ReleaseRequest,
             ) -> dict[str, Any]:  # fmt: skip
    reviewer = not service.why_not_reviewer(session, request, principal.user_id)
    return {
        "release": info(session, request),
        "reviewer": reviewer,
        "can_vote": reviewer
        and request.state == ReleaseState.in_review
        and all(v.reviewer_id != principal.user_id for v in service.votes_of(session, request)),
        "requester": request.user_id == principal.user_id,
        "previewable": service.PREVIEW_TYPES,
    }


@router.get("/releases/{release_id}", dependencies=[Public], response_model=None)
def release_page(
    release_id: int, request: Request, session: DbSessionDep, platform: PlatformDep
) -> Response:
    """One request: files with every check's verdict, votes, the reviewer's form, the
    requester's downloads (its requester, possible reviewers, admins, auditors)."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in(f"/releases/{release_id}")
    try:
        release = service.get_request(session, principal, release_id)
    except service.ReleaseError as exc:
        return cannot_show(
            request,
            page_context(platform, principal, token),
            "You cannot see this release request",
            f"{exc}. Requests are shown to their requester, to the stewards of every dataset "
            "the job used, and to admins and auditors",
            status.HTTP_403_FORBIDDEN,
        )
    context = page_context(platform, principal, token) | _page_of(session, principal, release)
    return render(request, "release.html", context)


@router.post("/releases/{release_id}/vote", response_model=None)
def vote_form(
    release_id: int,
    principal: AnyUser,
    session: DbSessionDep,
    decision: Annotated[VoteDecision, Form()],
    comment: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """The reviewer's form: approve or reject with a comment, then back to the request."""
    try:
        service.vote(session, principal, release_id, decision, comment)
    except service.ReleaseError as exc:
        raise http_error(exc) from None
    return RedirectResponse(f"/releases/{release_id}", status_code=status.HTTP_303_SEE_OTHER)

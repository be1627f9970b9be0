"""The quarantine page: stewards look at held instances by reason and by series, with a
preview of each series, and release or delete them in bulk (each decision one ledger entry,
through the same boundary as the API and the CLI)."""

from __future__ import annotations

import io
from typing import Annotated

import pydicom
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse, Response

from insitu.access.models import Role
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.permissions import Public, Steward, get_platform
from insitu.access.web import page_context, page_principal, to_sign_in
from insitu.core.platform import Platform
from insitu.ingest import quarantine
from insitu.ingest.api import QuarantineDecision, decide_quarantine
from insitu.ingest.processor import QUARANTINE_CODES
from insitu.ledger import service as ledger
from insitu.web import imaging
from insitu.web.render import cannot_show, render

router = APIRouter(tags=["pages"], include_in_schema=False)
PlatformDep = Annotated[Platform, Depends(get_platform)]
PREVIEW_EDGE = 384


@router.get("/quarantine", dependencies=[Public], response_model=None)
def quarantine_page(
    request: Request,
    session: DbSessionDep,
    platform: PlatformDep,
    released: Annotated[int | None, Query(ge=0)] = None,
    deleted: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The quarantine by reason and by series, with previews and bulk decisions (stewards)."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in("/quarantine")
    context = page_context(platform, principal, token)
    if principal.role != Role.steward:
        return cannot_show(
            request,
            context,
            "This page is for data stewards",
            f"you are signed in as a {principal.role.value}; quarantined instances are "
            "reviewed by the stewards of the hospital that sent them",
            status.HTTP_403_FORBIDDEN,
        )
    context |= {
        "summary": quarantine.summary(session),
        "codes": QUARANTINE_CODES,
        # Counts only: the page never echoes text from its address.
        "done": (
            f"{released} instance(s) released into the catalogue"
            if released is not None
            else f"{deleted} instance(s) deleted"
            if deleted is not None
            else None
        ),
        "retention_days": platform.settings.quarantine_retention_days,
    }
    return render(request, "quarantine.html", context)


@router.post("/quarantine/decide", response_model=None)
def decide_form(
    principal: Steward,
    platform: PlatformDep,
    decision: Annotated[quarantine.Decision, Form()],
    reason_code: Annotated[str, Form(max_length=32)] = "",
    series_instance_uid: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Release or delete a series or every instance of one reason, then back to the page."""
    body = QuarantineDecision(
        decision=decision,
        reason_code=reason_code or None,
        series_instance_uid=series_instance_uid or None,
    )
    outcome = decide_quarantine(platform, body, ledger.user_actor(principal.user_id))
    verb = "released" if decision == quarantine.Decision.release else "deleted"
    return RedirectResponse(
        f"/quarantine?{verb}={outcome.count}",
        status_code=status.HTTP_303_SEE_OTHER,
    )


@router.get("/quarantine/{sop_instance_uid}/preview.jpg", response_model=None)
def preview(
    sop_instance_uid: str,
    _principal: Steward,
    session: DbSessionDep,
    platform: PlatformDep,
    frame: int = 0,
) -> Response:
    """One frame of a quarantined instance as a JPEG (stewards), rendered like the viewer's."""
    held = quarantine.blob_of(session, sop_instance_uid)
    if held is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such quarantined instance")
    try:
        dataset = pydicom.dcmread(io.BytesIO(platform.store.get(held.blob_digest)))
        picture = imaging.render(
            dataset,
            key=platform.settings.secret_bytes(),
            digest=held.blob_digest,
            frame=frame,
            viewport=(PREVIEW_EDGE, PREVIEW_EDGE),
        )
    except imaging.RenderError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the steward is told, the page goes on
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"this instance's pixels cannot be shown ({type(exc).__name__}); "
            "decide on it from its reason, or delete it",
        ) from None
    return Response(
        picture.jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"}
    )

"""Pages of the web UI that belong to no single domain: the home page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from insitu.access import service as access
from insitu.access.permissions import SESSION_COOKIE, Public, get_platform
from insitu.access.web import page_context
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.web.render import templates

router = APIRouter(tags=["pages"], include_in_schema=False)


def _principal(platform: Platform, token: str) -> access.Principal | None:
    with session_scope(platform.sessions) as session:
        return access.authenticate_token(session, token) if token else None


@router.get("/", dependencies=[Public], response_model=None)
async def home(request: Request, platform: Annotated[Platform, Depends(get_platform)]) -> Response:
    """The home page when signed in; otherwise on to the sign-in form (it shows nothing)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    principal = await run_in_threadpool(_principal, platform, token)
    if principal is None:
        return RedirectResponse("/login?next=/", status_code=status.HTTP_303_SEE_OTHER)
    page: HTMLResponse = templates(request).TemplateResponse(
        request, "home.html", page_context(platform, principal, token)
    )
    return page

"""The tool catalogue in the browser: every version you may see, and one tool's page with
its README, runtime, outputs, review state and how often jobs used it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import Response

from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.permissions import Public, get_platform
from insitu.access.web import page_context, page_principal, to_sign_in
from insitu.core.platform import Platform
from insitu.tools import service
from insitu.tools.api import version_info as info
from insitu.web.render import cannot_show, render

router = APIRouter(tags=["pages"], include_in_schema=False)
PlatformDep = Annotated[Platform, Depends(get_platform)]


@router.get("/tools", dependencies=[Public], response_model=None)
def catalogue(request: Request, session: DbSessionDep, platform: PlatformDep) -> Response:
    """The catalogue (sign-in needed)."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in("/tools")
    rows = [info(session, t, v) for t, v in service.list_versions(session, principal)]
    context = page_context(platform, principal, token) | {"tools": rows}
    return render(request, "tools.html", context)


@router.get("/tools/{name}", dependencies=[Public], response_model=None)
def tool_page(
    name: str,
    request: Request,
    session: DbSessionDep,
    platform: PlatformDep,
    version: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """One tool version (the newest you may see by default)."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in(f"/tools/{name}")
    context = page_context(platform, principal, token)
    found = service.get_version(session, name, version)
    if found is None or not service.can_see(session, found, principal):
        return cannot_show(
            request,
            context,
            "This tool cannot be shown",
            f"no tool {name} you may see",
            status.HTTP_404_NOT_FOUND,
        )
    versions = [v.version for t, v in service.list_versions(session, principal) if t.name == name]
    context |= {"tool": info(session, service.tool_of(session, found), found, full=True),
                "versions": versions}  # fmt: skip
    return render(request, "tool.html", context)

"""Admin pages: accounts and their roles, resource flavors and the quotas in force. Changes
go through the same service functions as the CLI and API, each with its ledger entry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from insitu.access import service as access
from insitu.access.models import Role
from insitu.access.permissions import Admin, Public, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.web import page_context, page_principal, to_sign_in
from insitu.core.platform import Platform
from insitu.jobs import service as jobs
from insitu.jobs.models import Flavor
from insitu.ledger import service as ledger
from insitu.web.render import cannot_show, render

router = APIRouter(tags=["pages"], include_in_schema=False)
PlatformDep = Annotated[Platform, Depends(get_platform)]


@router.get("/admin", dependencies=[Public], response_model=None)
def admin_page(request: Request, session: DbSessionDep, platform: PlatformDep) -> Response:
    """Accounts, flavors and quotas (admins; others are told so)."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in("/admin")
    context = page_context(platform, principal, token)
    if principal.role != Role.admin:
        return cannot_show(
            request,
            context,
            "This page is for admins",
            f"you are signed in as a {principal.role.value}",
            status.HTTP_403_FORBIDDEN,
        )
    jobs.ensure_default_flavors(session)
    settings = platform.settings
    context |= {
        "users": access.list_users(session),
        "roles": [r.value for r in Role],
        "flavors": list(session.scalars(select(Flavor).order_by(Flavor.id))),
        "quotas": {
            "jobs at once, per user": settings.job_max_concurrent,
            "GPU-hours a week, per user": settings.job_gpu_hours_per_week,
            "jobs at once, per project": settings.project_max_concurrent,
            "GPU-hours a week, per project": settings.project_gpu_hours_per_week,
            "viewer frames an hour, per user": settings.viewer_frames_per_hour,
        },
    }
    return render(request, "admin.html", context)


@router.post("/admin/users/{name}/role", response_model=None)
def set_role_form(
    name: str,
    principal: Admin,
    session: DbSessionDep,
    role: Annotated[Role, Form()],
) -> Response:
    """Change an account's role (admins)."""
    user = access.get_user(session, name)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no account {name!r}")
    access.set_role(session, user, role, ledger.user_actor(principal.user_id))
    return RedirectResponse("/admin", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/admin/flavors/{name}", response_model=None)
def set_flavor_form(
    name: str,
    principal: Admin,
    session: DbSessionDep,
    cpus: Annotated[int, Form(ge=1, le=1024)],
    memory_mb: Annotated[int, Form(ge=64)],
    gpus: Annotated[int, Form(ge=0, le=64)],
    max_runtime_s: Annotated[int, Form(ge=1)],
    scratch_mb: Annotated[int, Form(ge=1)],
    backend: Annotated[str, Form(max_length=16)] = "local",
) -> Response:
    """Create or change a flavor (admins)."""
    spec = jobs.FlavorSpec(name, cpus, memory_mb, gpus, max_runtime_s, scratch_mb, backend)
    try:
        jobs.set_flavor(session, spec, principal.user_id)
    except jobs.JobError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return RedirectResponse("/admin", status_code=status.HTTP_303_SEE_OTHER)

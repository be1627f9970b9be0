"""My work, in the browser: your jobs (list, detail with the live log, cancel) and the submit
form, which shows the preflight result before anything is queued. Forms post with the page's
CSRF token; the job API's rules apply unchanged (``jobs.service``)."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.permissions import AnyUser, Public, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.web import page_context, page_principal, to_sign_in
from insitu.core.platform import Platform
from insitu.datasets import service as datasets
from insitu.jobs import service as jobs
from insitu.jobs.models import END_STATES
from insitu.jobs.scheduler import executors
from insitu.releases import service as releases
from insitu.tools import service as tools
from insitu.web.render import cannot_show, render, templates

router = APIRouter(tags=["pages"], include_in_schema=False)
PlatformDep = Annotated[Platform, Depends(get_platform)]


def _choices(session: Session, principal: access.Principal) -> dict[str, Any]:
    return {
        "tools": [
            f"{tool.name}@{version.version}"
            for tool, version in tools.list_versions(session, principal)
            if version.state.value in ("verified", "draft", "in_review")
        ],
        "usable": [f"{d.name}" for d in datasets.usable_datasets(session, principal.user_id)],
        "flavors": [f[0] for f in jobs.DEFAULT_FLAVORS],
    }


def _job_row(session: Session, job: Any) -> dict[str, Any]:
    release = releases.request_of_job(session, job.id)
    return {
        "id": job.id,
        "tool": tools.declared_outputs(session, job.tool_version_id)[0],
        "datasets": ", ".join(
            f"{d.name} v{d.version}"
            for d in (datasets.get_dataset_by_id(session, i) for i in job.dataset_ids)
        ),
        "flavor": job.flavor,
        "state": job.state.value,
        "ended": job.state in END_STATES,
        "state_times": job.state_times,
        "end_reason": job.end_reason,
        "hint": job.hint,
        "command": shlex.join(job.command),
        "release": release,
    }


@router.get("/work/jobs", dependencies=[Public], response_model=None)
def jobs_page(request: Request, session: DbSessionDep, platform: PlatformDep) -> Response:
    """Your jobs, newest first."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in("/work/jobs")
    rows = [_job_row(session, j) for j in jobs.list_jobs(session, principal, limit=100)]
    context = page_context(platform, principal, token) | {"jobs": rows}
    return render(request, "jobs.html", context)


@router.get("/work/jobs/{job_id}", dependencies=[Public], response_model=None)
def job_page(
    job_id: int, request: Request, session: DbSessionDep, platform: PlatformDep
) -> Response:
    """One of your jobs: states, end reason and hint, the live log, cancel, its release."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in(f"/work/jobs/{job_id}")
    context = page_context(platform, principal, token)
    try:
        job = jobs.get_job(session, principal, job_id)
    except jobs.NotYoursError as exc:
        return cannot_show(
            request, context, "This job cannot be shown", str(exc), status.HTTP_404_NOT_FOUND
        )
    context |= {"job": _job_row(session, job), "mine": job.user_id == principal.user_id}
    return render(request, "job.html", context)


@router.post("/work/jobs/{job_id}/cancel", response_model=None)
def cancel_form(
    job_id: int, principal: AnyUser, session: DbSessionDep, platform: PlatformDep
) -> Response:
    """The cancel button."""
    try:
        job = jobs.get_job(session, principal, job_id)
        jobs.cancel(session, executors(platform.settings)[job.backend], principal, job_id)
    except jobs.NotYoursError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None
    except jobs.JobError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return RedirectResponse(f"/work/jobs/{job_id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/work/jobs-new", dependencies=[Public], response_model=None)
def new_job_page(request: Request, session: DbSessionDep, platform: PlatformDep) -> Response:
    """The submit form."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in("/work/jobs-new")
    context = page_context(platform, principal, token) | _choices(session, principal)
    context |= {"form": {}, "preflight": None}
    return render(request, "job_new.html", context)


@router.post("/work/jobs-new", response_model=None)
def submit_form(
    request: Request,
    principal: AnyUser,
    session: DbSessionDep,
    platform: PlatformDep,
    tool: Annotated[str, Form(max_length=140)],
    dataset: Annotated[str, Form(max_length=64)],
    flavor: Annotated[str, Form(max_length=32)],
    command: Annotated[str, Form(max_length=4000)] = "",
    action: Annotated[str, Form(pattern="^(check|submit)$")] = "check",
) -> Response:
    """Check (preflight only) or submit; problems come back on the form with their fixes."""
    try:
        words = shlex.split(command) if command.strip() else None
    except ValueError as exc:
        words, problem = None, f"the command cannot be read: {exc}"
    else:
        problem = ""
    result = jobs.submit(
        session, platform.settings, principal, tool_ref=tool, dataset_names=[dataset],
        flavor=flavor, command=words, dry_run=action == "check" or bool(problem),
    )  # fmt: skip
    if result.job is not None:
        return RedirectResponse(
            f"/work/jobs/{result.job.id}", status_code=status.HTTP_303_SEE_OTHER
        )
    token = page_principal(request, session)[1]
    context = (
        page_context(platform, principal, token)
        | _choices(session, principal)
        | {
            "form": {"tool": tool, "dataset": dataset, "flavor": flavor, "command": command},
            "preflight": result.preflight,
            "command_problem": problem,
        }
    )
    page: HTMLResponse = templates(request).TemplateResponse(
        request, "job_new.html", context,
        status_code=status.HTTP_200_OK if result.preflight.ok and not problem
        else status.HTTP_422_UNPROCESSABLE_CONTENT,
    )  # fmt: skip
    return page

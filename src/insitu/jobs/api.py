"""Job routes: submit (with preflight, or only preflight with ``dry_run``), list, show, logs,
cancel, and the flavors on offer. A job is its owner's; admins and auditors may read any."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from insitu.access.permissions import Admin, AnyUser, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.core.platform import Platform
from insitu.jobs import preflight as checks
from insitu.jobs import service
from insitu.jobs.models import Flavor, Job
from insitu.jobs.scheduler import executors
from insitu.releases import service as releases
from insitu.settings import Settings
from insitu.tools.models import Tool, ToolVersion

router = APIRouter(prefix="/jobs", tags=["jobs"])
flavors_router = APIRouter(prefix="/flavors", tags=["jobs"])
PlatformDep = Annotated[Platform, Depends(get_platform)]


class NewJob(BaseModel):
    """A job: a tool version, datasets you may use, a flavor and a command."""

    tool: str = Field(max_length=140, description="NAME@VERSION")
    datasets: list[str] = Field(max_length=20)
    flavor: str = Field(max_length=32)
    command: list[str] | None = Field(default=None, max_length=200)
    sample: int | None = None
    project: str | None = Field(default=None, max_length=64, description="counts against it")
    dry_run: bool = False


def _problems(items: list[checks.Problem]) -> list[dict[str, str]]:
    return [{"code": p.code, "message": p.message, "fix": p.fix} for p in items]


def _info(
    session: Session, job: Job, position: bool = True, settings: Settings | None = None
) -> dict[str, Any]:
    version = session.get(ToolVersion, job.tool_version_id)
    place = service.queue_position(session, job) if position else None
    wait = (
        service.expected_wait_s(session, settings, place)
        if place is not None and settings is not None
        else None
    )
    tool = session.get(Tool, version.tool_id) if version else None
    release = releases.request_of_job(session, job.id)
    return {
        "id": job.id,
        "state": job.state.value,
        "tool": f"{tool.name}@{version.version}" if tool and version else "",
        "datasets": job.dataset_ids,
        "flavor": job.flavor,
        "command": job.command,
        "state_times": job.state_times,
        "exit_code": job.exit_code,
        "end_reason": job.end_reason,
        "hint": job.hint,
        "queue_position": place,
        "expected_wait_s": wait,
        "run_seconds": job.details.get("run_seconds"),
        "release": {"id": release.id, "state": release.state.value} if release else None,
    }


@router.post("", status_code=status.HTTP_201_CREATED)
def submit(
    body: NewJob, principal: AnyUser, session: DbSessionDep, platform: PlatformDep
) -> dict[str, Any]:
    """Check a job (preflight) and queue it. Problems answer 422, each with its fix; with
    ``dry_run`` nothing is queued and the preflight is the answer. From inside a job, only
    the parent job's datasets may be named."""
    if principal.job_id is not None:
        allowed = service.dataset_names_of(session, principal.job_id)
        outside = [d for d in body.datasets if d.partition("@")[0] not in allowed]
        if outside:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"from inside job {principal.job_id}, only its datasets may be used; "
                f"not {', '.join(outside)}",
            )
    result = service.submit(
        session,
        platform.settings,
        principal,
        tool_ref=body.tool,
        dataset_names=body.datasets,
        flavor=body.flavor,
        command=body.command,
        sample=body.sample,
        dry_run=body.dry_run,
        project=body.project,
    )
    answer: dict[str, Any] = {
        "ok": result.preflight.ok,
        "problems": _problems(result.preflight.problems),
        "warnings": _problems(result.preflight.warnings),
    }
    if not result.preflight.ok:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=answer)
    if result.job is not None:
        answer["job"] = _info(session, result.job)
    return answer


@router.get("")
def list_jobs(
    principal: AnyUser,
    session: DbSessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Your jobs, newest first."""
    return [
        _info(session, j, position=False)
        for j in service.list_jobs(session, principal, limit, offset)
    ]


def _mine(session: Session, principal: Any, job_id: int) -> Job:
    try:
        return service.get_job(session, principal, job_id)
    except service.NotYoursError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None


@router.get("/{job_id}")
def show_job(
    job_id: int, principal: AnyUser, session: DbSessionDep, platform: PlatformDep
) -> dict[str, Any]:
    """A job of yours: its state and when it got there, its queue position and expected
    wait, why it ended."""
    return _info(session, _mine(session, principal, job_id), settings=platform.settings)


@router.get("/{job_id}/logs", response_class=PlainTextResponse)
def job_logs(job_id: int, principal: AnyUser, session: DbSessionDep, platform: PlatformDep) -> str:
    """The job's log: the last 1 MB, redacted, for its owner; all of it for admins."""
    job = _mine(session, principal, job_id)
    executor = executors(platform.settings)[job.backend]
    return service.read_logs(session, executor, principal, job_id)


@router.post("/{job_id}/cancel")
def cancel_job(
    job_id: int, principal: AnyUser, session: DbSessionDep, platform: PlatformDep
) -> dict[str, Any]:
    """Stop a job of yours."""
    job = _mine(session, principal, job_id)
    try:
        service.cancel(session, executors(platform.settings)[job.backend], principal, job_id)
    except service.NotYoursError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None
    except service.JobError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return _info(session, job)


@flavors_router.get("")
def list_flavors(principal: AnyUser, session: DbSessionDep) -> list[dict[str, Any]]:
    """The resource flavors on offer (the four defaults until the admin sets others)."""
    stored = list(session.scalars(select(Flavor).order_by(Flavor.id)))
    rows = [
        (f.name, f.cpus, f.memory_mb, f.gpus, f.max_runtime_s, f.scratch_mb, f.backend)
        for f in stored
    ] or [(*f, "local") for f in service.DEFAULT_FLAVORS]
    keys = ("name", "cpus", "memory_mb", "gpus", "max_runtime_s", "scratch_mb", "backend")
    return [dict(zip(keys, row, strict=True)) for row in rows]


class NewFlavor(BaseModel):
    """A resource flavor (whole GPUs; a MIG profile where the host offers them)."""

    cpus: int = Field(ge=1, le=1024)
    memory_mb: int = Field(ge=64)
    gpus: int = Field(default=0, ge=0, le=64)
    max_runtime_s: int = Field(ge=1)
    scratch_mb: int = Field(default=1024, ge=1)
    backend: str = Field(default="local", max_length=16)
    mig_profile: str | None = Field(default=None, max_length=32)


@flavors_router.put("/{name}")
def set_flavor(
    name: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,31}$")],
    body: NewFlavor,
    principal: Admin,
    session: DbSessionDep,
) -> dict[str, Any]:
    """Create or change a flavor (admins)."""
    try:
        flavor = service.set_flavor(
            session, service.FlavorSpec(name=name, **body.model_dump()), principal.user_id
        )
    except service.JobError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return {"name": flavor.name, **body.model_dump()}

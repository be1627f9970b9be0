"""Tool routes: maintainers publish bundles, reviewers verify or reject, everyone finds verified
tools. Drafts and versions in review are visible to their maintainer and the reviewers only;
anyone else gets the same 403 as for a name never published, so drafts cannot be probed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.models import Role
from insitu.access.permissions import AnyUser, get_platform, require
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.service import Principal
from insitu.core.platform import Platform
from insitu.datasets import service as datasets
from insitu.db import session_scope
from insitu.tools import service
from insitu.tools.environment import EnvironmentBuildError, build_settings
from insitu.tools.manifest import MAX_BUNDLE_BYTES, ManifestError
from insitu.tools.models import Tool, ToolVersion

router = APIRouter(prefix="/tools", tags=["tools"])
PlatformDep = Annotated[Platform, Depends(get_platform)]
Maintainer = Annotated[Principal, Depends(require(Role.maintainer, Role.admin))]
Reviewer = Annotated[Principal, Depends(require(Role.admin, Role.steward))]


class ReviewNote(BaseModel):
    """A reviewer's note (required when rejecting)."""

    note: str = Field(default="", max_length=5_000)


class RunCheck(BaseModel):
    """The datasets (names; their newest versions) a run would use."""

    datasets: list[str] = Field(min_length=1, max_length=20)


class Deprecation(BaseModel):
    """Why a version is retired, and what replaces it (NAME@VERSION)."""

    reason: str = Field(min_length=1, max_length=2_000)
    successor: str = Field(min_length=3, max_length=140)


def version_info(
    session: Session, tool: Tool, version: ToolVersion, full: bool = False
) -> dict[str, Any]:
    """A tool version as the API and the catalogue pages show it."""
    info: dict[str, Any] = {
        "name": tool.name,
        "version": version.version,
        "state": version.state.value,
        "summary": version.summary,
        "kind": version.kind,
        "runtime": version.runtime,
        "sha256": version.digest,
        "min_flavor": version.min_flavor,
        "gpu": version.gpu,
    }
    if full:
        names = access.user_names(session, {tool.maintainer_id})
        info |= {
            "maintainer": names.get(tool.maintainer_id, ""),
            "license": version.license,
            "command": version.command,
            "outputs": version.outputs,
            "image": version.image,
            "readme_html": service.readme_html(version.readme),
            "review_note": version.review_note,
            "deprecated_reason": version.deprecated_reason,
            "successor": version.successor,
            "jobs": service.jobs_using(session, tool, version),
        }
    return info


def _refused(exc: Exception) -> HTTPException:
    if isinstance(exc, service.NotAllowedError):
        code = status.HTTP_403_FORBIDDEN
    elif isinstance(exc, service.ToolStateError):
        code = status.HTTP_409_CONFLICT
    else:
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return HTTPException(code, detail=str(exc))


def _visible(session: Session, principal: Principal, name: str, version: str | None) -> ToolVersion:
    found = service.get_version(session, name, version)
    if found is None or not service.can_see(session, found, principal):
        label = f"{name}@{version}" if version else name
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"no tool {label} you may see")
    return found


def _publish(platform: Platform, archive: bytes, principal: Principal, sha: str | None) -> Any:
    with session_scope(platform.sessions) as session:
        published = service.publish(
            session,
            platform.store,
            build_settings(platform.settings),
            archive,
            principal,
            declared_sha256=sha,
        )
        version = published.version
        info = version_info(session, service.tool_of(session, version), version)
        environment = published.environment
        info["environment_built"] = bool(environment and environment.built)
        return info


@router.post("", status_code=status.HTTP_201_CREATED)
async def publish(
    request: Request,
    principal: Maintainer,
    platform: PlatformDep,
    content_sha256: Annotated[str | None, Header(alias="X-Content-SHA256")] = None,
) -> dict[str, Any]:
    """Publish a tool version: the bundle folder as a tar archive in the request body
    (`insitu tool publish` makes it). The environment is built before anything is stored."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_BUNDLE_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"bundles are limited to {MAX_BUNDLE_BYTES // 1024**2} MiB: keep data out",
            )
    try:
        info: dict[str, Any] = await run_in_threadpool(
            _publish, platform, bytes(received), principal, content_sha256
        )
    except (service.ToolError, ManifestError, EnvironmentBuildError) as exc:
        raise _refused(exc) from None
    return info


@router.get("")
def list_tools(principal: AnyUser, session: DbSessionDep) -> list[dict[str, Any]]:
    """Tool versions you may see: verified and deprecated ones, and your own."""
    return [version_info(session, t, v) for t, v in service.list_versions(session, principal)]


@router.get("/{name}")
def show_tool(
    name: str,
    principal: AnyUser,
    session: DbSessionDep,
    version: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """A tool version (the newest verified by default), with its README rendered safely."""
    found = _visible(session, principal, name, version)
    return version_info(session, service.tool_of(session, found), found, full=True)


def _act(
    session: Session,
    principal: Principal,
    name: str,
    version: str,
    action: Callable[[ToolVersion], None],
) -> dict[str, Any]:
    found = _visible(session, principal, name, version)
    try:
        action(found)
    except service.ToolError as exc:
        raise _refused(exc) from None
    return version_info(session, service.tool_of(session, found), found)


@router.post("/{name}/{version}/submit")
def submit(name: str, version: str, principal: AnyUser, session: DbSessionDep) -> dict[str, Any]:
    """Ask for review of a draft (its maintainer)."""
    return _act(session, principal, name, version, lambda v: service.submit(session, v, principal))


@router.post("/{name}/{version}/verify")
def verify(
    name: str, version: str, body: ReviewNote, principal: Reviewer, session: DbSessionDep
) -> dict[str, Any]:
    """Verify a version in review (admins and stewards, never its maintainer)."""
    return _act(
        session,
        principal,
        name,
        version,
        lambda v: service.verify(session, v, principal, body.note),
    )


@router.post("/{name}/{version}/reject")
def reject(
    name: str, version: str, body: ReviewNote, principal: Reviewer, session: DbSessionDep
) -> dict[str, Any]:
    """Send a version in review back to draft, saying what to change."""
    return _act(
        session,
        principal,
        name,
        version,
        lambda v: service.reject(session, v, principal, body.note),
    )


@router.post("/{name}/{version}/deprecate")
def deprecate(
    name: str, version: str, body: Deprecation, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Retire a verified version, naming its successor (its maintainer, admins, stewards)."""
    return _act(
        session,
        principal,
        name,
        version,
        lambda v: service.deprecate(session, v, principal, body.reason, body.successor),
    )


@router.post("/{name}/{version}/runnable")
def runnable(
    name: str, version: str, body: RunCheck, principal: AnyUser, session: DbSessionDep
) -> dict[str, Any]:
    """Whether you may run this version on the named datasets (newest versions), and why not:
    the tool's side of the decision a job's preflight makes (nothing is changed)."""
    found = _visible(session, principal, name, version)
    targets = []
    for dataset_name in body.datasets:
        target = datasets.get_dataset(session, dataset_name)
        if target is None or not datasets.can_see_dataset(session, principal.user_id, target):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"no dataset {dataset_name!r} of yours"
            )
        targets.append(target)
    decision = service.check_runnable(session, found, targets, principal.user_id)
    return {"allowed": decision.allowed, "reasons": decision.reasons}

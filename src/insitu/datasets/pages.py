"""The stewards' buttons on a dataset's explorer page: release, publish, invalidate, grant
and revoke. Forms post with the page's CSRF token; the service decides, as for the API and
the CLI, and every change is a ledger entry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from insitu.access import service as access
from insitu.access.permissions import AnyUser, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.core.platform import Platform
from insitu.datasets import service
from insitu.datasets.models import Dataset
from insitu.datasets.view import remove_view

router = APIRouter(tags=["pages"], include_in_schema=False)
PlatformDep = Annotated[Platform, Depends(get_platform)]
ACTIONS = ("release", "publish", "invalidate")


def _back(name: str, version: int) -> RedirectResponse:
    return RedirectResponse(
        f"/explore/{name}?version={version}", status_code=status.HTTP_303_SEE_OTHER
    )


def _error(exc: service.DatasetError) -> HTTPException:
    code = (status.HTTP_403_FORBIDDEN if isinstance(exc, service.NotStewardError)
            else status.HTTP_409_CONFLICT)  # fmt: skip
    return HTTPException(code, detail=str(exc))


def _grant(session: Session, dataset: Dataset, actor_id: int, user: str, project: str) -> None:
    if bool(user) == bool(project):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail="name either an account or a project to grant to")  # fmt: skip
    if user:
        grantee = access.get_user(session, user)
        if grantee is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                detail=f"no account named {user!r}")  # fmt: skip
        service.grant(session, dataset, actor_id, user_id=grantee.id)
        return
    team = access.get_project(session, project)
    if team is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"no project named {project!r}")  # fmt: skip
    service.grant(session, dataset, actor_id, project_id=team.id)


@router.post("/explore/{name}/{action}", response_model=None)
def lifecycle(
    name: str,
    action: str,
    principal: AnyUser,
    session: DbSessionDep,
    platform: PlatformDep,
    version: Annotated[int, Form(ge=1)],
    reason: Annotated[str, Form(max_length=2000)] = "",
    user: Annotated[str, Form(max_length=64)] = "",
    project: Annotated[str, Form(max_length=64)] = "",
    grant_id: Annotated[int, Form()] = 0,
) -> Response:
    """release | publish | invalidate | grant | revoke, by one of the dataset's stewards."""
    dataset = service.get_dataset(session, name, version)
    if dataset is None or not service.is_steward(session, dataset, principal.user_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"only the stewards of {name}")
    try:
        if action == "release":
            service.release(session, dataset, principal.user_id, platform.publication)
        elif action == "publish":
            service.publish(session, dataset, principal.user_id, platform.publication)
        elif action == "invalidate":
            if not reason.strip():
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                    detail="say why the version can no longer be used")  # fmt: skip
            service.invalidate(session, dataset, reason, principal.user_id)
            remove_view(platform.settings.resolved_views_root, dataset)
        elif action == "grant":
            _grant(session, dataset, principal.user_id, user.strip(), project.strip())
        elif action == "revoke":
            service.revoke(session, dataset, grant_id, principal.user_id)
        else:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no action {action!r}")
    except service.DatasetError as exc:
        raise _error(exc) from None
    return _back(name, version)

"""Explorer pages (first part): the image viewer of one series. It shows rendered frames from
the WADO-RS routes (JPEG, window, budget rules), never pixel values; scrolling, window/level
(presets, fields, drag) and zoom run in the browser (``static/viewer.js``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response

from insitu.access.permissions import AnyUser, Public, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.web import page_context, page_principal, to_sign_in
from insitu.core.platform import Platform
from insitu.datasets import service as datasets
from insitu.web import imaging, viewing
from insitu.web.render import templates

router = APIRouter(tags=["pages"], include_in_schema=False)
PlatformDep = Annotated[Platform, Depends(get_platform)]


PAGE_SIZE = 20


@router.get("/explore", dependencies=[Public], response_class=HTMLResponse)
def dataset_list(
    request: Request,
    session: DbSessionDep,
    platform: PlatformDep,
    q: Annotated[str, Query(max_length=100)] = "",
    modality: Annotated[str, Query(max_length=16)] = "",
    body_part: Annotated[str, Query(max_length=16)] = "",
    state: Annotated[str, Query(pattern="^(|draft|released|published|invalidated)$")] = "",
    tier: Annotated[str, Query(pattern="^(|real|synthetic)$")] = "",
    sort: Annotated[str, Query(pattern="^(name|newest|released)$")] = "name",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Find datasets: published ones for everyone, and those you steward or were granted."""
    principal, token = page_principal(request, session)
    wanted = datasets.DatasetFilter(q, modality, body_part, state, tier, sort)
    total, rows = datasets.search_datasets(
        session, principal.user_id if principal else None, wanted, PAGE_SIZE,
        (page - 1) * PAGE_SIZE,
    )  # fmt: skip
    context = (page_context(platform, principal, token) if principal else {}) | {
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "wanted": wanted,
        "query": {k: v for k, v in request.query_params.items() if k != "page"},
    }
    shown: HTMLResponse = templates(request).TemplateResponse(request, "explore.html", context)
    return shown


@router.get("/viewer/{study}/{series}", dependencies=[Public], response_model=None)
def viewer_page(
    study: str, series: str, request: Request, session: DbSessionDep, platform: PlatformDep
) -> Response:
    """The viewer for one series of a dataset you may use (sign-in needed)."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in(f"/viewer/{study}/{series}")
    context = page_context(platform, principal, token)
    scope = request.app.state.viewer_scopes.get(session, principal.user_id)
    try:
        instances = viewing.search_instances(session, scope, study, series)
        shown = viewing.search_series(session, scope, study, {"SeriesInstanceUID": series})
    except viewing.NotUsableError as exc:
        page: HTMLResponse = templates(request).TemplateResponse(
            request, "viewer_missing.html", context | {"message": str(exc)},
            status_code=status.HTTP_404_NOT_FOUND,
        )  # fmt: skip
        return page
    context |= {
        "study": study,
        "series": shown[0] if shown else {"SeriesInstanceUID": series},
        "instances": [i["SOPInstanceUID"] for i in instances],
        "presets": imaging.PRESETS,
        "min_width": imaging.MIN_WINDOW_STORED,
    }
    shown_page: HTMLResponse = templates(request).TemplateResponse(request, "viewer.html", context)
    return shown_page


api = APIRouter(prefix="/explore", tags=["explorer"])


@api.get("/studies/{study}/series/{series}/instances/{instance}/header")
def instance_header(
    study: str,
    series: str,
    instance: str,
    request: Request,
    principal: AnyUser,
    session: DbSessionDep,
    platform: PlatformDep,
    search: Annotated[str, Query(max_length=200)] = "",
) -> list[dict[str, Any]]:
    """The full de-identified DICOM header of an instance of a dataset you may use, as a tree;
    binary elements (pixel data too) give only their length and SHA-256."""
    scope = request.app.state.viewer_scopes.get(session, principal.user_id)
    try:
        return viewing.header_tree(session, platform.store, scope, (study, series, instance),
                                   search)  # fmt: skip
    except viewing.NotUsableError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None

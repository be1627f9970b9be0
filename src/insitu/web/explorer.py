"""Explorer pages (first part): the image viewer of one series. It shows rendered frames from
the WADO-RS routes (JPEG, window, budget rules), never pixel values; scrolling, window/level
(presets, fields, drag) and zoom run in the browser (``static/viewer.js``)."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response

from insitu.access import service as access
from insitu.access.permissions import AnyUser, Public, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.web import page_context, page_principal, to_sign_in
from insitu.core.platform import Platform
from insitu.datasets import service as datasets
from insitu.jobs import service as jobs
from insitu.ledger import service as ledger
from insitu.tools import service as tools
from insitu.web import imaging, viewing
from insitu.web.render import cannot_show, render

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
    sort: Annotated[str, Query(pattern="^(name|newest|released|largest)$")] = "name",
    min_instances: Annotated[str, Query(pattern=r"^\d{0,9}$")] = "",
    max_instances: Annotated[str, Query(pattern=r"^\d{0,9}$")] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Find datasets: published ones for everyone, and those you steward or were granted."""
    principal, token = page_principal(request, session)
    wanted = datasets.DatasetFilter(
        q, modality, body_part, state, tier, sort,
        int(min_instances) if min_instances else None,
        int(max_instances) if max_instances else None,
    )  # fmt: skip
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
    return render(request, "explore.html", context)


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
        return cannot_show(
            request, context, "This series cannot be shown", str(exc), status.HTTP_404_NOT_FOUND
        )
    context |= {
        "study": study,
        "series": shown[0] if shown else {"SeriesInstanceUID": series},
        "instances": [i["SOPInstanceUID"] for i in instances],
        "presets": imaging.PRESETS,
        "min_width": imaging.MIN_WINDOW_STORED,
    }
    return render(request, "viewer.html", context)


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


TABS = {"details": "Details", "studies": "Studies and series", "history": "History",
        "access": "Access"}  # fmt: skip


def _access_rows(session: Any, dataset_id: int) -> list[dict[str, Any]]:
    rows = []
    for job in jobs.jobs_on_dataset(session, dataset_id):
        times = job.state_times
        ended = next((times[s] for s in ("succeeded", "failed", "cancelled", "timed_out",
                                          "lost") if s in times), "")  # fmt: skip
        rows.append(
            {
                "created": job.created_at,
                "user": access.user_names(session, {job.user_id}).get(job.user_id, ""),
                "type": "batch job",
                "tool": tools.declared_outputs(session, job.tool_version_id)[0],
                "image": tools.image_of(session, job.tool_version_id),
                "resources": job.flavor,
                "start": times.get("running", ""),
                "end": ended,
                "run_seconds": job.details.get("run_seconds"),
                "status": job.state.value + (f" ({job.end_reason})" if job.end_reason else ""),
                "job_type": f"sample of {job.sample} subjects" if job.sample else "whole dataset",
                "command": shlex.join(job.command),
            }
        )
    return rows


@router.get("/explore/{name}", dependencies=[Public], response_model=None)
def dataset_page(
    name: str,
    request: Request,
    session: DbSessionDep,
    platform: PlatformDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    tab: Annotated[str, Query(pattern="^(details|studies|history|access)$")] = "details",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    modality: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    """A dataset version's page: details and charts for whoever may see it; studies, series
    and images for those who may use it; history; access (its stewards and auditors)."""
    principal, token = page_principal(request, session)
    user_id = principal.user_id if principal else None
    dataset = datasets.get_dataset(session, name, version)
    auditor = principal is not None and principal.role.value == "auditor"
    visible = dataset is not None and (
        datasets.is_public(dataset)
        or auditor  # auditors read every dataset's history and access log
        or (user_id is not None and datasets.can_see_dataset(session, user_id, dataset))
    )
    if principal is None and not visible:  # any name, so that none is revealed
        return to_sign_in(f"/explore/{name}")
    context = page_context(platform, principal, token) if principal else {}
    if dataset is None or not visible:
        return cannot_show(
            request,
            context,
            "This dataset cannot be shown",
            f"no dataset {name!r} that you may see",
            status.HTTP_404_NOT_FOUND,
        )
    steward = user_id is not None and datasets.is_steward(session, dataset, user_id)
    use = datasets.UseDecision(False, "sign in, then ask its stewards for access")
    if user_id is not None:
        use = datasets.can_use_dataset(session, user_id, dataset)
    grants = datasets.grants_of(session, dataset) if steward else []
    context |= {
        "dataset": dataset,
        "tab": tab,
        "tabs": TABS,
        "steward": steward,
        "may_see_access": steward or auditor,
        "use": use,
        "statistics": datasets.statistics(session, dataset, user_id),
        "record": datasets.citable(session, dataset, platform.publication, user_id),
        "page": page,
        "modality": modality,
        "grants": grants,
        "names": access.user_names(session, {g.user_id for g in grants if g.user_id}),
        "projects": access.project_names(session, {g.project_id for g in grants if g.project_id}),
    }
    if tab == "studies" and use.allowed and user_id is not None:
        scope = viewing.Scope(user_id, (dataset.id,))
        filters = {"ModalitiesInStudy": modality} if modality else {}
        studies = viewing.search_studies(session, scope, filters, 20, (page - 1) * 20)
        context["studies"] = [
            s | {"series": [
                row | {"first_instance": viewing.first_instance(
                    session, scope, s["StudyInstanceUID"], row["SeriesInstanceUID"])}
                for row in viewing.search_series(session, scope, s["StudyInstanceUID"], {})
            ]}
            for s in studies
        ]  # fmt: skip
    elif tab == "history":
        context["entries"] = [ledger.entry_as_dict(e) for e in ledger.entries_about(
            session, datasets.subject_of(dataset))]  # fmt: skip
        context["tree_size"] = ledger.tree_size(session)
    elif tab == "access" and context["may_see_access"]:
        context["jobs"] = _access_rows(session, dataset.id)
    return render(request, "dataset.html", context)


@router.get("/header/{study}/{series}/{instance}", dependencies=[Public], response_model=None)
def header_page(
    study: str,
    series: str,
    instance: str,
    request: Request,
    session: DbSessionDep,
    platform: PlatformDep,
    search: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """The DICOM header of an instance you may use, as a tree you can search and fold."""
    principal, token = page_principal(request, session)
    if principal is None:
        return to_sign_in(f"/header/{study}/{series}/{instance}")
    context = page_context(platform, principal, token)
    scope = request.app.state.viewer_scopes.get(session, principal.user_id)
    try:
        tree = viewing.header_tree(session, platform.store, scope, (study, series, instance),
                                   search)  # fmt: skip
    except viewing.NotUsableError as exc:
        return cannot_show(
            request, context, "This header cannot be shown", str(exc), status.HTTP_404_NOT_FOUND
        )
    context |= {"tree": tree, "search": search, "uids": (study, series, instance)}
    return render(request, "header.html", context)

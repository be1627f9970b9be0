"""Public pages of dataset versions: the landing page (with schema.org JSON-LD), DataCite JSON
and XML, DCAT-AP (Turtle) and PID resolution.

A version that was ever published is public, even once invalidated (its page then says why).
Any other version is shown only to callers who may see it (its stewards and grantees, signed
in with the browser or a token); to everyone else it does not exist (404), so that names of
unpublished datasets cannot be probed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from insitu.access.permissions import SESSION_COOKIE, MaybeUser, Public, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.web import page_context
from insitu.core.platform import Platform
from insitu.datasets import fair, service
from insitu.datasets.models import Dataset
from insitu.web.render import templates

router = APIRouter(tags=["public dataset metadata"])
PlatformDep = Annotated[Platform, Depends(get_platform)]


def _shown(session: Session, name: str, version: int, principal: MaybeUser) -> Dataset:
    dataset = service.get_dataset(session, name, version)
    if dataset is not None and (
        service.is_public(dataset)
        or (principal is not None and service.can_see_dataset(session, principal.user_id, dataset))
    ):
        return dataset
    raise HTTPException(
        status.HTTP_404_NOT_FOUND,
        detail=f"no published dataset {name} v{version}; unpublished versions are shown only "
        "to their stewards and grantees, signed in",
    )


def _citable(
    session: Session, platform: Platform, dataset: Dataset, principal: MaybeUser
) -> fair.Citable:
    return service.citable(
        session, dataset, platform.publication, principal.user_id if principal else None
    )


@router.get("/datasets/{name}/v{version}", response_class=HTMLResponse)
def landing_page(
    request: Request,
    name: str,
    version: int,
    principal: MaybeUser,
    session: DbSessionDep,
    platform: PlatformDep,
) -> HTMLResponse:
    """The landing page of a dataset version, with its citation and JSON-LD."""
    dataset = _shown(session, name, version, principal)
    record = _citable(session, platform, dataset, principal)
    context: dict[str, Any] = {
        "record": record,
        "jsonld": fair.schema_org(record),
        "apa": fair.citation_apa(record),
        "bibtex": fair.citation_bibtex(record),
        "public": service.is_public(dataset),
        "principal": None,
    }
    token = request.cookies.get(SESSION_COOKIE, "")
    if principal is not None and token:
        context |= page_context(platform, principal, token)
    return templates(request).TemplateResponse(request, "dataset_landing.html", context)


def shown_record(
    name: str, version: int, principal: MaybeUser, session: DbSessionDep, platform: PlatformDep
) -> fair.Citable:
    """The public facts of the version in the path, if the caller may see it."""
    return _citable(session, platform, _shown(session, name, version, principal), principal)


ShownRecord = Annotated[fair.Citable, Depends(shown_record)]


@router.get("/datasets/{name}/v{version}/schema.jsonld", dependencies=[Public])
def schema_org(record: ShownRecord) -> JSONResponse:
    """The schema.org Dataset description (JSON-LD)."""
    return JSONResponse(fair.schema_org(record), media_type="application/ld+json")


@router.get("/datasets/{name}/v{version}/datacite.json", dependencies=[Public])
def datacite_json(record: ShownRecord) -> JSONResponse:
    """DataCite metadata (schema 4) as the DataCite REST API takes it."""
    return JSONResponse(
        {"data": {"type": "dois", "attributes": fair.datacite_json(record)}},
        media_type="application/vnd.api+json",
    )


@router.get("/datasets/{name}/v{version}/datacite.xml", dependencies=[Public])
def datacite_xml(record: ShownRecord) -> Response:
    """DataCite metadata (kernel-4 XML)."""
    return Response(fair.datacite_xml(record), media_type="application/xml")


@router.get("/datasets/{name}/v{version}/dcat.ttl", dependencies=[Public])
def dcat(record: ShownRecord, platform: PlatformDep) -> Response:
    """DCAT-AP with HealthDCAT-AP fields, in Turtle."""
    catalogue = f"{platform.publication.public_url}/datasets"
    return Response(fair.dcat_turtle(record, catalogue), media_type="text/turtle")


@router.get("/pid/{identifier:path}", response_model=None)
def resolve_pid(identifier: str, principal: MaybeUser, session: DbSessionDep) -> RedirectResponse:
    """Resolve a PID to its landing page (published versions; others for those who may
    see them)."""
    dataset = service.get_by_pid(session, identifier)
    if dataset is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no dataset has the PID {identifier}"
        )
    _shown(session, dataset.name, dataset.version, principal)
    return RedirectResponse(
        f"/datasets/{dataset.name}/v{dataset.version}", status_code=status.HTTP_302_FOUND
    )

"""Catalogue routes (steward role)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from insitu.access.permissions import DbSession, Steward
from insitu.catalog import service

router = APIRouter(prefix="/catalog", tags=["catalog"])
DateParam = Annotated[str | None, Query(pattern=r"^\d{8}$", description="YYYYMMDD")]


@router.get("/series")
def search_series(
    _principal: Steward,
    session: DbSession,
    modality: str | None = None,
    body_part: str | None = None,
    manufacturer: str | None = None,
    subject: str | None = None,
    study_date_from: DateParam = None,
    study_date_to: DateParam = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Search series by modality, body part, manufacturer, subject and (shifted) study date."""
    query = service.SeriesQuery(
        modality=modality,
        body_part=body_part,
        manufacturer=manufacturer,
        subject=subject,
        study_date_from=study_date_from,
        study_date_to=study_date_to,
        limit=limit,
        offset=offset,
    )
    total, items = service.search_series(session, query)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/subjects")
def list_subjects(
    _principal: Steward,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Subjects with their study counts and clinical data."""
    return {"items": service.list_subjects(session, limit, offset)}


@router.get("/stats")
def stats(_principal: Steward, session: DbSession) -> dict[str, int]:
    """How much is catalogued."""
    return service.counts(session)

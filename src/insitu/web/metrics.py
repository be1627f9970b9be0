"""Prometheus metrics for operators (admins only): process figures and platform counts."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from insitu.access.permissions import Admin, DbSession
from insitu.catalog import service as catalog
from insitu.ledger import service as ledger

router = APIRouter(tags=["metrics"], include_in_schema=False)


@router.get("/metrics")
def metrics(_principal: Admin, session: DbSession) -> Response:
    """Prometheus text format: process figures, catalogue and ledger sizes."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    counts = catalog.counts(session)
    instances = Gauge("insitu_catalog_objects", "Catalogued objects", ["kind"], registry=registry)
    for kind, value in counts.items():
        instances.labels(kind=kind).set(value)
    Gauge("insitu_ledger_entries", "Entries in the ledger", registry=registry).set(
        ledger.tree_size(session)
    )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

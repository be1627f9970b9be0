"""Ingest routes: streamed uploads, batch reports and the quarantine (steward role)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from insitu.access.permissions import DbSession, Steward, get_platform
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ingest import quarantine as quarantine_service
from insitu.ingest import service
from insitu.ingest.deid.ocr import OcrUnavailableError
from insitu.ingest.deid.table import Options, OptionsError
from insitu.ingest.sources import SourceItem, iter_sources
from insitu.ledger import service as ledger

router = APIRouter(tags=["ingest"])
PlatformDep = Annotated[Platform, Depends(get_platform)]
_SITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _rename(items: Iterable[SourceItem], spool: Path, filename: str) -> Iterator[SourceItem]:
    """Report upload items under the uploaded file's name rather than the spool path."""
    for item in items:
        source = item.source.replace(str(spool), filename, 1)
        yield SourceItem(source=source, path=item.path, data=item.data, error=item.error)


@router.post("/uploads", status_code=status.HTTP_201_CREATED)
async def upload(
    request: Request,
    principal: Steward,
    platform: PlatformDep,
    site: Annotated[str | None, Query(pattern=_SITE_PATTERN)] = None,
    options: str | None = None,
    filename: Annotated[str, Query(max_length=255)] = "upload",
) -> dict[str, Any]:
    """Upload one DICOM file or a zip archive as the raw request body (streamed to a spool
    file outside INSITU_HOME, de-identified, then deleted). Returns the batch's QA report."""
    settings = platform.settings
    try:
        deid_options = Options.parse(options if options is not None else settings.deid_options)
    except OptionsError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    limit = settings.upload_max_bytes
    fd, name = tempfile.mkstemp(prefix="insitu-upload-", dir=settings.tmp_dir)
    spool = Path(name)
    try:
        received = 0
        with os.fdopen(fd, "wb") as handle:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        detail=f"upload is over the {limit} byte limit (INSITU_UPLOAD_MAX_BYTES); "
                        "split it or use `insitu ingest` on the platform host",
                    )
                handle.write(chunk)
        if received == 0:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="the upload is empty")
        items = _rename(iter_sources([spool]), spool, Path(filename).name)
        try:
            result = await run_in_threadpool(
                service.ingest,
                platform,
                items,
                site=site or settings.site,
                options=deid_options,
                source_kind="upload",
                workers=1,
                actor=ledger.user_actor(principal.user_id),
            )
        except OcrUnavailableError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            spool.unlink()
    return result.report


@router.get("/ingest/batches/{batch_id}")
def get_batch(batch_id: int, _principal: Steward, session: DbSession) -> dict[str, Any]:
    """The QA report of one ingest batch."""
    batch = service.get_batch(session, batch_id)
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no ingest batch {batch_id}")
    return {
        "id": batch.id,
        "source": batch.source,
        "status": batch.status.value,
        "started_at": batch.started_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        "report": batch.report,
    }


@router.get("/quarantine")
def quarantine(
    _principal: Steward,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    reason_code: Annotated[str | None, Query(max_length=32)] = None,
    series_instance_uid: Annotated[str | None, Query(max_length=64)] = None,
    batch_id: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """Instances held back because their pixels may show identity, with the reason;
    filtered by reason code, series or batch."""
    selection = quarantine_service.Selection(
        reason_code=reason_code, series_instance_uid=series_instance_uid, batch_id=batch_id
    )
    return {"items": quarantine_service.list_items(session, selection, limit, offset)}


@router.get("/quarantine/summary")
def quarantine_summary(_principal: Steward, session: DbSession) -> dict[str, Any]:
    """The quarantine grouped by reason and by series, oldest series first."""
    return quarantine_service.summary(session)


class QuarantineDecision(BaseModel):
    """Release or delete the quarantined instances that match every given criterion."""

    decision: quarantine_service.Decision
    reason_code: str | None = Field(default=None, max_length=32)
    series_instance_uid: str | None = Field(default=None, max_length=64)
    batch_id: int | None = Field(default=None, ge=1)
    sop_instance_uids: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=10_000
    )


def decide_quarantine(
    platform: Platform, body: QuarantineDecision, actor: str
) -> quarantine_service.Outcome:
    """The decision's boundary: one transaction with its ledger entry, then blob deletes."""
    selection = quarantine_service.Selection(
        reason_code=body.reason_code,
        series_instance_uid=body.series_instance_uid,
        sop_instance_uids=tuple(body.sop_instance_uids),
        batch_id=body.batch_id,
    )
    try:
        with session_scope(platform.sessions) as session:
            outcome = quarantine_service.decide(
                session, platform.store, selection, body.decision, actor
            )
    except quarantine_service.QuarantineError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    quarantine_service.delete_blobs(platform.store, outcome.unreferenced)
    return outcome


@router.post("/quarantine/decisions")
def quarantine_decision(
    body: QuarantineDecision, principal: Steward, platform: PlatformDep
) -> dict[str, Any]:
    """Release quarantined instances into the catalogue, or delete them (steward role)."""
    return decide_quarantine(platform, body, ledger.user_actor(principal.user_id)).as_dict()

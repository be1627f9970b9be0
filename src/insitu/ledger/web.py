"""The ledger's public page: the newest signed checkpoint, which witnesses cosigned it, the
newest entries, and how to verify all of it from outside."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from insitu.access.permissions import DbSession as DbSessionDep
from insitu.access.permissions import Public, get_platform
from insitu.access.web import page_context, page_principal
from insitu.core.platform import Platform
from insitu.ledger import service
from insitu.web.render import render

router = APIRouter(tags=["pages"], include_in_schema=False)
PlatformDep = Annotated[Platform, Depends(get_platform)]


@router.get("/ledger", dependencies=[Public], response_class=HTMLResponse)
def ledger_page(request: Request, session: DbSessionDep, platform: PlatformDep) -> HTMLResponse:
    """For everyone: the log's state and its witnesses' cosignatures."""
    principal, token = page_principal(request, session)
    size = service.tree_size(session)
    latest = service.latest_checkpoint(session)
    cosigned = set(service.cosigners(session, latest)) if latest is not None else set()
    context = (page_context(platform, principal, token) if principal else {}) | {
        "size": size,
        "checkpoint": latest,
        "note": service.checkpoint_with_cosignatures(session, latest) if latest else "",
        "witnesses": [(w.name, w.name in cosigned) for w in service.witnesses(session)],
        "entries": [
            service.entry_as_dict(e) for e in service.list_entries(session, max(0, size - 20), 20)
        ][::-1],
    }
    return render(request, "ledger.html", context)

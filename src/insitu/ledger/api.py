"""Ledger routes.

Everything here is public, as the access rules say (anonymous callers reach ledger
checkpoints, entries and proofs): the log key, the newest signed checkpoint with its
cosignatures, the entries (pseudonymous actor ids, no personal data), inclusion and consistency
proofs, the registered witnesses, and the cosignature drop box (authenticated by the witness's
signature, not by a login).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse

from insitu.access.permissions import DbSession, Public, get_platform
from insitu.core.platform import Platform
from insitu.ledger import service, verifier
from insitu.ledger.keys import MissingKeyError, load_log_signer

router = APIRouter(prefix="/ledger", tags=["ledger"])
MAX_COSIGNED_NOTE = 16 * 1024


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@router.get("/key", dependencies=[Public], response_class=PlainTextResponse)
def log_key(platform: Annotated[Platform, Depends(get_platform)]) -> str:
    """The log's public verifier key (C2SP vkey), to check checkpoints against."""
    try:
        return load_log_signer(platform.settings).verifier_key + "\n"
    except MissingKeyError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None


@router.get("/checkpoint", dependencies=[Public], response_class=PlainTextResponse)
def latest_checkpoint(session: DbSession) -> str:
    """The newest signed checkpoint (C2SP signed note) with its witness cosignatures."""
    row = service.latest_checkpoint(session)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no checkpoint has been signed yet")
    return service.checkpoint_with_cosignatures(session, row)


@router.get("/proof/inclusion", dependencies=[Public])
def inclusion_proof(
    session: DbSession,
    index: Annotated[int, Query(ge=0)],
    size: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
    try:
        proof = service.inclusion_proof(session, index, size)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    entry = service.list_entries(session, index, 1)[0]
    return {
        "index": index,
        "size": size,
        "leaf_hash": _b64(service.entry_hash(entry)),
        "proof": [_b64(p) for p in proof],
    }


@router.get("/proof/consistency", dependencies=[Public])
def consistency_proof(
    session: DbSession,
    old: Annotated[int, Query(ge=1)],
    new: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    """RFC 9162 consistency proof that the tree of ``new`` entries extends that of ``old``."""
    try:
        proof = service.consistency_proof(session, old, new)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return {"old": old, "new": new, "proof": [_b64(p) for p in proof]}


@router.get("/witnesses", dependencies=[Public])
def list_witnesses(session: DbSession) -> list[dict[str, str]]:
    """The registered witnesses and their keys."""
    return [{"name": w.name, "key": w.verifier_key} for w in service.witnesses(session)]


@router.post("/cosignatures", dependencies=[Public])
async def add_cosignature(request: Request, session: DbSession) -> dict[str, Any]:
    """A witness sends one of our checkpoints back with its cosignature (text/plain note).
    Only cosignatures by registered witness keys are kept."""
    body = await request.body()
    if len(body) > MAX_COSIGNED_NOTE:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail="cosigned note too large")
    try:
        accepted = service.add_cosignature(session, body.decode("utf-8"))
    except UnicodeDecodeError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="the note is not UTF-8"
        ) from None
    except (ValueError, verifier.VerificationError) as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None
    return {"accepted": accepted}


@router.get("/entries", dependencies=[Public])
def list_entries(
    session: DbSession,
    start: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Ledger entries from ``start``, each with its leaf hash."""
    entries = service.list_entries(session, start, limit)
    return {
        "size": service.tree_size(session),
        "entries": [
            {**service.entry_as_dict(e), "leaf_hash": _b64(service.entry_hash(e))} for e in entries
        ],
    }

"""DICOMweb for other software, under ``/dicomweb``: QIDO-RS search of the studies, series and
instances of datasets the caller may use, and WADO-RS *rendered* frames and thumbnails (the
viewer's JPEG, window and budget rules). Retrieving instances, frames, metadata or bulk data
answers 403 and says why: DICOM and pixel values never leave insitu.

Search results carry only catalogue attributes: never InlineBinary or BulkDataURI values.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy.orm import Session

from insitu.access.permissions import AnyUser, get_platform
from insitu.access.permissions import DbSession as DbSessionDep
from insitu.core.platform import Platform
from insitu.web import imaging, viewing

router = APIRouter(prefix="/dicomweb", tags=["DICOMweb"])
PlatformDep = Annotated[Platform, Depends(get_platform)]
DICOM_JSON = "application/dicom+json"
SEARCH_KEYS = (
    "StudyInstanceUID", "PatientID", "StudyDate", "ModalitiesInStudy", "Modality",
    "SeriesInstanceUID",
)  # fmt: skip
REFUSAL = (
    "insitu never hands out DICOM files, frames, metadata or bulk data: the images stay in "
    "situ. Use the rendered resources (…/rendered, …/thumbnail) to look at them, or run a job "
    "next to the data."
)


def dicom_json(attributes: dict[str, Any]) -> dict[str, Any]:
    """Keyword → value pairs as the DICOM JSON model (PS3.18 F.2)."""
    document: dict[str, Any] = {}
    for keyword, value in attributes.items():
        tag = tag_for_keyword(keyword)
        if tag is None:  # pragma: no cover - keywords are ours
            raise ValueError(keyword)
        element: dict[str, Any] = {"vr": dictionary_VR(tag)}
        if value not in (None, "", []):
            element["Value"] = value if isinstance(value, list) else [value]
        document[f"{tag:08X}"] = element
    return document


def _answer(items: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse([dicom_json(i) for i in items], media_type=DICOM_JSON)


def _filters(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k in SEARCH_KEYS}


def _not_found(exc: viewing.ViewerError) -> HTTPException:
    if isinstance(exc, viewing.BudgetExceededError):
        return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(exc))
    if isinstance(exc, viewing.NotUsableError):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc))


@router.get("/studies")
def search_studies(
    request: Request,
    principal: AnyUser,
    session: DbSessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JSONResponse:
    """QIDO-RS: studies of the datasets you may use (filters: StudyInstanceUID, PatientID,
    StudyDate as a date or a range, ModalitiesInStudy)."""
    scope = request.app.state.viewer_scopes.get(session, principal.user_id)
    return _answer(viewing.search_studies(session, scope, _filters(request), limit, offset))


@router.get("/studies/{study}/series")
def search_series(
    study: str, request: Request, principal: AnyUser, session: DbSessionDep
) -> JSONResponse:
    """QIDO-RS: the usable series of a study (filters: Modality, SeriesInstanceUID)."""
    scope = request.app.state.viewer_scopes.get(session, principal.user_id)
    try:
        return _answer(viewing.search_series(session, scope, study, _filters(request)))
    except viewing.ViewerError as exc:
        raise _not_found(exc) from None


@router.get("/studies/{study}/series/{series}/instances")
def search_instances(
    study: str, series: str, request: Request, principal: AnyUser, session: DbSessionDep
) -> JSONResponse:
    """QIDO-RS: the instances of a usable series."""
    scope = request.app.state.viewer_scopes.get(session, principal.user_id)
    try:
        return _answer(viewing.search_instances(session, scope, study, series))
    except viewing.ViewerError as exc:
        raise _not_found(exc) from None


def _window(value: str | None) -> imaging.Window | None:
    if value is None:
        return None
    parts = value.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="window must be 'center,width' or 'center,width,linear' (modality units)",
        ) from None
    if len(parts) > 2 and parts[2].strip().lower() != "linear":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="only the linear function")
    return imaging.Window(center, width)


def _viewport(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        width, height = (int(v) for v in value.split(",")[:2])
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="viewport must be 'w,h'") from None
    return width, height


def _accepts_jpeg(request: Request) -> None:
    accept = request.headers.get("accept", "*/*")
    if not any(t in accept for t in ("image/jpeg", "image/*", "*/*")):
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE,
            detail="renders are image/jpeg only (lossy, at most screen size)",
        )


def _picture(frame: viewing.Frame) -> Response:
    return Response(
        frame.jpeg,
        media_type="image/jpeg",
        headers={"X-Insitu-Frames-Left": str(frame.frames_left), "Cache-Control": "private"},
    )


RenderOptions = tuple[imaging.Window | None, str | None, tuple[int, int] | None, int]


def render_options(
    window: Annotated[str | None, Query(description="center,width[,linear]")] = None,
    preset: Annotated[str | None, Query(description=", ".join(imaging.PRESETS))] = None,
    viewport: Annotated[str | None, Query(description="w,h (at most 1024 each)")] = None,
    quality: Annotated[int, Query(ge=1, le=100, description="JPEG, capped at 90")] = 85,
) -> RenderOptions:
    """The rendering parameters of WADO-RS (PS3.18 8.3.5) plus insitu's presets."""
    return _window(window), preset, _viewport(viewport), quality


Options = Annotated[RenderOptions, Depends(render_options)]


def _render(request: Request, session: Session, principal: Any,
            uids: tuple[str, str, str | None], options: RenderOptions, frame: int = 0,
            thumbnail: bool = False) -> Response:  # fmt: skip
    _accepts_jpeg(request)
    window, preset, viewport, quality = options
    scope = request.app.state.viewer_scopes.get(session, principal.user_id)
    try:
        picture = viewing.rendered(
            session, request.app.state.viewing, scope, uids, frame=frame, window=window,
            preset=preset, viewport=viewport, quality=quality, thumbnail=thumbnail,
        )  # fmt: skip
    except viewing.ViewerError as exc:
        raise _not_found(exc) from None
    except imaging.RenderError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
    return _picture(picture)


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered")
def instance_rendered(
    study: str, series: str, instance: str, request: Request, options: Options,
    principal: AnyUser, session: DbSessionDep,
) -> Response:  # fmt: skip
    """WADO-RS rendered: the instance's first frame as a JPEG."""
    return _render(request, session, principal, (study, series, instance), options)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered")
def frame_rendered(
    study: str, series: str, instance: str, frames: str, request: Request, options: Options,
    principal: AnyUser, session: DbSessionDep,
) -> Response:  # fmt: skip
    """WADO-RS rendered: one frame (1-based; the first of a list) as a JPEG."""
    try:
        number = int(frames.split(",", maxsplit=1)[0])
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="frames: a number") from None
    uids = (study, series, instance)
    return _render(request, session, principal, uids, options, frame=number - 1)


@router.get("/studies/{study}/series/{series}/thumbnail")
def series_thumbnail(
    study: str, series: str, request: Request, principal: AnyUser, session: DbSessionDep,
) -> Response:  # fmt: skip
    """WADO-RS thumbnail of a series (its middle instance)."""
    options: RenderOptions = (None, None, None, 75)
    uids = (study, series, None)
    return _render(request, session, principal, uids, options, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail")
def instance_thumbnail(
    study: str, series: str, instance: str, request: Request, principal: AnyUser,
    session: DbSessionDep,
) -> Response:  # fmt: skip
    """WADO-RS thumbnail of an instance."""
    options: RenderOptions = (None, None, None, 75)
    uids = (study, series, instance)
    return _render(request, session, principal, uids, options, thumbnail=True)


@router.get("/studies/{study}")
@router.get("/studies/{study}/metadata")
@router.get("/studies/{study}/series/{series}")
@router.get("/studies/{study}/series/{series}/metadata")
@router.get("/studies/{study}/series/{series}/instances/{instance}")
@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata")
@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}")
@router.get("/bulkdata/{path:path}")
def refused(principal: AnyUser) -> Response:
    """Retrieving DICOM, frames, metadata or bulk data: always 403, with the reason."""
    raise HTTPException(status.HTTP_403_FORBIDDEN, detail=REFUSAL)

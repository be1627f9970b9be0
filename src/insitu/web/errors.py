"""Error pages for people: a browser that meets an error on a page or form gets an HTML page
saying what happened and what to do next; API and DICOMweb clients keep their JSON."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from insitu.access.web import page_context, page_principal
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.web.render import error_page

# Machine interfaces answer JSON whatever the client accepts.
MACHINE_PREFIXES = ("/api/", "/dicomweb", "/metrics", "/static/")

HEADINGS = {
    status.HTTP_400_BAD_REQUEST: "The request could not be read",
    status.HTTP_401_UNAUTHORIZED: "Please sign in",
    status.HTTP_403_FORBIDDEN: "You may not do this",
    status.HTTP_404_NOT_FOUND: "Nothing here",
    status.HTTP_405_METHOD_NOT_ALLOWED: "This address does not take that request",
    status.HTTP_409_CONFLICT: "This cannot be done now",
    status.HTTP_413_CONTENT_TOO_LARGE: "Too large",
    status.HTTP_422_UNPROCESSABLE_CONTENT: "The form has a problem",
    status.HTTP_429_TOO_MANY_REQUESTS: "Too many requests",
}
NEXT_STEPS = {
    status.HTTP_400_BAD_REQUEST: "Go back and send it again.",
    status.HTTP_401_UNAUTHORIZED: "Sign in, then try again.",
    status.HTTP_403_FORBIDDEN: (
        "If your work needs it, ask the dataset's stewards (for data) or an admin (for roles "
        "and flavors). Your session may also have expired: reload the page you came from."
    ),
    status.HTTP_404_NOT_FOUND: "Check the address, or start again from the dataset list.",
    status.HTTP_405_METHOD_NOT_ALLOWED: "Use the page's own links and buttons.",
    status.HTTP_409_CONFLICT: "Reload the page to see the current state, then decide again.",
    status.HTTP_413_CONTENT_TOO_LARGE: "Send less, or split it.",
    status.HTTP_422_UNPROCESSABLE_CONTENT: "Go back, correct the fields named above, send again.",
    status.HTTP_429_TOO_MANY_REQUESTS: "Wait a while and try again.",
}
SERVER_ERROR_NEXT = (
    "The error is in the server's log. Try again in a moment; if it persists, tell the "
    "platform's operator the time it happened."
)


def wants_page(request: Request) -> bool:
    """Whether the caller is a person's browser on a page (not an API or DICOMweb client)."""
    if request.url.path.startswith(MACHINE_PREFIXES):
        return False
    return "text/html" in request.headers.get("accept", "")


def _context(request: Request) -> dict[str, Any]:
    platform: Platform = request.app.state.platform
    with session_scope(platform.sessions) as session:
        principal, token = page_principal(request, session)
    return page_context(platform, principal, token) if principal else {}


async def _page(
    request: Request, code: int, message: str, next_step: str, *, who: bool = True
) -> Response:
    # After a server error the database may be what failed: then the page names nobody.
    context = await run_in_threadpool(_context, request) if who else {}
    heading = HEADINGS.get(code, "Something went wrong")
    if code == status.HTTP_401_UNAUTHORIZED:
        back = f"?next={request.url.path}" if request.method == "GET" else ""
        context["sign_in"] = f"/login{back}"
    return error_page(request, context, heading, message, next_step, code)


def _problems(exc: RequestValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = [str(part) for part in error.get("loc", ()) if part not in ("body", "query")]
        lines.append(f"{'.'.join(where) or 'the request'}: {error.get('msg', 'not valid')}")
    return "; ".join(lines)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # registered for that type only
        raise exc
    if not wants_page(request):
        return await http_exception_handler(request, exc)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    response = await _page(request, exc.status_code, message, NEXT_STEPS.get(exc.status_code, ""))
    for name, value in (exc.headers or {}).items():
        response.headers.setdefault(name, value)
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # registered for that type only
        raise exc
    if not wants_page(request):
        return await request_validation_exception_handler(request, exc)
    code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return await _page(request, code, _problems(exc), NEXT_STEPS[code])


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the exception and its traceback; the person sees no internals.
    code = status.HTTP_500_INTERNAL_SERVER_ERROR
    if not wants_page(request):
        return JSONResponse({"detail": "internal error; it is in the server's log"}, code)
    return await _page(
        request, code, "The server failed while answering.", SERVER_ERROR_NEXT, who=False
    )


def install(app: FastAPI) -> None:
    """Answer errors as pages for browsers and as JSON for everything else."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)

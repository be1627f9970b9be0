"""Jinja2 templates and static files of the web UI (shipped inside the package)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Request, status
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

WEB = Path(str(resources.files("insitu") / "web"))
STATIC = WEB / "static"


@cache
def _templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(WEB / "templates"))


def templates(_request: Request | None = None) -> Jinja2Templates:
    """The template engine (autoescaping HTML)."""
    return _templates()


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A page: the template rendered with its context."""
    page: HTMLResponse = _templates().TemplateResponse(
        request, template, context, status_code=status_code
    )
    return page


CANNOT_SHOW_NEXT = (
    "Datasets, their images and their headers are shown to those who may use them (released, "
    "granted to you or your project, terms accepted): ask a dataset's stewards for access. "
    "Jobs and releases are their owner's."
)


def error_page(
    request: Request, context: dict[str, Any], heading: str, message: str, next_step: str,
    status_code: int,
) -> HTMLResponse:  # fmt: skip
    """The one error page: what happened, why, and what to do next."""
    facts = {"heading": heading, "message": message, "next_step": next_step, "code": status_code}
    return render(request, "error.html", context | facts, status_code)


def cannot_show(
    request: Request,
    context: dict[str, Any],
    heading: str,
    message: str,
    status_code: int = status.HTTP_404_NOT_FOUND,
) -> HTMLResponse:
    """The page that says what cannot be shown, why, and where to go next."""
    return error_page(request, context, heading, message, CANNOT_SHOW_NEXT, status_code)

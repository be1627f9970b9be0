"""Jinja2 templates and static files of the web UI (shipped inside the package)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

WEB = Path(str(resources.files("insitu") / "web"))
STATIC = WEB / "static"


@cache
def _templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(WEB / "templates"))


def templates(_request: Request | None = None) -> Jinja2Templates:
    """The template engine (autoescaping HTML)."""
    return _templates()

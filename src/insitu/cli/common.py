"""Shared CLI plumbing: one-line errors, --json output, the API client and the local platform."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console

from insitu.core.platform import Platform, open_platform
from insitu.settings import Settings, SettingsError, load_settings

stderr = Console(stderr=True)
DEFAULT_URL = "http://127.0.0.1:8000"


def fail(message: str, code: int = 1) -> NoReturn:
    """Exit with a one-line reason on stderr."""
    sys.stderr.write(f"insitu: error: {message}\n")
    raise typer.Exit(code)


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


def settings_or_fail(**overrides: object) -> Settings:
    """Load settings, turning validation problems into a one-line error."""
    try:
        return load_settings(**overrides)
    except ValueError as exc:
        fail(f"invalid settings: {exc}")


@contextmanager
def local_platform(settings: Settings | None = None) -> Iterator[Platform]:
    """Open ``$INSITU_HOME`` directly (for commands that run on the platform host)."""
    settings = settings or settings_or_fail()
    if not (settings.home / "settings.env").exists() and not settings.demo:
        fail(f"no deployment at {settings.home}: run `insitu init` first (or set INSITU_HOME)")
    try:
        platform = open_platform(settings)
    except SettingsError as exc:
        fail(str(exc))
    try:
        yield platform
    finally:
        platform.close()


def credentials_file() -> Path:
    """Where ``insitu login`` (and ``insitu demo``) save tokens, per server URL."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "insitu" / "credentials.json"


def save_token(url: str, token: str) -> None:
    """Remember a token for a server URL (file mode 0600)."""
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, str] = {}
    if path.exists():
        data = json.loads(path.read_text())
    data[url.rstrip("/")] = token
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    tmp.replace(path)


def api_url() -> str:
    """The server the client commands talk to."""
    return os.environ.get("INSITU_URL", DEFAULT_URL).rstrip("/")


def api_token(url: str) -> str | None:
    """``$INSITU_TOKEN``, else the token saved for ``url``."""
    token = os.environ.get("INSITU_TOKEN")
    if token:
        return token
    path = credentials_file()
    if path.exists():
        saved = json.loads(path.read_text()).get(url)
        return str(saved) if saved else None
    return None


def http_client(url: str, timeout: float = 60) -> httpx.Client:
    """An HTTP client for the server at ``url``; ``unix:/path`` is the platform's socket
    inside a job or session (/run/insitu.sock)."""
    if url.startswith("unix:"):
        transport = httpx.HTTPTransport(uds=url.removeprefix("unix:"))
        return httpx.Client(transport=transport, base_url="http://insitu", timeout=timeout)
    return httpx.Client(base_url=url, timeout=timeout)


def api_request(
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    json_body: Any = None,
    content: bytes | None = None,
    extra_headers: dict[str, str] | None = None,
    token: str | None = None,
    anonymous: bool = False,
    timeout: float = 60,
    raw: bool = False,
) -> Any:
    """Call an API path; failures become a one-line error. Returns the JSON body (or None).

    ``token`` overrides the saved one; ``anonymous`` sends none at all."""
    url = api_url()
    token = None if anonymous else token or api_token(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers |= extra_headers or {}
    try:
        with http_client(url, timeout) as client:
            response = client.request(
                method,
                f"/api/v1{path}",
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=json_body,
                content=content,
                headers=headers,
            )
    except httpx.HTTPError as exc:
        fail(
            f"cannot reach the insitu server at {url} ({exc}); start it with `insitu serve` "
            "or set INSITU_URL"
        )
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        fail(f"{response.status_code}: {detail}")
    if raw:
        return response.text
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def api_get(path: str, params: dict[str, Any] | None = None) -> Any:
    """GET an API path; failures become a one-line error."""
    return api_request("GET", path, params=params)

"""Persistent identifiers for released dataset versions, from a minter behind a Protocol.

A released version *reserves* its identifier; publishing *registers* it (makes it resolve
publicly). Identifiers are derived from the dataset name and version, so that reserving again
after a failed transaction gives the same identifier instead of a second one.

- ``local``: identifiers this deployment resolves itself, ``<public_url>/pid/<name>.v<version>``.
- ``datacite``: DOIs ``<prefix>/<name>.v<version>`` through the DataCite REST API (draft DOI at
  release, ``publish`` event with the full metadata at publication).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx

from insitu.settings import Settings


class MinterError(RuntimeError):
    """The minter could not reserve or register an identifier; the message says why."""


@runtime_checkable
class Minter(Protocol):
    """What every PID minter implements. Both calls are idempotent."""

    kind: str

    def identifier_for(self, suffix: str) -> str:
        """The identifier a version with this suffix (``<name>.v<version>``) gets."""
        ...

    def reserve(self, identifier: str) -> None:
        """Reserve an identifier (it does not resolve publicly yet)."""
        ...

    def register(self, identifier: str, landing_url: str, metadata: dict[str, Any]) -> None:
        """Make an identifier resolve to the landing page, with its DataCite metadata."""
        ...

    def resolver_url(self, identifier: str) -> str:
        """The URL that resolves an identifier."""
        ...


class LocalMinter:
    """Identifiers resolved by this deployment (``/pid/<identifier>``). Needs nothing."""

    kind = "local"

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")

    def identifier_for(self, suffix: str) -> str:
        """The suffix itself: unique per deployment, as dataset names and versions are."""
        return suffix

    def reserve(self, identifier: str) -> None:
        """Nothing to do: the dataset row holds the reservation."""

    def register(self, identifier: str, landing_url: str, metadata: dict[str, Any]) -> None:
        """Nothing to do: ``/pid/<identifier>`` resolves published versions from the database."""

    def resolver_url(self, identifier: str) -> str:
        """``<public_url>/pid/<identifier>``."""
        return f"{self.public_url}/pid/{identifier}"


class DataCiteMinter:
    """DOIs through the DataCite REST API (``/dois``, JSON:API, HTTP basic auth)."""

    kind = "datacite"
    _media_type = "application/vnd.api+json"

    def __init__(
        self,
        api_url: str,
        prefix: str,
        repository_id: str,
        password: str,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not prefix.startswith("10.") or "/" in prefix:
            raise MinterError(
                f"INSITU_DATACITE_PREFIX {prefix!r} is not a DOI prefix: it looks like 10.12345"
            )
        if not repository_id or not password:
            raise MinterError(
                "INSITU_DATACITE_REPOSITORY_ID and INSITU_DATACITE_PASSWORD must be set to mint "
                "DOIs with DataCite"
            )
        self.prefix = prefix
        self._client = httpx.Client(
            base_url=api_url.rstrip("/"),
            auth=(repository_id, password),
            headers={"Content-Type": self._media_type, "Accept": self._media_type},
            timeout=30.0,
            transport=transport,
        )

    def identifier_for(self, suffix: str) -> str:
        """``<prefix>/<suffix>`` (DOIs are case-insensitive; DataCite stores upper case)."""
        return f"{self.prefix}/{suffix}"

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise MinterError(
                f"DataCite at {self._client.base_url} cannot be reached ({exc}); check "
                "INSITU_DATACITE_API_URL and the network, then try again"
            ) from exc
        return response

    @staticmethod
    def _explain(response: httpx.Response, action: str) -> MinterError:
        try:
            errors = response.json().get("errors", [])
            detail = "; ".join(str(e.get("title", e)) for e in errors) or response.text[:200]
        except ValueError:
            detail = response.text[:200]
        hint = (
            " (check INSITU_DATACITE_REPOSITORY_ID and INSITU_DATACITE_PASSWORD)"
            if response.status_code in (401, 403)
            else ""
        )
        return MinterError(
            f"DataCite refused to {action}: HTTP {response.status_code}: {detail}{hint}"
        )

    def reserve(self, identifier: str) -> None:
        """Create a draft DOI unless it exists."""
        if self._send("GET", f"/dois/{identifier}").status_code == 200:
            return
        body = {"data": {"type": "dois", "attributes": {"doi": identifier}}}
        response = self._send("POST", "/dois", body)
        if response.status_code not in (200, 201):
            raise self._explain(response, f"reserve {identifier}")

    def register(self, identifier: str, landing_url: str, metadata: dict[str, Any]) -> None:
        """Send the metadata and the ``publish`` event: the DOI becomes findable."""
        attributes = {**metadata, "doi": identifier, "url": landing_url, "event": "publish"}
        body = {"data": {"id": identifier, "type": "dois", "attributes": attributes}}
        response = self._send("PUT", f"/dois/{identifier}", body)
        if response.status_code not in (200, 201):
            raise self._explain(response, f"register {identifier}")

    def resolver_url(self, identifier: str) -> str:
        """``https://doi.org/<doi>``."""
        return f"https://doi.org/{identifier}"


@dataclass(frozen=True)
class Publication:
    """What publishing needs besides the dataset: the minter and who publishes, where."""

    minter: Minter
    public_url: str
    publisher: str
    contact_email: str = ""

    def landing_url(self, name: str, version: int) -> str:
        """The public landing page of a dataset version."""
        return f"{self.public_url.rstrip('/')}/datasets/{name}/v{version}"


def publication_from_settings(settings: Settings) -> Publication:
    """The deployment's minter, public address and publisher."""
    return Publication(
        minter=minter_from_settings(settings),
        public_url=settings.public_url.rstrip("/"),
        publisher=settings.resolved_publisher,
        contact_email=settings.contact_email,
    )


def minter_from_settings(settings: Settings) -> Minter:
    """The deployment's minter (``INSITU_PID_MINTER``)."""
    if settings.pid_minter == "local":
        return LocalMinter(settings.public_url)
    if settings.pid_minter == "datacite":
        return DataCiteMinter(
            settings.datacite_api_url,
            settings.datacite_prefix,
            settings.datacite_repository_id,
            settings.datacite_password.get_secret_value(),
        )
    raise MinterError(
        f"INSITU_PID_MINTER {settings.pid_minter!r} is unknown: use local or datacite"
    )

"""A small stand-in for the DataCite REST API (``/dois``) on loopback: no DataCite is
reachable from here. It checks what a real one checks that matters to insitu: basic auth,
the JSON:API envelope, the prefix, that a DOI is created once, and that publishing sends the
mandatory metadata (titles, creators, publisher, publication year, resource type, URL)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANDATORY = ("titles", "creators", "publisher", "publicationYear", "types", "url")


@dataclass
class FakeDataCite:
    url: str
    prefix: str
    user: str
    password: str
    dois: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


def _handler(state: FakeDataCite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.api+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, title: str) -> None:
            self._reply(code, {"errors": [{"status": str(code), "title": title}]})

        def _authorised(self) -> bool:
            expected = base64.b64encode(f"{state.user}:{state.password}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                self._error(401, "Bad credentials.")
                return False
            return True

        def _body(self) -> dict[str, Any] | None:
            if self.headers.get("Content-Type") != "application/vnd.api+json":
                self._error(415, "Unsupported media type")
                return None
            length = int(self.headers.get("Content-Length", "0"))
            document: dict[str, Any] = json.loads(self.rfile.read(length))
            return document

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path))
            if not self._authorised():
                return
            doi = self.path.removeprefix("/dois/").lower()
            if doi not in state.dois:
                self._error(404, "The resource you are looking for doesn't exist.")
                return
            self._reply(200, {"data": {"id": doi, "attributes": state.dois[doi]}})

        def do_POST(self) -> None:
            state.requests.append(("POST", self.path))
            if not self._authorised() or (body := self._body()) is None:
                return
            attributes = body["data"]["attributes"]
            doi = str(attributes["doi"]).lower()
            if not doi.startswith(state.prefix + "/"):
                self._error(403, "You don't have permission to use this prefix.")
                return
            if doi in state.dois:
                self._error(422, "This DOI has already been taken")
                return
            state.dois[doi] = {"doi": doi, "state": "draft"}
            self._reply(201, {"data": {"id": doi, "attributes": state.dois[doi]}})

        def do_PUT(self) -> None:
            state.requests.append(("PUT", self.path))
            if not self._authorised() or (body := self._body()) is None:
                return
            doi = self.path.removeprefix("/dois/").lower()
            attributes = body["data"]["attributes"]
            missing = [k for k in MANDATORY if not attributes.get(k)]
            if attributes.get("event") == "publish" and missing:
                self._error(422, f"missing mandatory metadata: {', '.join(missing)}")
                return
            record = state.dois.setdefault(doi, {"doi": doi, "state": "draft"})
            record.update({k: v for k, v in attributes.items() if k != "event"})
            if attributes.get("event") == "publish":
                record["state"] = "findable"
            self._reply(200, {"data": {"id": doi, "attributes": record}})

    return Handler


@contextmanager
def fake_datacite(prefix: str = "10.80000") -> Iterator[FakeDataCite]:
    """Run the fake on a free loopback port."""
    state = FakeDataCite(url="", prefix=prefix, user="INSITU.TEST", password="s3cret")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()

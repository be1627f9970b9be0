"""The request boundary owns the transaction: committed before the answer leaves."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from insitu.access.models import Role, User
from insitu.access.permissions import DbSession
from insitu.core.platform import Platform
from insitu.db import session_scope


def _app(platform: Platform) -> FastAPI:
    app = FastAPI()
    app.state.platform = platform

    @app.post("/unaudited")
    def unaudited(session: DbSession) -> dict[str, str]:
        # An audited change without its ledger entry: the ledger guard refuses it at commit.
        session.add(User(name="ghost", role=Role.researcher))
        return {"status": "ok"}

    @app.post("/count")
    def count(session: DbSession) -> dict[str, int]:
        return {"users": len(session.scalars(select(User)).all())}

    return app


def test_a_failed_commit_is_an_error_not_a_success_already_sent(platform: Platform) -> None:
    with TestClient(_app(platform), raise_server_exceptions=False) as client:
        answer = client.post("/unaudited")
        assert answer.status_code == 500, answer.text
        assert client.post("/count").status_code == 200
    with session_scope(platform.sessions) as session:
        assert session.scalars(select(User).where(User.name == "ghost")).first() is None

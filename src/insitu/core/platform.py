"""The handles every entry point needs: settings, database and blob store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from insitu.datasets.pids import MinterError, Publication, publication_from_settings
from insitu.db import make_engine, make_session_factory, migrate
from insitu.settings import Settings, SettingsError
from insitu.storage.protocol import BlobStore
from insitu.storage.service import store_from_settings


@dataclass
class Platform:
    """One deployment, opened."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    publication: Publication

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()


def open_platform(settings: Settings, run_migrations: bool = True) -> Platform:
    """Open a deployment: check secrets, connect, migrate, open the store."""
    settings.check_secrets()
    try:
        publication = publication_from_settings(settings)
    except MinterError as exc:
        raise SettingsError(str(exc)) from exc
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    if run_migrations:
        migrate(engine)
    return Platform(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        store=store_from_settings(settings),
        publication=publication,
    )

"""Shared fixtures: settings in a temp home, real databases (SQLite and PostgreSQL), stores."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from insitu.core.platform import Platform, open_platform
from insitu.db import make_engine, migrate
from insitu.settings import Settings
from tests.servers import PostgresCluster, S3Server, postgres_cluster, seaweedfs_s3

TEST_SECRET = "test-secret-" + "x" * 40
_database_counter = itertools.count()


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's INSITU_* variables or saved CLI tokens."""
    for key in list(os.environ):
        if key.startswith("INSITU_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        template = make_engine(cluster.url, isolation_level="AUTOCOMMIT")
        with template.connect() as connection:
            connection.execute(sa.text("CREATE DATABASE insitu_template"))
        template.dispose()
        engine = make_engine(_with_database(cluster.url, "insitu_template"))
        migrate(engine)
        engine.dispose()
        yield cluster


def _fresh_postgres_database(cluster: PostgresCluster) -> str:
    name = f"insitu_test_{os.getpid()}_{next(_database_counter)}"
    admin = make_engine(cluster.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE insitu_template'))
    admin.dispose()
    return _with_database(cluster.url, name)


def _with_database(url: str, name: str) -> str:
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with seaweedfs_s3() as server:
        yield server


def make_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"home": home, "secret_key": TEST_SECRET, "ingest_workers": 1}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'insitu.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return _fresh_postgres_database(cluster)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    (tmp_path / "home").mkdir(exist_ok=True)
    return make_settings(tmp_path / "home", database_url=database_url)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings on SQLite only, for tests whose logic does not depend on the engine."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return make_settings(tmp_path / "home")


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    opened = open_platform(settings)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_platform(sqlite_settings: Settings) -> Iterator[Platform]:
    opened = open_platform(sqlite_settings)
    yield opened
    opened.close()


@pytest.fixture
def db_session(platform: Platform) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    connection = platform.engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    yield session
    session.close()
    transaction.rollback()
    connection.close()

"""Alembic environment: runs on the connection handed over by ``insitu.db.migrate``."""

from alembic import context
from sqlalchemy import create_engine

from insitu.db import Base, import_all_models

import_all_models()
target_metadata = Base.metadata
config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            context.configure(
                connection=conn, target_metadata=target_metadata, render_as_batch=True
            )
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    context.run_migrations()


run_migrations_online()

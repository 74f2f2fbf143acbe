"""Alembic environment: migrates the database named by the caller or by DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from insights_audit.config import Settings, sqlalchemy_url
from insights_audit.models import Base

target_metadata = Base.metadata


def database_url() -> str:
    configured = context.config.get_main_option("sqlalchemy.url")
    return sqlalchemy_url(configured or Settings.from_env().database_url)


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

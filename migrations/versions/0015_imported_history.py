"""Imported history: entries of type ``import`` record each import of a document store's export.

``insights-audit import`` brings view logs and audit entries from ``mongoexport`` files into
the trail. Each import that completes writes one entry of type ``import`` (the files it read
and their SHA-256, what was imported and rejected), sealed into the chain like any other, so
that ``audit verify`` can say which files the imported entries came from. The check on
``type`` admits it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TYPE_CHECK = "ck_audit_entries_ck_audit_entries_known_type"


def _types(*types: str) -> None:
    listed = ", ".join(f"'{name}'" for name in types)
    op.execute(f"ALTER TABLE audit_entries DROP CONSTRAINT {TYPE_CHECK}")
    op.execute(f"ALTER TABLE audit_entries ADD CONSTRAINT {TYPE_CHECK} CHECK (type IN ({listed}))")


def upgrade() -> None:
    _types("dashboard", "kpi", "mapping", "stream", "token", "import")


def downgrade() -> None:
    # Entries of type ``import`` are append-only: a database holding one cannot go back.
    _types("dashboard", "kpi", "mapping", "stream", "token")

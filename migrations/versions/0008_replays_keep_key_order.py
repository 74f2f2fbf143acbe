"""Idempotent replays are byte-identical: a stored response keeps its text as written.

``jsonb`` normalises an object's key order, so a replayed response listed its fields in
another order than the first one; ``json`` keeps the text. Stored responses live 24 hours.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE idempotency_keys ALTER COLUMN response TYPE json USING response::json")


def downgrade() -> None:
    op.execute(
        "ALTER TABLE idempotency_keys ALTER COLUMN response TYPE jsonb USING response::jsonb"
    )

"""Viewer links: the service mints short-lived, read-only tokens, and nothing more.

The app role may read ``api_tokens`` but not write it: a compromised service must not be able
to mint itself tokens that write. ``mint_viewer_token`` (owner's rights) creates one token
of scope ``api-readonly`` for the org of the calling transaction only, expiring within a
day; the service stores only the secret's hash, as for every token.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MINT = """
CREATE FUNCTION mint_viewer_token(
    p_user_id text, p_user_email text, p_roles text[], p_token_hash bytea,
    p_expires_at timestamptz, p_name text
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    scope text := coalesce(current_setting('insights_audit.org', true), '');
    minted bigint;
BEGIN
    IF scope = '' OR scope = '*' THEN
        RAISE EXCEPTION 'mint_viewer_token mints for the org of the transaction only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_expires_at IS NULL OR p_expires_at > now() + interval '1 day' + interval '1 minute' THEN
        RAISE EXCEPTION 'a viewer token expires within a day'
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO api_tokens (name, org, user_id, user_email, roles, scopes, token_hash, expires_at)
    VALUES (p_name, scope, p_user_id, p_user_email, p_roles, ARRAY['api-readonly'],
            p_token_hash, p_expires_at)
    RETURNING id INTO minted;
    RETURN minted;
END
$$
"""
SIGNATURE = "mint_viewer_token(text, text, text[], bytea, timestamptz, text)"


def upgrade() -> None:
    op.execute(MINT)
    op.execute(f"REVOKE EXECUTE ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(
        f"""
        DO $$
        DECLARE grantee_row record;
        BEGIN
            FOR grantee_row IN
                SELECT DISTINCT grantee FROM information_schema.role_table_grants
                WHERE table_name = 'audit_checkpoints' AND privilege_type = 'INSERT'
                  AND grantee <> current_user
            LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION {SIGNATURE} TO %I',
                               grantee_row.grantee);
            END LOOP;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")

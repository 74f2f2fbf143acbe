"""API token management behind ``insights-audit tokens``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, insert, select, update

from insights_audit.models import ApiToken
from insights_audit.web.auth import hash_token, new_token_secret


@dataclass(frozen=True)
class TokenListing:
    id: int
    name: str | None
    org: str
    user_id: str
    roles: list[str]
    scopes: list[str]
    state: str


def create_token(
    connection: Connection,
    *,
    org: str,
    user_id: str,
    user_email: str | None,
    roles: list[str],
    scopes: list[str],
    name: str | None,
    expires_in_days: int | None,
) -> tuple[int, str]:
    """A new token's id and secret; only the secret's hash is stored."""
    secret = new_token_secret()
    expires_at = (
        func.now() + func.make_interval(0, 0, 0, expires_in_days) if expires_in_days else None
    )
    token_id = connection.execute(
        insert(ApiToken)
        .values(
            name=name,
            org=org,
            user_id=user_id,
            user_email=user_email,
            roles=sorted(set(roles)),
            scopes=sorted(set(scopes)),
            token_hash=hash_token(secret),
            expires_at=expires_at,
        )
        .returning(ApiToken.id)
    ).scalar_one()
    return token_id, secret


def list_tokens(connection: Connection, org: str | None) -> list[TokenListing]:
    state = case(
        (ApiToken.revoked_at.isnot(None), "revoked"),
        (ApiToken.expires_at <= func.now(), "expired"),
        else_="active",
    )
    query = select(
        ApiToken.id,
        ApiToken.name,
        ApiToken.org,
        ApiToken.user_id,
        ApiToken.roles,
        ApiToken.scopes,
        state.label("state"),
    ).order_by(ApiToken.id)
    if org is not None:
        query = query.where(ApiToken.org == org)
    return [TokenListing(**row._asdict()) for row in connection.execute(query)]


def revoke_token(connection: Connection, token_id: int) -> bool:
    """Revoke an active token; False when there is no such token or it was already revoked."""
    revoked = connection.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiToken.id)
    ).one_or_none()
    return revoked is not None

"""Viewer links: a short-lived, read-only token for one person, and the address that signs
them into the viewer.

The token travels in the address's fragment (``/ui/#token=...``), which browsers never send
to a server; the viewer moves it into ``sessionStorage`` and removes it from the address
bar at once. Minting one is audited (type ``token``, action ``viewer-link.create``): the
entry says for whom, with which roles and until when, never the token.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from insights_audit.audit.entries import ENTRY_INSERT, Actor, RequestMeta, entry_params
from insights_audit.web.auth import hash_token, new_token_secret

TOKEN_TYPE = "token"
ACTION = "viewer-link.create"
# Viewer links only read: ``mint_viewer_token`` (migration 0013) gives scope api-readonly.
DEFAULT_ROLES = ["Users"]
DEFAULT_TTL_SECONDS = 3600
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 86400


def mint(
    connection: Connection,
    actor: Actor,
    meta: RequestMeta,
    base_url: str,
    *,
    user_id: str,
    user_email: str | None,
    roles: list[str],
    ttl_seconds: int,
    via: str,
) -> dict[str, Any]:
    """A new viewer link for ``user_id`` in ``actor``'s org: ``{"url", "token", "expiresAt"}``."""
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    secret = new_token_secret()
    token_id: int = connection.execute(
        select(
            func.mint_viewer_token(
                user_id,
                user_email,
                sorted(set(roles)),
                hash_token(secret),
                expires_at,
                f"viewer link for {user_id}"[:200],
            )
        )
    ).scalar_one()
    link_id = uuid.uuid4()
    details = {
        "userId": user_id,
        "userEmail": user_email,
        "roles": sorted(set(roles)),
        "expiresAt": expires_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "tokenId": token_id,
        "via": via,
    }
    connection.execute(
        ENTRY_INSERT, entry_params(actor, TOKEN_TYPE, ACTION, link_id, details, meta)
    )
    return {
        "url": f"{base_url.rstrip('/')}/ui/#token={secret}",
        "token": secret,
        "expiresAt": expires_at,
    }

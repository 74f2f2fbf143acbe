"""Bearer tokens: creation, lookup per request, and the ``@requires`` access decorator."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar, cast

from cachetools import TTLCache
from flask import Flask, current_app, g, request
from sqlalchemy import bindparam, func, or_, select

from insights_audit.audit.entries import Actor
from insights_audit.db.driver_sql import DriverStatement
from insights_audit.db.engine import engine, waiting_for_connection
from insights_audit.errors import Forbidden, Unauthorized
from insights_audit.models import ApiToken
from insights_audit.web.api import Blueprint

SITE_ROLES = frozenset({"Opsera Administrator", "Administrator", "Power User", "Users"})
KNOWN_ROLES = SITE_ROLES | {"Auditor", "Security Manager"}
ON_BEHALF_ROLES = frozenset({"Opsera Administrator", "Administrator"})
# Who may read the whole trail of the org: search, export, feed, integrity.
OVERSIGHT_ROLES = frozenset(
    {"Opsera Administrator", "Administrator", "Auditor", "Security Manager"}
)
SCOPES = frozenset({"api", "api-readonly"})
READ = frozenset({"api", "api-readonly"})
WRITE = frozenset({"api"})

# Recognisable by secret scanners; the rest is 256 bits from the OS's CSPRNG.
TOKEN_PREFIX = "iat_"

F = TypeVar("F", bound=Callable[..., Any])
TOKEN_CACHE_KEY = "insights_audit.token_cache"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's org, user, roles and scopes."""

    token_id: int
    org: str
    user_id: str
    user_email: str | None
    roles: frozenset[str]
    scopes: frozenset[str]

    def acting(self, user_id: str | None = None, user_email: str | None = None) -> Actor:
        """The actor of an entry this token writes: its own user, or ``user_id`` on behalf."""
        if user_id is None or user_id == self.user_id:
            return Actor(self.org, self.user_id, self.user_email, self.user_id, self.token_id)
        return Actor(self.org, user_id, user_email, self.user_id, self.token_id)


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


ACTIVE_TOKEN = DriverStatement(
    select(
        ApiToken.id,
        ApiToken.org,
        ApiToken.user_id,
        ApiToken.user_email,
        ApiToken.roles,
        ApiToken.scopes,
        ApiToken.expires_at,
    ).where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > func.now()),
    )
)


class TokenCache:
    """Token lookups remembered for a few seconds, so most requests make one round trip.

    A revoked token is refused at the latest ``seconds`` after revocation; an expired one at
    once, as each entry keeps the token's expiry.
    """

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self._entries: TTLCache[bytes, tuple[Principal | None, datetime | None]] | None = (
            TTLCache(maxsize=size, ttl=seconds) if seconds > 0 else None
        )
        self._lock = threading.Lock()

    def principal_for(self, secret: str) -> Principal | None:
        """The principal of an active token, or None for an unknown, revoked or expired one."""
        token_hash = hash_token(secret)
        with self._lock:
            cached = self._entries.get(token_hash) if self._entries is not None else None
        if cached is None:
            cached = _lookup(token_hash)
            if self._entries is not None:
                with self._lock:
                    self._entries[token_hash] = cached
        principal, expires_at = cached
        if expires_at is not None and expires_at <= datetime.now(UTC):
            return None
        return principal


def _lookup(token_hash: bytes) -> tuple[Principal | None, datetime | None]:
    # One statement in autocommit: a single round trip, no transaction to end.
    with waiting_for_connection():
        connection = engine().connect().execution_options(isolation_level="AUTOCOMMIT")
    with connection:
        row = ACTIVE_TOKEN.first(connection, {"token_hash": token_hash})
    if row is None:
        return None, None
    principal = Principal(
        token_id=row.id,
        org=row.org,
        user_id=row.user_id,
        user_email=row.user_email,
        roles=frozenset(row.roles),
        scopes=frozenset(row.scopes),
    )
    return principal, row.expires_at


def init_token_cache(app: Flask, seconds: float) -> None:
    app.extensions[TOKEN_CACHE_KEY] = TokenCache(seconds)


def principal_for(secret: str) -> Principal | None:
    """The principal of an active token, or None for an unknown, revoked or expired one."""
    cache: TokenCache = current_app.extensions[TOKEN_CACHE_KEY]
    return cache.principal_for(secret)


def _bearer_secret() -> str | None:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret.startswith(TOKEN_PREFIX) or " " in secret:
        return None
    return secret


def current_principal() -> Principal:
    principal: Principal = g.principal
    return principal


def requires(*, scopes: Iterable[str], roles: Iterable[str]) -> Callable[[F], F]:
    """Let a view run only for a valid token holding one of ``scopes`` and one of ``roles``.

    It only authorizes: the view's database work is the request's unit of work
    (``web.work.request_work``), opened on the caller's org when first used. Also writes
    the bearer requirement and the 401/403 responses into the OpenAPI document.
    """
    accepted_scopes = frozenset(scopes)
    accepted_roles = frozenset(roles)

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            secret = _bearer_secret()
            principal = principal_for(secret) if secret else None
            if principal is None:
                raise Unauthorized()
            if not (principal.scopes & accepted_scopes and principal.roles & accepted_roles):
                raise Forbidden()
            g.principal = principal
            return view(*args, **kwargs)

        documented = Blueprint.doc(
            security=[{"bearerAuth": []}],
            # Every authenticated request reads the token from the database, hence the 503.
            responses={"401": "UNAUTHORIZED", "403": "FORBIDDEN", "503": "SERVICE_UNAVAILABLE"},
        )
        return cast(F, documented(wrapper))

    return decorator


def on_behalf_requires(*, roles: Iterable[str], field: str = "userId") -> Callable[[F], F]:
    """The one body-dependent rule: a body whose ``field`` names another user than the
    caller's (a write on their behalf) is for ``roles`` only (403 otherwise). Placed below
    ``@requires`` and the body's ``@blp.arguments``, so that 401 and 400 come first."""
    accepted_roles = frozenset(roles)

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            body = next(arg for arg in args if isinstance(arg, dict))
            acting_for = body.get(field, principal.user_id)
            if acting_for != principal.user_id and not principal.roles & accepted_roles:
                raise Forbidden()
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator

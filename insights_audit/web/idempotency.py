"""``Idempotency-Key``: the first successful response of a key is replayed for 24 hours."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import marshmallow as ma
from flask import Response, jsonify
from marshmallow import fields, validate
from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert

from insights_audit.errors import KEY_REUSED, Conflict
from insights_audit.models import IdempotencyKey
from insights_audit.web.work import request_work


class IdempotencyHeaders(ma.Schema):
    """The optional ``Idempotency-Key`` request header of the POST endpoints."""

    class Meta:
        unknown = ma.EXCLUDE

    key = fields.String(
        data_key="Idempotency-Key",
        validate=validate.Length(1, 255),
        metadata={"example": "3f1c9a1e-5b7d-4c1a-9f0e-2d6b8a4c7e11"},
    )


KEY_LIFETIME = timedelta(hours=24)
REPLAY_HEADER = "Idempotent-Replayed"


def _fingerprint(path: str, body: dict[str, Any]) -> bytes:
    """What makes two POSTs "the same": the normalised path and the parsed body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"POST {path}\n{canonical}".encode()).digest()


def _claim(
    connection: Connection, token_id: int, key: str, request_print: bytes
) -> tuple[int, dict[str, Any]] | None:
    """Take the key for this request, or return the stored response of an earlier one.

    A concurrent holder of the key makes the INSERT wait until it commits or rolls back,
    so a duplicate in flight never runs twice.
    """
    claim = insert(IdempotencyKey).values(token_id=token_id, key=key, fingerprint=request_print)
    claimed = connection.execute(
        claim.on_conflict_do_update(
            index_elements=[IdempotencyKey.token_id, IdempotencyKey.key],
            set_={
                "fingerprint": claim.excluded.fingerprint,
                "status_code": None,
                "response": None,
                "created_at": func.now(),
            },
            where=IdempotencyKey.created_at < func.now() - KEY_LIFETIME,
        ).returning(IdempotencyKey.key)
    ).one_or_none()
    if claimed is not None:
        return None
    stored = connection.execute(
        select(
            IdempotencyKey.fingerprint, IdempotencyKey.status_code, IdempotencyKey.response
        ).where(IdempotencyKey.token_id == token_id, IdempotencyKey.key == key)
    ).one()
    if stored.fingerprint != request_print or stored.response is None:
        raise Conflict(KEY_REUSED)
    return stored.status_code, stored.response


def _remember(
    connection: Connection, token_id: int, key: str, status: int, body: dict[str, Any]
) -> None:
    connection.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.token_id == token_id, IdempotencyKey.key == key)
        .values(status_code=status, response=body)
    )


def respond_once(
    token_id: int,
    key: str | None,
    path: str,
    request_body: dict[str, Any],
    status: int,
    produce: Callable[[Connection], dict[str, Any]],
) -> Response:
    """Run ``produce`` (one statement), unless ``key`` already has a response to replay.

    Runs in the request's unit of work (``web.work.request_work``): claiming the key (for
    this normalised ``path`` and parsed ``request_body``), the work and remembering its
    response commit together.
    """
    replayed = False
    db = request_work().connection
    if key is None:
        body = produce(db)
    else:
        stored = _claim(db, token_id, key, _fingerprint(path, request_body))
        if stored is not None:
            status, body = stored
            replayed = True
        else:
            body = produce(db)
            _remember(db, token_id, key, status, body)
    response = jsonify(body)
    response.status_code = status
    if replayed:
        response.headers[REPLAY_HEADER] = "true"
    return response

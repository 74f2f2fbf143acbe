"""From a document of the old store to an entry of the trail: where each field is read
(the default mapping, which ``--map`` overrides) and the rules every live entry obeys.

A view log becomes a ``dashboard``/``view`` entry whose ``details`` carry the dashboard's
name when the view recorded one; an audit document becomes an entry of its own type and
action. A document whose ``_id`` is an ObjectId keeps it as its entry id (its first four
bytes, the second it was created in, must be ``createdAt``'s second); one without gets an
id of the same form whose last eight bytes are a hash of its content, so that importing it
again finds it again.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

import marshmallow as ma
import orjson
from bson import ObjectId
from bson.binary import Binary, UuidRepresentation
from bson.decimal128 import Decimal128

from insights_audit.errors import BadRequest
from insights_audit.models import VIEW_ACTION, VIEW_TYPE
from insights_audit.trail.schemas import ACTION_NAME, TYPES, details_fit
from insights_audit.web.api import INT64, MAX_JSON_DEPTH, storable
from insights_audit.web.schemas import (
    AUDIT_ID_PATTERN,
    DASHBOARD_NAME_LIMIT,
    USER_EMAIL_LIMIT,
    USER_ID_LIMIT,
    parse_target_id,
)

VIEWS = "views"
ENTRIES = "entries"

# Where each field is read by default: a dotted path, or alternatives separated by "|"
# (the first present wins).
DEFAULT_PATHS: dict[str, dict[str, str]] = {
    VIEWS: {
        "id": "_id",
        "userId": "userId",
        "userEmail": "userEmail",
        "dashboardId": "dashboardId",
        "dashboardName": "dashboardName",
        "createdAt": "createdAt|viewedAt",
        "org": "owner|orgId",
        "requestId": "requestId",
        "ip": "ip",
        "userAgent": "userAgent",
    },
    ENTRIES: {
        "id": "_id",
        "type": "type",
        "action": "action",
        "targetId": "targetId",
        "details": "details",
        "userId": "userId",
        "userEmail": "userEmail",
        "createdAt": "createdAt",
        "org": "owner|orgId",
        "requestId": "requestId",
        "ip": "ip",
        "userAgent": "userAgent",
    },
}
FIELDS = sorted({field for paths in DEFAULT_PATHS.values() for field in paths})
LEGACY_UUIDS = {
    "python": UuidRepresentation.PYTHON_LEGACY,
    "java": UuidRepresentation.JAVA_LEGACY,
    "csharp": UuidRepresentation.CSHARP_LEGACY,
}
_EMAIL = ma.validate.Email()


class Rejected(ValueError):
    """A document that cannot become an entry, and why (in words for the rejects file)."""


class Row(NamedTuple):
    """An entry as the import stages it: every value as the text ``COPY`` takes."""

    id: str
    type: str
    action: str
    target_id: str
    user_id: str
    user_email: str | None
    details: str
    created_at: str
    request_id: str | None
    ip: str | None
    user_agent: str | None


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``FIELD=PATH`` pairs as a mapping; ValueError naming the first that is not one."""
    overrides = {}
    for pair in pairs:
        field, equals, path = pair.partition("=")
        if not equals or field not in FIELDS:
            raise ValueError(f"{pair!r}: expected FIELD=PATH with FIELD one of {', '.join(FIELDS)}")
        overrides[field] = path.strip()
    return overrides


class FieldMap:
    """Where each field of one kind of document is read."""

    def __init__(self, kind: str, overrides: Mapping[str, str]) -> None:
        paths = {
            **DEFAULT_PATHS[kind],
            **{k: v for k, v in overrides.items() if k in DEFAULT_PATHS[kind]},
        }
        self.paths = paths
        self._read = {
            field: tuple(tuple(path.split(".")) for path in alternatives.split("|") if path)
            for field, alternatives in paths.items()
        }

    def read(self, document: dict[str, Any], field: str) -> Any:
        """The field's value in ``document``; None when none of its paths is present."""
        for first, *rest in self._read[field]:
            value = document.get(first)
            for key in rest:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                return value
        return None


@dataclass(frozen=True)
class Rules:
    """What every imported document is held to besides its own fields."""

    org: str
    # Nothing later than this (the database's clock, a few minutes on) or, with retention
    # on, earlier than its horizon.
    latest: datetime
    earliest: datetime | None = None
    # A ``UuidRepresentation``: how a binary subtype 3 UUID's bytes are ordered.
    legacy_uuid: int = UuidRepresentation.PYTHON_LEGACY


def _text(value: Any, field: str, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"{field}: not a string")
    if not storable(value):
        raise Rejected(f"{field}: holds NUL characters or unpaired surrogates")
    if limit is not None and len(value) > limit:
        raise Rejected(f"{field}: longer than {limit} characters")
    return value


def _user_id(value: Any) -> str:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = _text(value, "userId", USER_ID_LIMIT)
    if not text:
        raise Rejected("userId: missing")
    return text


@lru_cache(maxsize=65_536)
def _email(value: Any) -> str | None:
    # Cached: a view log names the same few thousand users again and again.
    text = _text(value, "userEmail", USER_EMAIL_LIMIT)
    if text is not None:
        try:
            _EMAIL(text)
        except ma.ValidationError as error:
            raise Rejected(f"userEmail: not an e-mail address: {text!r}") from error
    return text


@lru_cache(maxsize=65_536)
def _canonical_uuid(value: str, field: str) -> str:
    try:
        return str(parse_target_id(value, ""))
    except BadRequest as error:
        raise Rejected(f"{field}: not a UUID: {value!r}") from error


def _uuid(value: Any, field: str, legacy: int) -> str:
    if isinstance(value, str):
        return _canonical_uuid(value, field)
    if isinstance(value, Binary) and value.subtype in (3, 4):
        try:
            representation = UuidRepresentation.STANDARD if value.subtype == 4 else legacy
            return str(value.as_uuid(representation))
        except ValueError as error:
            raise Rejected(f"{field}: not a UUID: {error}") from error
    if isinstance(value, uuid.UUID):
        return str(value)
    raise Rejected(f"{field}: missing" if value is None else f"{field}: not a UUID")


def _created_at(value: Any, rules: Rules) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as error:
            raise Rejected(f"createdAt: not a date: {value!r}") from error
    if not isinstance(value, datetime):
        raise Rejected("createdAt: missing" if value is None else "createdAt: not a date")
    if value.tzinfo is None:
        raise Rejected("createdAt: a time without an offset")
    value = value.astimezone(UTC)
    if value > rules.latest:
        raise Rejected(f"createdAt: in the future ({value.isoformat()})")
    if rules.earliest is not None and value < rules.earliest:
        raise Rejected(
            f"createdAt: older than the retention horizon ({rules.earliest.isoformat()})"
        )
    if value.year < 1970:
        raise Rejected("createdAt: before 1970, which an entry id cannot hold")
    return value


def _json_value(value: Any, path: str, depth: int) -> Any:
    """``value`` as JSON can carry it (BSON types as their usual JSON text), or Rejected."""
    if depth > MAX_JSON_DEPTH:
        raise Rejected(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        return {key: _json_value(item, f"{path}.{key}", depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item, f"{path}[{n}]", depth + 1) for n, item in enumerate(value)]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        # Compared, not ``in INT64``: a range tests an int subclass (BSON's Int64) one by one.
        if not INT64.start <= value < INT64.stop:
            raise Rejected(f"{path}: an integer beyond 64 bits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Rejected(f"{path}: a number that is not finite")
        return value
    if isinstance(value, ObjectId | uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, Decimal128 | Decimal):
        # Exact decimal text: a JSON number would be rounded to a double.
        return str(value)
    if isinstance(value, Binary) and value.subtype == 4:
        return str(value.as_uuid(UuidRepresentation.STANDARD))
    raise Rejected(f"{path}: a BSON {type(value).__name__}, which JSON cannot carry")


def _details(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected("details: not an object")
    details = _json_value(value, "details", 1)
    if not storable(details):
        raise Rejected("details: holds NUL characters or unpaired surrogates")
    try:
        details_fit(details)
    except ma.ValidationError as error:
        raise Rejected(f"details: {' '.join(map(str, error.messages))}") from error
    return dict(details)


def _entry_id(value: Any, second: int, content: Sequence[Any]) -> str:
    if value is None:
        digest = hashlib.sha256(orjson.dumps(content)).hexdigest()
        return f"{second:08x}{digest[:16]}"
    if isinstance(value, ObjectId):
        entry_id = str(value)
    elif isinstance(value, str) and AUDIT_ID_PATTERN.fullmatch(value):
        entry_id = value.lower()
    else:
        raise Rejected(f"_id: not an ObjectId: {value!r}")
    if int(entry_id[:8], 16) != second:
        raise Rejected(
            f"_id: its time ({datetime.fromtimestamp(int(entry_id[:8], 16), UTC).isoformat()})"
            f" is not createdAt's second ({datetime.fromtimestamp(second, UTC).isoformat()})"
        )
    return entry_id


def to_row(kind: str, fields: FieldMap, document: dict[str, Any], rules: Rules) -> Row:
    """The entry ``document`` becomes, or Rejected with the first reason it cannot."""
    read = fields.read
    org = read(document, "org")
    if org is not None and org != rules.org:
        raise Rejected(f"belongs to organisation {org!r}, not {rules.org!r}")
    created = _created_at(read(document, "createdAt"), rules)
    if kind == VIEWS:
        type_, action = VIEW_TYPE, VIEW_ACTION
        target = _uuid(read(document, "dashboardId"), "dashboardId", rules.legacy_uuid)
        name = _text(read(document, "dashboardName"), "dashboardName", DASHBOARD_NAME_LIMIT)
        details = {} if name is None else {"name": name}
    else:
        type_ = read(document, "type")
        if type_ not in TYPES:
            raise Rejected(f"type: not one of {', '.join(TYPES)}: {type_!r}")
        action = read(document, "action")
        if not isinstance(action, str) or not ACTION_NAME.fullmatch(action):
            raise Rejected(f"action: not an action name: {action!r}")
        target = _uuid(read(document, "targetId"), "targetId", rules.legacy_uuid)
        details = _details(read(document, "details"))
    user_id = _user_id(read(document, "userId"))
    user_email = _email(read(document, "userEmail"))
    request_id = _text(read(document, "requestId"), "requestId")
    ip = _text(read(document, "ip"), "ip")
    user_agent = _text(read(document, "userAgent"), "userAgent")
    row = Row(
        "",
        type_,
        action,
        target,
        user_id,
        user_email,
        orjson.dumps(details).decode(),
        created.isoformat(),
        request_id,
        ip,
        user_agent,
    )
    # A derived id hashes the org and every field but the id.
    entry_id = _entry_id(read(document, "id"), int(created.timestamp()), (rules.org, *row[1:]))
    return row._replace(id=entry_id)

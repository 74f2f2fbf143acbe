"""Schema pieces every resource shares: timestamps, ids, the success envelope."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import marshmallow as ma
from flask import Response, current_app
from marshmallow import fields, validate

from insights_audit.errors import BadRequest

# The longest dashboard name kept, from the view body or an entry's ``details.name``.
DASHBOARD_NAME_LIMIT = 256
# A user id and an e-mail address, wherever an entry or a filter names one.
USER_ID_LIMIT = 255
USER_EMAIL_LIMIT = 320
AUDIT_ID_PATTERN = re.compile(r"^[0-9a-fA-F]{24}$")
RFC3339_PATTERN = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
# An unencoded "+" in a query string arrives as a space.
SPACE_FOR_PLUS = re.compile(r" (\d{2}:\d{2})$")


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(raw: str) -> datetime:
    """An RFC 3339 timestamp with a time and an offset; anything else is a ValueError."""
    text = SPACE_FOR_PLUS.sub(r"+\1", raw.strip())
    if not RFC3339_PATTERN.fullmatch(text):
        raise ValueError(raw)
    date_part, fraction_and_zone = text[:19], text[19:]
    fraction = ""
    if fraction_and_zone.startswith("."):
        digits = re.match(r"\.(\d+)", fraction_and_zone)
        assert digits is not None
        fraction = "." + digits.group(1)[:6].ljust(6, "0")
        fraction_and_zone = fraction_and_zone[len(digits.group(0)) :]
    zone = "+00:00" if fraction_and_zone in ("Z", "z") else fraction_and_zone
    return datetime.fromisoformat(date_part.replace("t", "T") + fraction + zone)


def parse_target_id(raw: str, kind: str) -> uuid.UUID:
    """A dashboard, KPI or mapping id: a canonical hyphenated UUID in any case."""
    try:
        value = uuid.UUID(raw)
    except ValueError:
        value = None
    if value is None or str(value) != raw.lower():
        raise BadRequest(f"Invalid {kind} ID format")
    return value


def parse_audit_id(raw: str) -> str:
    if not AUDIT_ID_PATTERN.fullmatch(raw):
        raise BadRequest("Invalid audit log ID format")
    return raw.lower()


class Timestamp(fields.Field):
    """RFC 3339 timestamp: milliseconds and ``Z`` out; a time with any offset in."""

    default_error_messages = {
        "invalid": "Not a valid RFC 3339 timestamp with a time and an offset.",
    }

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"type": "string", "format": "date-time", "example": "2026-11-27T02:18:13.123Z"}
        metadata.update(kwargs.pop("metadata", {}))
        super().__init__(metadata=metadata, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_timestamp(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise self.make_error("invalid") from exc


def uuid_field(example: str = "123e4567-e89b-12d3-a456-426614174000", **kwargs: Any) -> fields.UUID:
    return fields.UUID(metadata={"example": example}, **kwargs)


class FullMatch(validate.Regexp):
    """A pattern the whole value must match (``re.match`` lets ``$`` match before a final
    newline); documented as the OpenAPI ``pattern``."""

    def __call__(self, value: Any) -> Any:
        if re.fullmatch(self.regex.pattern, value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


class StrictSchema(ma.Schema):
    """Unknown fields are an error, never silently dropped."""

    class Meta:
        unknown = ma.RAISE


class NoQuery(StrictSchema):
    """An operation without query parameters: an unknown one is a 400."""


class ResponseSchema(ma.Schema):
    """A part of a response body. The service always sends every field (null where a field
    allows it), so the OpenAPI document lists every field as required."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = True


class Pagination(ResponseSchema):
    limit = fields.Integer(required=True, metadata={"example": 100})
    nextCursor = fields.String(
        allow_none=True, required=True, metadata={"example": "MTc2NDIwOTg5MzEyMzQ1NjpmZg"}
    )


def envelope(
    name: str,
    data: ma.Schema | type[ma.Schema],
    *,
    many: bool = False,
    message: str,
    pagination: type[ma.Schema] | None = None,
) -> type[ma.Schema]:
    """The success envelope ``{"data", "message"[, "pagination"]}`` around ``data``."""
    attributes: dict[str, Any] = {
        "data": fields.Nested(data, many=many, required=True),
        "message": fields.String(required=True, metadata={"example": message}),
    }
    if pagination is not None:
        attributes["pagination"] = fields.Nested(pagination, required=True)
    return FastDumpSchema.from_dict(attributes, name=name)


def json_envelope(
    data: str,
    message: str,
    pagination: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The success envelope around ``data``, JSON that PostgreSQL already wrote: the body a
    schema built by ``envelope`` would dump, without parsing and re-encoding the data."""
    rest: dict[str, Any] = {"message": message}
    if pagination is not None:
        rest["pagination"] = pagination
    body = f'{{"data":{data},{json.dumps(rest, separators=(",", ":"))[1:]}\n'
    return current_app.response_class(body, mimetype="application/json", headers=headers)


Dumper = Callable[[Any], Any]


def _none_or(convert: Dumper) -> Dumper:
    return lambda value: None if value is None else convert(value)


def _field_dumper(field: fields.Field) -> Dumper:
    """What dumping ``field`` does to a value, as one plain function."""
    if isinstance(field, fields.Nested):
        inner = compile_dumper(field.schema)
        if field.many:
            return _none_or(lambda values: [inner(value) for value in values])
        return _none_or(inner)
    if isinstance(field, Timestamp):
        return _none_or(format_timestamp)
    if isinstance(field, fields.UUID):
        return _none_or(str)
    if isinstance(field, fields.Date):
        return _none_or(lambda value: value.isoformat())
    if isinstance(field, fields.Integer):
        return _none_or(int)
    if isinstance(field, fields.Float):
        return _none_or(float)
    if isinstance(field, fields.List):
        each = _field_dumper(field.inner)
        return _none_or(lambda values: [each(value) for value in values])
    if isinstance(field, fields.Boolean):
        return _none_or(bool)
    if isinstance(field, fields.String | fields.Dict):
        return lambda value: value
    raise TypeError(f"no fast dump for {type(field).__name__}")


def compile_dumper(schema: ma.Schema) -> Dumper:
    """A function that dumps one object exactly as ``schema`` would, without its per-field
    machinery; objects are dicts or rows whose attributes the schema names."""
    plan = [
        (field.data_key or name, field.attribute or name, _field_dumper(field))
        for name, field in schema.dump_fields.items()
    ]

    def dump(obj: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return {key: convert(obj[attribute]) for key, attribute, convert in plan}
        return {key: convert(getattr(obj, attribute)) for key, attribute, convert in plan}

    return dump


class FastDumpSchema(ResponseSchema):
    """Dumps through ``compile_dumper``: response bodies cost a fraction of a plain dump."""

    _dumpers: ClassVar[dict[type, Dumper]] = {}

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        dumper = self._dumpers.get(type(self))
        if dumper is None:
            dumper = self._dumpers[type(self)] = compile_dumper(self)
        if self.many if many is None else many:
            return [dumper(item) for item in obj]
        return dumper(obj)


class CanonicalUUID(fields.UUID):
    """A UUID in the canonical hyphenated form, any case in, lowercase out."""

    default_error_messages = {"invalid_uuid": "Not a valid UUID in canonical hyphenated form."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {"example": "123e4567-e89b-12d3-a456-426614174000"})
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> uuid.UUID:
        if not isinstance(value, str):
            raise self.make_error("invalid_uuid")
        try:
            return parse_target_id(value, "")
        except BadRequest as exc:
            raise self.make_error("invalid_uuid") from exc

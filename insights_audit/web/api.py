"""The Api, its Blueprint and request parser, and the base path, bound to the app in
``create_app``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from http import HTTPStatus
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any, NoReturn

import flask_smorest
import marshmallow as ma
from flask import Flask
from flask_smorest.utils import prepare_response
from marshmallow import fields
from marshmallow import fields as ma_fields
from webargs import core
from webargs.flaskparser import FlaskParser, abort

from insights_audit.errors import (
    AUTHENTICATION_REQUIRED,
    DEFAULT_MESSAGES,
    ERROR_EXAMPLES,
    register_error_handlers,
)

BASE_PATH = "/api/v2/insights/kpis/audit-logs"


UNSTORABLE_TEXT = "Text must not contain NUL characters (\\u0000) or unpaired surrogates."


def storable(value: Any) -> bool:
    """Whether every string in ``value`` (keys included) is text PostgreSQL can store."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(storable(key) and storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(storable(item) for item in value)
    return True


MAX_JSON_DEPTH = 32
INT64 = range(-(2**63), 2**63)


class UnacceptableJSON(ValueError):
    """A body that is JSON but that the service refuses to store."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnacceptableJSON(f"Numbers must be finite, got {text[:40]}.")
    return value


def _int64(text: str) -> int:
    # Checked by length first: converting thousands of digits is itself costly.
    value = int(text) if len(text) <= 20 else None
    if value is None or value not in INT64:
        raise UnacceptableJSON("Integers must fit in 64 bits.")
    return value


def _no_constant(name: str) -> Any:
    raise UnacceptableJSON(f"Numbers must be finite, got {name}.")


def _depth(value: Any) -> int:
    """How deeply ``value`` nests objects and arrays (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in children)
    return deepest


def load_json_body(raw: bytes) -> Any:
    """Parse a request body; UnacceptableJSON for non-finite numbers, integers beyond 64 bits
    and nesting deeper than ``MAX_JSON_DEPTH``, ValueError for anything that is not JSON."""
    try:
        value = json.loads(
            raw, parse_float=_finite_float, parse_int=_int64, parse_constant=_no_constant
        )
    except RecursionError as exc:
        raise UnacceptableJSON(f"Nesting deeper than {MAX_JSON_DEPTH} levels.") from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise UnacceptableJSON(f"Nesting deeper than {MAX_JSON_DEPTH} levels.")
    return value


class App(Flask):
    """Flask, telling a plain function from an ``async def`` one by its code flags.

    ``ensure_sync`` runs about sixteen times a request (each hook, each decorator of a view);
    Flask's own asks ``inspect.iscoroutinefunction`` each time, which was 6% of a short read's
    CPU. A plain ``def`` function or method is returned as it is; anything else goes to Flask.
    """

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        target = getattr(func, "__func__", func)
        if (
            type(target) is FunctionType
            and not target.__code__.co_flags & CO_COROUTINE
            and not hasattr(target, "_is_coroutine_marker")
        ):
            return func
        return super().ensure_sync(func)


# The spelling of an integer every ``fields.Integer`` reads as itself: no sign, no leading
# zero, no spaces, nine digits at most.
_PLAIN_INTEGER = re.compile(r"[1-9][0-9]{0,8}|0")
_TRANSFORMING_HOOKS = ("pre_load", "post_load")


class QueryShortcut:
    """A query schema's answer to the common queries, without webargs and marshmallow.

    Two cases are answered: no parameters at all (the schema's defaults, loaded once), and,
    for a schema of ``fields.Integer`` only, each parameter once, spelled as a plain integer
    and passing its validators. Anything else (``None``) goes to webargs, which gives the
    answer or the 400 it always gave: the shortcut answers only what webargs would answer
    the same.
    """

    def __init__(self, schema: ma.Schema) -> None:
        fields_ = schema.load_fields
        hooked = any(schema._hooks.values())
        transforms = any(schema._hooks.get(hook) for hook in _TRANSFORMING_HOOKS)
        defaults_fixed = not any(callable(field.load_default) for field in fields_.values())
        self._defaults: dict[str, Any] | None = None
        if not transforms and defaults_fixed:
            try:
                self._defaults = schema.load({})
            except ma.ValidationError:
                self._defaults = None
        self._integers: dict[str, tuple[str, Any]] | None = None
        if (
            self._defaults is not None
            and not hooked
            and all(
                type(field) is fields.Integer and not field.strict for field in fields_.values()
            )
        ):
            self._integers = {
                field.data_key or name: (field.attribute or name, field)
                for name, field in fields_.items()
            }

    def load(self, args: Any) -> dict[str, Any] | None:
        if not args:
            return None if self._defaults is None else dict(self._defaults)
        if self._integers is None:
            return None
        loaded = dict(self._defaults or {})
        for key, values in args.lists():
            known = self._integers.get(key)
            if known is None or len(values) != 1 or not _PLAIN_INTEGER.fullmatch(values[0]):
                return None
            attribute, field = known
            value = int(values[0])
            try:
                for validator in field.validators:
                    if validator(value) is False:
                        return None
            except ma.ValidationError:
                return None
            loaded[attribute] = value
        return loaded


class ArgumentsParser(FlaskParser):
    """Webargs parser that answers 400 and reads any non-empty body as JSON; the common
    queries of a query schema are answered by its ``QueryShortcut``."""

    DEFAULT_VALIDATION_STATUS = 400
    # None: each schema decides (StrictSchema raises on unknown query and body fields).
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": None}

    def __init__(self) -> None:
        super().__init__()
        self._shortcuts: dict[int, tuple[ma.Schema, QueryShortcut]] = {}

    def _raw_load_json(self, req: Any) -> Any:
        # The content type is not trusted: a non-empty body must be a JSON object.
        raw = req.get_data(cache=True)
        if not raw:
            return core.missing
        try:
            data = load_json_body(raw)
        except UnacceptableJSON as exc:
            abort(400, messages={"json": {"_schema": [str(exc)]}})
        except ValueError:
            abort(400, messages={"json": {"_schema": ["Invalid JSON body."]}})
        if not storable(data):
            abort(400, messages={"json": {"_schema": [UNSTORABLE_TEXT]}})
        return data

    def parse(
        self, argmap: Any, req: Any = None, *, location: str | None = None, **kwargs: Any
    ) -> Any:
        if location == "query" and isinstance(argmap, ma.Schema):
            known = self._shortcuts.get(id(argmap))
            if known is None or known[0] is not argmap:
                known = self._shortcuts[id(argmap)] = (argmap, QueryShortcut(argmap))
            loaded = known[1].load((req or self.get_default_request()).args)
            if loaded is not None:
                return loaded
        return super().parse(argmap, req, location=location, **kwargs)

    def load_querystring(self, req: Any, schema: Any) -> Any:
        # Every value of a repeated parameter (``type=a&type=b``), and the names too.
        if not storable([[name, *values] for name, values in req.args.lists()]):
            abort(400, messages={"query": {"_schema": [UNSTORABLE_TEXT]}})
        return super().load_querystring(req, schema)

    def _handle_invalid_json_error(
        self, error: Any, req: Any, *args: Any, **kwargs: Any
    ) -> NoReturn:
        abort(400, exc=error, messages={"json": {"_schema": ["Invalid JSON body."]}})


class ErrorSchema(ma.Schema):
    """The error envelope every error response uses."""

    message = fields.String(required=True, metadata={"example": AUTHENTICATION_REQUIRED})
    code = fields.Integer(required=True, metadata={"example": 401})
    status = fields.String(required=True, metadata={"example": "Unauthorized"})
    errors = fields.Dict(
        metadata={
            "description": "Validation failures by location and field",
            "example": {
                "query": {
                    "limit": ["Must be greater than or equal to 1 and less than or equal to 100."]
                }
            },
        }
    )


def _error_example(status: HTTPStatus) -> dict[str, Any]:
    """A real error body of ``status``, as the service sends it."""
    example: dict[str, Any] = {
        "message": ERROR_EXAMPLES.get(status, DEFAULT_MESSAGES.get(status, status.phrase)),
        "code": int(status),
        "status": status.phrase,
    }
    if status == HTTPStatus.BAD_REQUEST:
        example["errors"] = {"query": {"limit": ["Not a valid integer."]}}
    return example


def _nullable_reference(
    converter: Any, field: ma_fields.Field, ret: dict[str, Any]
) -> dict[str, Any]:
    """A nullable nested object as ``allOf: [$ref]`` + ``nullable`` (what client generators
    read as an optional typed object), instead of apispec's ``anyOf`` with a bare object."""
    choices = ret.get("anyOf")
    if field.allow_none and choices and {"type": "object", "nullable": True} in choices:
        ret.pop("anyOf")
        return {"allOf": [choice for choice in choices if "$ref" in choice], "nullable": True}
    return {}


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self.ma_plugin.converter.add_attribute_function(_nullable_reference)

    def _register_error_handlers(self) -> None:
        register_error_handlers(self._app)

    def _register_responses(self) -> None:
        """Every status as a response component, errors with a real example body."""
        for status in HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                response["example"] = _error_example(status)
            prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {
            "description": "Any other error, in the same envelope",
            "schema": self.ERROR_SCHEMA,
            "example": _error_example(HTTPStatus.INTERNAL_SERVER_ERROR),
        }
        prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)

    def _register_pagination_header(self) -> None:
        """None: the service pages with cursors in the body, not flask-smorest's headers."""


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ArgumentsParser()

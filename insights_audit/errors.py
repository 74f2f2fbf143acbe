"""The one error envelope of the service and the domain errors that map to it."""

from __future__ import annotations

import logging
import traceback
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, has_request_context, jsonify
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

AUTHENTICATION_REQUIRED = "Authentication required - No valid API token provided"
INSUFFICIENT_PERMISSIONS = "Insufficient permissions - Valid token but lacks required permissions"
DATABASE_UNAVAILABLE = "Service temporarily unavailable - the database did not answer in time"
VALIDATION_FAILED = "Invalid request - see errors for details"

# Message for statuses raised by the framework itself (unknown path, wrong method, ...).
DEFAULT_MESSAGES = {
    400: "Bad request",
    404: "Resource not found",
    405: "Method not allowed",
    413: "Request body too large",
    500: "Internal server error",
}

KEY_REUSED = "Idempotency-Key was already used for a different request"

# The messages the OpenAPI document shows as examples, where a status has one typical message.
ERROR_EXAMPLES = {
    400: VALIDATION_FAILED,
    401: AUTHENTICATION_REQUIRED,
    403: INSUFFICIENT_PERMISSIONS,
    404: "Audit log not found",
    409: KEY_REUSED,
    503: DATABASE_UNAVAILABLE,
}

RETRY_AFTER_SECONDS = "1"


class DomainError(Exception):
    """An error a client caused or must handle; rendered as the error envelope."""

    status = 400

    def __init__(
        self,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class BadRequest(DomainError):
    status = 400


class Unauthorized(DomainError):
    status = 401

    def __init__(self) -> None:
        super().__init__(AUTHENTICATION_REQUIRED, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    status = 403

    def __init__(self) -> None:
        super().__init__(INSUFFICIENT_PERMISSIONS)


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class TooManyRequests(DomainError):
    """429: the caller may try again after ``retry_after`` seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


def error_response(
    status: int,
    message: str,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "message": message,
        "code": status,
        "status": HTTPStatus(status).phrase,
    }
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def database_unavailable_response() -> Response:
    """503: the database did not answer (pool exhausted, connection lost, timeout)."""
    return error_response(503, DATABASE_UNAVAILABLE, headers={"Retry-After": RETRY_AFTER_SECONDS})


def _http_error_response(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    message = data.get("message") or (
        VALIDATION_FAILED if errors else DEFAULT_MESSAGES.get(status, HTTPStatus(status).phrase)
    )
    headers = {
        name: value
        for name, value in error.get_headers()
        if name.lower() not in ("content-type", "content-length")
    }
    headers.update(data.get("headers") or {})
    if status >= 500:
        message = DEFAULT_MESSAGES[500] if status == 500 else message
        errors = None
    return error_response(status, message, errors, headers)


TRACEBACK_FRAMES = 8


def log_unexpected(error: BaseException) -> None:
    """One log line: the request id and the innermost frames of the traceback, with no
    request data (SQL parameters are hidden by the engine)."""
    frames = traceback.extract_tb(error.__traceback__)[-TRACEBACK_FRAMES:]
    where = " < ".join(
        f"{frame.filename}:{frame.lineno} {frame.name}" for frame in reversed(frames)
    )
    log.error(
        "unhandled error request_id=%s %s: %s",
        g.get("request_id") if has_request_context() else None,
        type(error).__name__,
        where,
    )


def register_error_handlers(app: Flask) -> None:
    """Render every error, the framework's own included, as the envelope."""

    @app.errorhandler(DomainError)
    def _domain(error: DomainError) -> Response:
        return error_response(error.status, error.message, error.errors, error.headers)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        if isinstance(error, InternalServerError) and error.original_exception is not None:
            log_unexpected(error.original_exception)
        return _http_error_response(error)

    @app.errorhandler(sa_exc.TimeoutError)
    @app.errorhandler(sa_exc.OperationalError)
    def _database_unavailable(error: Exception) -> Response:
        log.warning("database unavailable: %s", error.__class__.__name__)
        return database_unavailable_response()

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log_unexpected(error)
        return error_response(500, DEFAULT_MESSAGES[500])

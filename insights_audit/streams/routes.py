"""Push streams: the org's trail delivered to a webhook or a Splunk HTTP Event Collector."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Any

from flask import Response, current_app
from flask.views import MethodView

from insights_audit.audit.keys import app_signing_key, cursor_key
from insights_audit.streams import secrets, service
from insights_audit.streams.schemas import (
    CREATED_MESSAGE,
    ROTATED_MESSAGE,
    STREAM_MESSAGE,
    STREAMS_MESSAGE,
    UPDATED_MESSAGE,
    CreatedStreamEnvelope,
    NewStream,
    RotatedSecretEnvelope,
    StreamChanges,
    StreamEnvelope,
    StreamsEnvelope,
)
from insights_audit.web.api import BASE_PATH, Blueprint
from insights_audit.web.auth import ON_BEHALF_ROLES, READ, WRITE, current_principal, requires
from insights_audit.web.openapi_parameters import id_parameter
from insights_audit.web.request_context import request_meta
from insights_audit.web.schemas import NoQuery, parse_target_id
from insights_audit.web.work import request_work

blp = Blueprint(
    "streams",
    __name__,
    url_prefix=f"{BASE_PATH}/streams",
    description="Push streams: the organisation's trail delivered, in feed order and at least"
    " once, to a webhook or a Splunk HTTP Event Collector. For organisation administrators.",
)

STREAM_ID_PARAMETER = id_parameter(
    "streamId", "Stream id (UUID)", "uuid", "123e4567-e89b-12d3-a456-426614174000"
)


def policy() -> service.StreamPolicy:
    settings = current_app.config["SETTINGS"]
    return service.StreamPolicy(
        allow_http=settings.stream_allow_http,
        allow_private=settings.stream_allow_private,
        secrets_key=secrets.secrets_key(app_signing_key(current_app), settings.stream_secret_key),
        cursor_key=cursor_key(current_app),
    )


def _stream_id(raw: str) -> uuid.UUID:
    return parse_target_id(raw, "stream")


@blp.route("")
class Streams(MethodView):
    @requires(scopes=READ, roles=ON_BEHALF_ROLES)
    @blp.arguments(NoQuery(), location="query")
    @blp.response(200, StreamsEnvelope)
    @blp.doc(operationId="listStreams")
    def get(self, _: dict[str, Any]) -> dict[str, Any]:
        """List my organisation's push streams

        Every stream with its delivery state: the position of the last entry its receiver
        accepted, how far behind it is, failures. Secrets and tokens are never shown.
        """
        data = service.every(request_work(), cursor_key(current_app))
        return {"data": data, "message": STREAMS_MESSAGE}

    @requires(scopes=WRITE, roles=ON_BEHALF_ROLES)
    @blp.arguments(NewStream())
    @blp.response(201, CreatedStreamEnvelope)
    @blp.alt_response(413, response=HTTPStatus(413).name)
    @blp.doc(operationId="createStream")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a push stream

        Delivers the organisation's entries that `filters` keeps, in feed order, from
        `startAt`, in batches: a webhook receives `POST` requests signed with the secret in
        this answer (shown once: keep it), a Splunk HEC endpoint receives events with its
        token. The URL must be `https` and resolve to public addresses. Audited.
        """
        principal = current_principal()
        data = service.create(request_work(), principal.acting(), request_meta(), body, policy())
        return {"data": data, "message": CREATED_MESSAGE}


@blp.route("/<streamId>", parameters=[STREAM_ID_PARAMETER])
class OneStream(MethodView):
    @requires(scopes=READ, roles=ON_BEHALF_ROLES)
    @blp.response(200, StreamEnvelope)
    @blp.alt_response(400, response=HTTPStatus(400).name)
    @blp.alt_response(404, response=HTTPStatus(404).name)
    @blp.doc(operationId="getStream")
    def get(self, streamId: str) -> dict[str, Any]:
        """Get a push stream"""
        data = service.one(request_work(), _stream_id(streamId), cursor_key(current_app))
        return {"data": data, "message": STREAM_MESSAGE}

    @requires(scopes=WRITE, roles=ON_BEHALF_ROLES)
    @blp.arguments(StreamChanges())
    @blp.response(200, StreamEnvelope)
    @blp.alt_response(404, response=HTTPStatus(404).name)
    @blp.alt_response(413, response=HTTPStatus(413).name)
    @blp.doc(operationId="updateStream")
    def patch(self, body: dict[str, Any], streamId: str) -> dict[str, Any]:
        """Change a push stream

        Its name, URL, HEC token, filters, or status (`paused` stops delivery, `active`
        resumes it, also after a suspension). Audited.
        """
        principal = current_principal()
        data = service.change(
            request_work(),
            principal.acting(),
            request_meta(),
            _stream_id(streamId),
            body,
            policy(),
        )
        return {"data": data, "message": UPDATED_MESSAGE}

    @requires(scopes=WRITE, roles=ON_BEHALF_ROLES)
    @blp.response(204)
    @blp.alt_response(400, response=HTTPStatus(400).name)
    @blp.alt_response(404, response=HTTPStatus(404).name)
    @blp.doc(operationId="deleteStream")
    def delete(self, streamId: str) -> Response:
        """Delete a push stream

        Delivery stops; what was delivered stays delivered. Audited.
        """
        principal = current_principal()
        service.remove(request_work(), principal.acting(), request_meta(), _stream_id(streamId))
        return Response(status=204)


@blp.route("/<streamId>/rotate-secret", parameters=[STREAM_ID_PARAMETER])
class StreamSecret(MethodView):
    @requires(scopes=WRITE, roles=ON_BEHALF_ROLES)
    @blp.response(200, RotatedSecretEnvelope)
    @blp.alt_response(400, response=HTTPStatus(400).name)
    @blp.alt_response(404, response=HTTPStatus(404).name)
    @blp.alt_response(413, response=HTTPStatus(413).name)
    @blp.doc(operationId="rotateStreamSecret")
    def post(self, streamId: str) -> dict[str, Any]:
        """Rotate a webhook stream's signing secret

        A new secret, shown once, signs every delivery from now on. Audited.
        """
        principal = current_principal()
        data = service.rotate_secret(
            request_work(),
            principal.acting(),
            request_meta(),
            _stream_id(streamId),
            policy().secrets_key,
        )
        return {"data": data, "message": ROTATED_MESSAGE}

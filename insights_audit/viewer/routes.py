"""Viewer links, and the caller's own token: what the viewer needs of the API."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import current_app
from flask.views import MethodView
from sqlalchemy import select

from insights_audit.models import ApiToken
from insights_audit.viewer import links
from insights_audit.viewer.schemas import (
    LINK_MESSAGE,
    ME_MESSAGE,
    MeEnvelope,
    NewViewerLink,
    ViewerLinkEnvelope,
)
from insights_audit.web.api import BASE_PATH, Blueprint
from insights_audit.web.auth import (
    KNOWN_ROLES,
    ON_BEHALF_ROLES,
    READ,
    WRITE,
    current_principal,
    requires,
)
from insights_audit.web.request_context import request_meta, request_origin
from insights_audit.web.schemas import NoQuery
from insights_audit.web.work import read, request_work

blp = Blueprint(
    "viewer",
    __name__,
    url_prefix=BASE_PATH,
    description="The built-in viewer (`/ui/`): links that sign a person in, and who a token is.",
)


def base_url() -> str:
    """The service's public address: ``PUBLIC_BASE_URL``, or the request's own host."""
    configured: str | None = current_app.config["SETTINGS"].public_base_url
    return configured or request_origin()


@blp.route("/viewer-links")
class ViewerLinks(MethodView):
    @requires(scopes=WRITE, roles=ON_BEHALF_ROLES)
    @blp.arguments(NewViewerLink())
    @blp.response(201, ViewerLinkEnvelope)
    @blp.alt_response(413, response=HTTPStatus(413).name)
    @blp.doc(operationId="createViewerLink")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a viewer link

        A read-only token (scope `api-readonly`) for one person of my organisation, valid
        for `ttlSeconds`, and the address that opens the viewer signed in with it. Audited
        (type `token`, action `viewer-link.create`), without the token.
        """
        work = request_work()
        data = links.mint(
            work.connection,
            current_principal().acting(),
            request_meta(),
            base_url(),
            user_id=body["userId"],
            user_email=body.get("userEmail"),
            roles=body["roles"],
            ttl_seconds=body["ttlSeconds"],
            via="api",
        )
        return {"data": data, "message": LINK_MESSAGE}


@blp.route("/me")
class Me(MethodView):
    @requires(scopes=READ, roles=KNOWN_ROLES)
    @blp.arguments(NoQuery(), location="query")
    @blp.response(200, MeEnvelope)
    @blp.doc(operationId="getMe")
    def get(self, _: dict[str, Any]) -> dict[str, Any]:
        """Who my token is

        The organisation, user, roles and scopes of the token, and when it expires: what a
        client needs to offer only what the token may do.
        """
        principal = current_principal()
        expires_at = read(
            lambda work: work.connection.scalar(
                select(ApiToken.expires_at).where(ApiToken.id == principal.token_id)
            )
        )
        data = {
            "org": principal.org,
            "userId": principal.user_id,
            "userEmail": principal.user_email,
            "roles": sorted(principal.roles),
            "scopes": sorted(principal.scopes),
            "expiresAt": expires_at,
        }
        return {"data": data, "message": ME_MESSAGE}

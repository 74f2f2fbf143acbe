"""``/ui/``: the viewer, a page and its assets served by the service itself.

The page is plain HTML, one script and one stylesheet of ours, and uPlot (vendored from the
npm registry by ``make vendor``, committed with its licence): nothing is built at install
and nothing is fetched from elsewhere. Assets are served under names that carry a hash of
their content, cached for a year; the page itself is never cached, so a new release is
picked up at once. The viewer calls the public API only, with the token the person gave.

Every answer carries a Content-Security-Policy without ``unsafe-inline`` or ``unsafe-eval``
(scripts, styles, connections and images from the service only), ``frame-ancestors`` from
``UI_FRAME_ANCESTORS``, ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, redirect
from werkzeug.wrappers import Response as BaseResponse

from insights_audit.config import Settings

STATIC = Path(__file__).resolve().parent / "static"
# The files the page names, by their path under ``static``.
ASSETS = (
    "app.css",
    "app.js",
    "vendor/uplot/uPlot.min.css",
    "vendor/uplot/uPlot.iife.min.js",
)
YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def _hashed(path: str, body: bytes) -> str:
    name, dot, extension = path.rpartition("/")[2].partition(".")
    digest = hashlib.sha256(body).hexdigest()[:16]
    return f"{name}.{digest}{dot}{extension}"


def _load() -> tuple[bytes, dict[str, Asset]]:
    """The page, with each asset's hashed address in place of its name, and the assets by
    hashed name."""
    page = (STATIC / "index.html").read_text()
    assets: dict[str, Asset] = {}
    for path in ASSETS:
        body = (STATIC / path).read_bytes()
        hashed = _hashed(path, body)
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        assets[hashed] = Asset(body, content_type)
        page = page.replace("{{" + path + "}}", f"/ui/assets/{hashed}")
    return page.encode(), assets


def security_headers(frame_ancestors: str) -> dict[str, str]:
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def register(app: Flask, settings: Settings) -> None:
    page, assets = _load()
    headers = security_headers(settings.ui_frame_ancestors)
    blueprint = Blueprint("ui", __name__)

    @blueprint.get("/ui")
    def ui_root() -> BaseResponse:
        response = redirect("/ui/", 308)
        response.headers.update(headers)
        return response

    @blueprint.get("/ui/")
    def ui_page() -> Response:
        return Response(
            page,
            content_type="text/html; charset=utf-8",
            headers={**headers, "Cache-Control": "no-cache"},
        )

    @blueprint.get("/ui/assets/<name>")
    def ui_asset(name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            abort(404)
        return Response(
            asset.body,
            content_type=asset.content_type,
            headers={**headers, "Cache-Control": f"public, max-age={YEAR}, immutable"},
        )

    app.register_blueprint(blueprint)

"""Keyset cursors: a position in a newest-first list of entries, signed for one org.

A cursor is opaque to clients: base64 of the position and an HMAC-SHA256 over the org and the
position, keyed by ``keys.cursor_key``, so that a cursor of one org is refused in another.
A feed position is encrypted as well (below): its transaction id would tell other orgs' write
volume.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from flask import current_app, request, url_for
from marshmallow import fields

from insights_audit.audit.keys import cursor_key
from insights_audit.web.auth import current_principal
from insights_audit.web.request_context import request_origin
from insights_audit.web.schemas import AUDIT_ID_PATTERN


@dataclass(frozen=True)
class TrailPosition:
    """A keyset position: the last entry of a page."""

    created_at: datetime
    id: str


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)


def _cursor_mac(key: bytes, org: str, position: str) -> str:
    return hmac.new(key, f"{org}\0{position}".encode(), hashlib.sha256).hexdigest()[:32]


def encode_cursor(position: TrailPosition, org: str, key: bytes) -> str:
    """An opaque cursor for ``position``, valid only for ``org`` (HMAC-SHA256 with ``key``)."""
    micros = (position.created_at - EPOCH) // ONE_MICROSECOND
    named = f"{micros}.{position.id}"
    raw = f"{named}.{_cursor_mac(key, org, named)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, org: str, key: bytes) -> TrailPosition:
    """The position a cursor names; ValueError for anything this service did not mint for
    ``org``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(cursor) from exc
    named, _, mac = raw.rpartition(".")
    if not hmac.compare_digest(mac.encode(), _cursor_mac(key, org, named).encode()):
        raise ValueError(cursor)
    micros, _, entry_id = named.partition(".")
    if not re.fullmatch(r"\d{1,18}", micros) or not AUDIT_ID_PATTERN.fullmatch(entry_id):
        raise ValueError(cursor)
    try:
        return TrailPosition(EPOCH + int(micros) * ONE_MICROSECOND, entry_id.lower())
    except OverflowError as exc:
        raise ValueError(cursor) from exc


class Cursor(fields.Field):
    """The opaque keyset cursor of a trail page."""

    default_error_messages = {"invalid": "Not a valid cursor."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> TrailPosition:
        try:
            # Authentication ran first: the cursor must have been minted for this org.
            org = current_principal().org
            key = cursor_key(current_app)
            return decode_cursor(value if isinstance(value, str) else "", org, key)
        except ValueError as exc:
            raise self.make_error("invalid") from exc


def next_page(after: TrailPosition | None, limit: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``pagination`` object of a page and its ``Link`` header (when there is a next page):
    the same request with ``cursor`` set to the position after the page."""
    if after is None:
        return {"limit": limit, "nextCursor": None}, {}
    next_cursor = encode_cursor(after, current_principal().org, cursor_key(current_app))
    args: dict[str, Any] = {**request.args.to_dict(flat=False), "cursor": next_cursor}
    public_base_url = current_app.config["SETTINGS"].public_base_url
    path = url_for(request.endpoint or "", **(request.view_args or {}), **args)
    # Without PUBLIC_BASE_URL, the request's host is one of TRUSTED_HOSTS (request_context).
    link = public_base_url + path if public_base_url else request_origin() + path
    return {"limit": limit, "nextCursor": next_cursor}, {"Link": f'<{link}>; rel="next"'}


# Feed positions: a place in the org's chain, ``(txid, id)``. Transaction ids count every
# org's writes, so a position is encrypted and authenticated for its org (AES-SIV, with the
# org as associated data): it reveals nothing but itself, and the same position always reads
# the same (a feed with nothing new gives back the position it was given). Positions of the
# previous release (the text in clear, HMAC-signed under the label "feed") are still read.
FEED_LABEL = "feed"
_TXID = struct.Struct(">Q")


def _position_cipher(key: bytes) -> AESSIV:
    return AESSIV(hashlib.sha512(b"insights-audit feed position\0" + key).digest())


def _feed_scope(org: str) -> str:
    return f"{FEED_LABEL}\0{org}"


def encode_feed_position(position: tuple[str, str], org: str, key: bytes) -> str:
    """An opaque feed position for ``(txid, id)``, readable only for ``org``."""
    plain = _TXID.pack(int(position[0])) + bytes.fromhex(position[1])
    sealed = _position_cipher(key).encrypt(plain, [org.encode()])
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def decode_feed_position(value: str, org: str, key: bytes) -> tuple[str, str]:
    """The ``(txid, id)`` a feed position names; ValueError unless minted for ``org``."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(value) from exc
    try:
        plain = _position_cipher(key).decrypt(raw, [org.encode()])
    except (InvalidTag, ValueError):
        return _decode_signed_feed_position(raw, value, org, key)
    if len(plain) not in (_TXID.size, _TXID.size + 12):
        raise ValueError(value)
    return str(_TXID.unpack_from(plain)[0]), plain[_TXID.size :].hex()


def _decode_signed_feed_position(raw: bytes, value: str, org: str, key: bytes) -> tuple[str, str]:
    """A position of the previous release: ``txid.id.mac``, in clear, HMAC-signed."""
    try:
        named, _, mac = raw.decode().rpartition(".")
    except UnicodeDecodeError as exc:
        raise ValueError(value) from exc
    expected = _cursor_mac(key, _feed_scope(org), named)
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise ValueError(value)
    txid, _, entry_id = named.partition(".")
    if not re.fullmatch(r"\d{1,20}", txid) or not (
        entry_id == "" or AUDIT_ID_PATTERN.fullmatch(entry_id)
    ):
        raise ValueError(value)
    if int(txid) >= 2**64:
        raise ValueError(value)
    return txid, entry_id.lower()


class FeedPosition(fields.Field):
    """An opaque position in the org's feed (``pagination.nextCursor`` of an earlier answer)."""

    default_error_messages = {"invalid": "Not a valid feed position."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> tuple[str, str]:
        try:
            org = current_principal().org
            return decode_feed_position(
                value if isinstance(value, str) else "", org, cursor_key(current_app)
            )
        except ValueError as exc:
            raise self.make_error("invalid") from exc

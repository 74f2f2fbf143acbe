"""The service's secrets: the Ed25519 key that signs checkpoints, and the cursor key derived
from it."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from flask import Flask

from insights_audit.config import Settings

SIGNING_KEY = "insights_audit.signing_key"
CURSOR_KEY = "insights_audit.cursor_key"


def _create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` unless another process does so first.

    The key is written to a private temporary file that is then linked into place: a
    concurrent reader sees no file or a whole one, never an empty one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
        handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    staged = Path(handle.name)  # created with mode 0600
    try:
        os.link(staged, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        staged.unlink()


def load_signing_key(key: str | None, key_file: str) -> Ed25519PrivateKey:
    """The Ed25519 key: base64 of a 32-byte seed, given or read from ``key_file``.

    A missing key file is created with a new random key, readable by its owner only.
    """
    encoded = key
    if not encoded:
        path = Path(key_file)
        if not path.exists():
            _create_key_file(path)
        encoded = path.read_text().strip()
    try:
        seed = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise RuntimeError("AUDIT_SIGNING_KEY must be base64") from exc
    if len(seed) != 32:
        raise RuntimeError("AUDIT_SIGNING_KEY must be 32 bytes (base64 of a random seed)")
    return Ed25519PrivateKey.from_private_bytes(seed)


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    return load_signing_key(settings.audit_signing_key, settings.audit_signing_key_file)


def app_signing_key(app: Flask) -> Ed25519PrivateKey:
    """The app's key, loaded (or created) on first use."""
    key: Ed25519PrivateKey | None = app.extensions.get(SIGNING_KEY)
    if key is None:
        key = app.extensions[SIGNING_KEY] = signing_key(app.config["SETTINGS"])
    return key


def derive_cursor_key(signing: Ed25519PrivateKey) -> bytes:
    """The HMAC key of trail cursors, derived from the signing key."""
    seed = signing.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return hashlib.sha256(b"insights-audit cursor" + bytes(1) + seed).digest()


def cursor_key(app: Flask) -> bytes:
    key: bytes | None = app.extensions.get(CURSOR_KEY)
    if key is None:
        key = app.extensions[CURSOR_KEY] = derive_cursor_key(app_signing_key(app))
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]

"""Stream secrets (a webhook's signing secret, a Splunk HEC token), encrypted at rest.

The key is not in the database: it is ``STREAM_SECRET_KEY`` when set, otherwise derived from
the audit signing key (which lives in the environment or a key file). AES-GCM with the
stream's id as associated data: a secret copied onto another stream's row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

NONCE_BYTES = 12
SECRET_PREFIX = "whsec_"


def secrets_key(signing: Ed25519PrivateKey, configured: str | None) -> bytes:
    """The 256-bit key of stream secrets: from ``STREAM_SECRET_KEY`` if set, otherwise derived
    from the signing key."""
    if configured:
        material = configured.encode()
    else:
        material = signing.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return hashlib.sha256(b"insights-audit stream secrets\0" + material).digest()


def new_webhook_secret() -> str:
    """``whsec_`` and 32 random bytes, base64url."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return SECRET_PREFIX + raw


def seal(key: bytes, stream_id: uuid.UUID, secret: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, secret.encode(), stream_id.bytes)


def unseal(key: bytes, stream_id: uuid.UUID, sealed: bytes) -> str:
    nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    return AESGCM(key).decrypt(nonce, ciphertext, stream_id.bytes).decode()

"""gunicorn's own error responses (a bad request line, a URI or headers too large, a crash
before the app answers) in the service's JSON error envelope instead of gunicorn's HTML.

gunicorn writes them with ``gunicorn.util.write_error``; ``install`` replaces it, once, in the
master process before workers fork (``gunicorn.conf.py``).
"""

from __future__ import annotations

import json
import socket
from http import HTTPStatus

from gunicorn import util

# What the client may learn: gunicorn's detail (it quotes the offending line) stays in its log.
MESSAGES = {
    400: "Bad request - the request line or headers could not be parsed",
    414: "Request line too long",
    431: "Request header fields too large",
    501: "Transfer coding not supported",
}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``write_error`` with the JSON envelope as the body."""
    try:
        phrase = HTTPStatus(status_int).phrase
    except ValueError:
        phrase = reason
    message = MESSAGES.get(status_int, "Internal server error" if status_int >= 500 else phrase)
    body = json.dumps({"message": message, "code": status_int, "status": phrase}).encode()
    head = (
        f"HTTP/1.1 {status_int} {phrase}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    util.write_error = write_json_error

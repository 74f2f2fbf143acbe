"""The service through a real gunicorn: slow clients, gunicorn's own errors."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import running_gunicorn


def trickle(url: str, stop: threading.Event) -> None:
    """Send a request's header lines one every half second, never finishing the request."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        n = 0
        while not stop.wait(0.5):
            n += 1
            try:
                connection.sendall(f"X-Slow-{n}: x\r\n".encode())
            except OSError:
                return


def test_slow_clients_do_not_stop_a_probe(database_url: str) -> None:
    with running_gunicorn(database_url, WEB_CONCURRENCY="2") as url:
        stop = threading.Event()
        # Twice as many slow clients as workers: each sync worker would be held by one.
        clients = [threading.Thread(target=trickle, args=(url, stop)) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(1.5)  # every slow client has been accepted and is trickling
        try:
            for _ in range(3):
                started = time.monotonic()
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                    assert response.status == 200
                assert time.monotonic() - started < 1.0
        finally:
            stop.set()
            for client in clients:
                client.join()


def raw_exchange(url: str, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``request`` as it is; the status line, headers and body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


@pytest.fixture(scope="module")
def gunicorn_url(database_url: str) -> Iterator[str]:
    with running_gunicorn(database_url) as url:
        yield url


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ],
)
def test_gunicorns_own_errors_use_the_json_envelope(
    gunicorn_url: str, request_bytes: bytes, code: int
) -> None:
    status, headers, body = raw_exchange(gunicorn_url, request_bytes)
    assert status.split(" ")[1] == str(code)
    assert headers["Content-Type"] == "application/json"
    envelope = json.loads(body)
    assert envelope["code"] == code and set(envelope) == {"message", "code", "status"}
    assert "<html" not in body.decode()


def test_options_answers_allow_without_a_body(gunicorn_url: str) -> None:
    status, headers, body = raw_exchange(
        gunicorn_url, b"OPTIONS /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    assert status.startswith("HTTP/1.1 204")
    assert set(headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert body == b"" and "Content-Type" not in headers

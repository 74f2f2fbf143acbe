"""The documents of one ``mongoexport`` file, read as a stream in constant memory.

A file holds JSON lines (one document per line, ``mongoexport``'s default) or one JSON array
(``--jsonArray``), either of them gzip-compressed or not, recognised by their first bytes. Values
are MongoDB Extended JSON v2, canonical or relaxed (``$oid``, ``$date``, ``$numberLong``,
``$binary``, ``$uuid``...); ``bson.json_util`` (pymongo's own) decodes them. Two shapes make up
most of a view log, ``{"$oid": ...}`` and ``{"$date": "<ISO text>"}``, and are decoded here
first: through ``json_util`` they cost 13 µs a document, four times the rest of the import.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import ijson
import orjson
from bson import ObjectId
from bson.binary import UuidRepresentation
from bson.errors import InvalidId
from bson.json_util import JSONOptions, object_hook

# Decoded values keep their BSON types (``Binary`` for UUIDs of either subtype: the import
# decides how a subtype 3 UUID's bytes are ordered), times are timezone-aware.
EXTENDED_JSON = JSONOptions(tz_aware=True, uuid_representation=UuidRepresentation.UNSPECIFIED)
# A BSON document is at most 16 MiB; its JSON is a little longer.
LINE_LIMIT = 32 * 1024 * 1024
READ_BUFFER = 1024 * 1024
STANDARD_INPUT = "-"


class DocumentError(ValueError):
    """A document the import cannot take, with the reason a person reads in the rejects."""


@dataclass(frozen=True)
class Document:
    """One document of a file: its position (line from 1, or array index from 0), what was
    read (a line's bytes, or an array element), and the decoded value or why there is none."""

    position: int
    # A line's bytes, or an array element as compact JSON.
    source: bytes
    value: dict[str, Any] | None
    error: str | None = None

    @property
    def text(self) -> str:
        """The document as read, for the rejects file."""
        return self.source.decode(errors="replace").rstrip("\r\n")


def _wrapper(value: dict[str, Any]) -> Any:
    """An Extended JSON wrapper (``{"$oid": ...}``, ...) as its value; its members are decoded."""
    if len(value) == 1:
        if "$oid" in value:
            try:
                return ObjectId(value["$oid"])
            except (InvalidId, TypeError) as error:
                raise DocumentError(f"not an ObjectId: {value['$oid']!r}") from error
        moment = value.get("$date")
        if isinstance(moment, str):
            try:
                parsed = datetime.fromisoformat(moment)
            except ValueError:
                parsed = None  # other ISO forms ("+0100"): json_util knows them
            if parsed is not None and parsed.tzinfo is not None:
                return parsed
    try:
        return object_hook(value, EXTENDED_JSON)
    except (ValueError, TypeError, KeyError, OverflowError, InvalidId) as error:
        raise DocumentError(f"not valid Extended JSON: {_brief(value)}") from error


def decode(value: Any) -> Any:
    """A parsed JSON value with its Extended JSON wrappers decoded, innermost first (objects
    and arrays are changed in place)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list):
                value[key] = decode(item)
        for key in value:
            if key[:1] == "$":
                return _wrapper(value)
        return value
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                value[index] = decode(item)
    return value


def _brief(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Hashing(io.RawIOBase):
    """The file's bytes as given (compressed, if they are), counted and hashed as they are read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self.sha256.update(data)
        self.size += count
        return count


class ExportFile:
    """One export file (``-``: standard input) being read once, start to end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = "standard input" if path == STANDARD_INPUT else path
        raw: IO[bytes] = sys.stdin.buffer if path == STANDARD_INPUT else open(path, "rb")  # noqa: SIM115
        self._raw = raw
        self._hashing = _Hashing(raw)
        buffered = io.BufferedReader(self._hashing, READ_BUFFER)
        self.compressed = buffered.peek(2)[:2] == b"\x1f\x8b"
        stream: IO[bytes] = buffered
        if self.compressed:
            stream = io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"), READ_BUFFER)  # type: ignore[arg-type]
        self._stream = stream
        start = stream.peek(64).lstrip(b"\xef\xbb\xbf \t\r\n")  # type: ignore[attr-defined]
        self.layout = "array" if start[:1] == b"[" else "lines"

    @property
    def sha256(self) -> str:
        return self._hashing.sha256.hexdigest()

    @property
    def size(self) -> int:
        return self._hashing.size

    @property
    def position_name(self) -> str:
        """What a document's position counts: lines from 1, or array elements from 0."""
        return "index" if self.layout == "array" else "line"

    def documents(self) -> Iterator[Document]:
        """Every document of the file, in order; the rest of the file is hashed at the end."""
        try:
            yield from self._array() if self.layout == "array" else self._lines()
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise DocumentError(f"{self.name} cannot be read to the end: {error}") from error
        while self._hashing.read(READ_BUFFER):
            pass

    def close(self) -> None:
        if self.path != STANDARD_INPUT:
            self._raw.close()

    def _lines(self) -> Iterator[Document]:
        number = 0
        while line := self._stream.readline(LINE_LIMIT):
            number += 1
            if len(line) == LINE_LIMIT and not line.endswith(b"\n"):
                while (rest := self._stream.readline(READ_BUFFER)) and not rest.endswith(b"\n"):
                    pass
                reason = f"longer than {LINE_LIMIT // (1024 * 1024)} MiB"
                yield Document(number, line[:200] + "…".encode(), None, reason)
                continue
            if not line.strip():
                continue
            yield _from_text(number, line)

    def _array(self) -> Iterator[Document]:
        index = -1
        parsed = ijson.items(self._stream, "item", use_float=True)
        while True:
            index += 1
            try:
                value = next(parsed)
            except StopIteration:
                return
            except ijson.JSONError as error:
                # A broken array cannot be read past the break: the rest is one reject.
                yield Document(
                    index, b"", None, f"the array is not valid JSON from here on: {error}"
                )
                return
            yield _from_value(index, orjson.dumps(value, default=str), value)


def _from_text(position: int, line: bytes) -> Document:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return Document(position, line, None, f"not valid JSON: {error}")
    return _from_value(position, line, value)


def _from_value(position: int, source: bytes, value: Any) -> Document:
    try:
        decoded = decode(value) if isinstance(value, dict) else None
    except DocumentError as error:
        return Document(position, source, None, str(error))
    except RecursionError:
        return Document(position, source, None, "nested too deeply")
    if not isinstance(decoded, dict):
        return Document(position, source, None, "not a JSON object")
    return Document(position, source, decoded)

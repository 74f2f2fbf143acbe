"""The trail as a file: NDJSON or CSV, streamed from a server-side cursor in one snapshot.

The rows come from ``queries.export_query`` through a server-side cursor, a batch at a time,
so memory stays flat whatever the size; the unit of work is a snapshot transaction
(``UnitOfWork(snapshot=True)``), so the file holds exactly the entries committed before it
began. Bytes leave in chunks of about ``CHUNK_BYTES``; an error while streaming propagates,
and the server aborts the transfer instead of ending the body cleanly.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Row

from insights_audit.trail.queries import TrailFilter, export_query

FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
CSV_HEADER = (
    "id,type,action,targetId,userId,userEmail,recordedBy,createdAt,requestId,ip,userAgent,details"
)
# Spreadsheets run a cell that starts with these as a formula: such cells get a leading '.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH_ROWS = 5_000
CHUNK_BYTES = 256 * 1024


def export_filename(moment: datetime, fmt: str) -> str:
    return f"audit-logs-{moment.strftime('%Y%m%dT%H%M%SZ')}.{fmt}"


def _ndjson_line(row: Row[Any]) -> bytes:
    entry = {
        "id": row.id,
        "type": row.type,
        "action": row.action,
        "targetId": row.target_id,
        "userId": row.user_id,
        "userEmail": row.user_email,
        "recordedBy": row.recorded_by,
        "details": orjson.Fragment(row.details),
        "createdAt": row.created_at,
        "requestId": row.request_id,
        "ip": row.ip,
        "userAgent": row.user_agent,
    }
    return orjson.dumps(entry) + b"\n"


def _safe_cell(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _csv_rows(rows: Iterable[Row[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        details = orjson.dumps(orjson.loads(row.details)).decode()
        writer.writerow(
            [
                _safe_cell(value)
                for value in (
                    row.id,
                    row.type,
                    row.action,
                    row.target_id,
                    row.user_id,
                    row.user_email,
                    row.recorded_by,
                    row.created_at,
                    row.request_id,
                    row.ip,
                    row.user_agent,
                    details,
                )
            ]
        )
    return buffer.getvalue().encode()


def _batches(connection: Connection, org: str, wanted: TrailFilter) -> Iterator[list[Row[Any]]]:
    result = connection.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
        export_query(org, wanted)
    )
    for batch in result.partitions():
        yield list(batch)


def export_bytes(
    connection: Connection,
    org: str,
    wanted: TrailFilter,
    fmt: str,
    counted: Callable[[int], None] = lambda _: None,
) -> Iterator[bytes]:
    """The export file of ``org``'s entries that ``wanted`` keeps, in chunks; ``counted``
    hears how many entries each chunk added."""
    pending: list[bytes] = [CSV_HEADER.encode() + b"\r\n"] if fmt == "csv" else []
    size = sum(map(len, pending))
    for batch in _batches(connection, org, wanted):
        part = _csv_rows(batch) if fmt == "csv" else b"".join(map(_ndjson_line, batch))
        pending.append(part)
        size += len(part)
        counted(len(batch))
        if size >= CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` as one gzip stream, each compressed part sent as it is ready."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        compressed = compressor.compress(chunk)
        if compressed:
            yield compressed
    yield compressor.flush()

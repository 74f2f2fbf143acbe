"""The trail as a file: NDJSON or CSV, streamed from a server-side cursor in one snapshot.

PostgreSQL writes each line (``queries.export_query``); the lines come through a server-side
cursor a batch at a time, so memory stays flat whatever the size. The unit of work is an
unbounded snapshot transaction (``UnitOfWork(snapshot=True, unbounded=True)``), so the file
holds exactly the entries committed before it began. Bytes leave in chunks of about
``CHUNK_BYTES``; an error while streaming propagates, and the server aborts the transfer
instead of ending the body cleanly.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection

from insights_audit.trail.queries import CSV_HEADER, TrailFilter, export_query

FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
LINE_ENDS = {"ndjson": "\n", "csv": "\r\n"}
BATCH_ROWS = 5_000
CHUNK_BYTES = 256 * 1024


def export_filename(moment: datetime, fmt: str) -> str:
    return f"audit-logs-{moment.strftime('%Y%m%dT%H%M%SZ')}.{fmt}"


def export_bytes(
    connection: Connection,
    org: str,
    wanted: TrailFilter,
    fmt: str,
    counted: Callable[[int], None] = lambda _: None,
) -> Iterator[bytes]:
    """The export file of ``org``'s entries that ``wanted`` keeps, in chunks; ``counted``
    hears how many entries each chunk added. PostgreSQL writes every line; here they are
    only joined."""
    end = LINE_ENDS[fmt]
    pending: list[str] = [CSV_HEADER + end] if fmt == "csv" else []
    size = sum(map(len, pending))
    lines = connection.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
        export_query(org, wanted, fmt)
    )
    batch: Sequence[str]
    for batch in lines.scalars().partitions():
        part = end.join(batch) + end
        pending.append(part)
        size += len(part)
        counted(len(batch))
        if size >= CHUNK_BYTES:
            yield "".join(pending).encode()
            pending, size = [], 0
    if pending:
        yield "".join(pending).encode()


def gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` as one gzip stream, each compressed part sent as it is ready."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        compressed = compressor.compress(chunk)
        if compressed:
            yield compressed
    yield compressor.flush()

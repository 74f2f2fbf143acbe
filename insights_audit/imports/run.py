"""One import: files read, documents mapped and loaded, the import recorded, sealed and counted.

Documents are read and mapped on the calling thread while the previous batch is loaded on a
second one, so that reading and PostgreSQL work side by side; at most two batches are held
at a time, whatever the size of the files. Every rejected document is written to the
rejects file as soon as it is known, with its file, position and reason.

At the end, unless it is a dry run, in one transaction: the import's own entry (type
``import``: the files, their SHA-256 and counts; written once for the same files) and the
org's counters and rollups rebuilt from the trail; then the org's new entries are sealed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, func, select

from insights_audit.audit import aggregates
from insights_audit.audit.entries import (
    ENTRY_INSERT,
    IMPORT_TYPE,
    RequestMeta,
    entry_params,
    service_actor,
)
from insights_audit.db.unit_of_work import batch_transaction, transaction
from insights_audit.imports.documents import Document, DocumentError, ExportFile
from insights_audit.imports.loading import BatchResult, ensure_months, load_batch
from insights_audit.imports.mapping import FieldMap, Rejected, Row, Rules, to_row
from insights_audit.integrity import sealing
from insights_audit.models import AuditEntry, RetentionRecord

BATCH_ROWS = 20_000
# Batches loaded side by side: PostgreSQL's work per entry (seven indexes, one of them the
# search's trigrams) is twice the reading thread's.
LOADERS = 2
# Clocks of the old store and of PostgreSQL may disagree by this much: later is the future.
IMPORT_CLOCK_SKEW = timedelta(minutes=5)
# The command's exit status when it finished but rejected documents (listed in the rejects).
IMPORT_HAD_REJECTS = 3
# The import's own entry: its target id is derived from the org and the files' SHA-256, so the
# same files imported again find the entry written the first time.
RUN_NAMESPACE = uuid.UUID("6b1d5a6e-3f7c-4b8e-9a57-2f1e0c9d4a31")
IMPORT_ACTION = "import"
USER_AGENT = "insights-audit import"


class ImportRefused(Exception):
    """The import cannot go on: why, in words for the operator."""


@dataclass
class FileReport:
    """One file's part of the import."""

    kind: str
    name: str
    position_name: str = "line"
    sha256: str = ""
    size: int = 0
    documents: int = 0
    imported: int = 0
    skipped: int = 0
    rejected: int = 0

    def record(self) -> dict[str, Any]:
        """The file as the import's entry states it."""
        return {
            "kind": self.kind,
            "name": self.name,
            "sha256": self.sha256,
            "bytes": self.size,
            "documents": self.documents,
            "entries": self.documents - self.rejected,
            "rejected": self.rejected,
        }


@dataclass
class ImportReport:
    files: list[FileReport]
    dry_run: bool
    load_seconds: float = 0.0
    run_id: uuid.UUID | None = None
    recorded: bool = False
    sealed: int = 0
    seal_seconds: float = 0.0
    rebuild_seconds: float | None = None
    rejects_path: Path | None = None

    def total(self, name: str) -> int:
        return sum(getattr(report, name) for report in self.files)


@dataclass(frozen=True)
class ImportPlan:
    org: str
    # (kind, path) in the order they are read: views first, then entries.
    files: Sequence[tuple[str, str]]
    overrides: dict[str, str]
    rules: Rules
    rejects_path: Path
    dry_run: bool = False


@dataclass
class _Batch:
    report: FileReport
    rows: list[Row] = field(default_factory=list)
    seconds: list[int] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)


class _Rejects:
    """The rejects file, created at the first reject."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def add(self, report: FileReport, document: Document, reason: str) -> None:
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8")
        report.rejected += 1
        line = {
            "file": report.name,
            report.position_name: document.position,
            "reason": reason,
            "document": document.text,
        }
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> Path | None:
        if self._file is None:
            return None
        self._file.close()
        return self.path


def _refuse_what_cannot_finish(bind: Engine, org: str) -> None:
    """Refuse, before reading anything, an import whose counters could not be rebuilt."""
    with transaction(org, bind) as connection:
        if not aggregates.may_rebuild(connection):
            raise ImportRefused(
                "An import rebuilds the org's counters, which only the tables' owner may do:"
                " run it with DATABASE_URL set to the role that runs the migrations."
            )
        removed = connection.scalar(
            select(func.count()).where(RetentionRecord.org == org).select_from(RetentionRecord)
        )
    if removed:
        raise ImportRefused(
            f"Retention has removed old months of {org}: its counters can no longer be rebuilt"
            " from the trail, which an import needs. Import into an org before retention"
            " removes any of its months."
        )


class _Loaders:
    """Batches loaded on ``LOADERS`` threads, each on a connection of its own, while the
    reading thread maps the next ones. Fewer than ``2 * LOADERS`` batches are held at a
    time: memory is bound by the batch size, not the file's.

    Month partitions are made by the reading thread, in a transaction of their own, before
    the first batch that needs them is handed over: making one locks the whole trail, which
    two loaders each holding a batch's locks could otherwise wait for from each other."""

    def __init__(self, bind: Engine, plan: ImportPlan, rejects: _Rejects) -> None:
        self._bind = bind
        self._plan = plan
        self._rejects = rejects
        self._pool = ThreadPoolExecutor(LOADERS, thread_name_prefix="import-load")
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._pending: deque[tuple[_Batch, Future[BatchResult]]] = deque()
        self._months: set[str] = set()

    def _load(self, batch: _Batch) -> BatchResult:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._bind.connect()
            self._connections.append(connection)
        plan = self._plan
        return load_batch(connection, plan.org, batch.rows, batch.seconds, plan.dry_run)

    def submit(self, batch: _Batch) -> None:
        if not batch.rows:
            return
        months = {row.created_at[:7] for row in batch.rows}
        if not self._plan.dry_run and not months <= self._months:
            with transaction(None, self._bind) as connection:
                ensure_months(connection, batch.rows)
            self._months |= months
        self._pending.append((batch, self._pool.submit(self._load, batch)))
        self.settle(2 * LOADERS - 1)

    def settle(self, keep: int = 0) -> None:
        """Count the oldest batches' results until at most ``keep`` are pending."""
        while len(self._pending) > keep:
            batch, future = self._pending.popleft()
            _count(batch, future.result(), self._rejects)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for connection in self._connections:
            connection.close()


def run_import(
    bind: Engine,
    plan: ImportPlan,
    key: Ed25519PrivateKey | None,
    progress: Callable[[int], None] = lambda _: None,
) -> ImportReport:
    """Import ``plan``'s files into its org; see the module's docstring for the steps."""
    _refuse_what_cannot_finish(bind, plan.org)
    report = ImportReport([], plan.dry_run)
    rejects = _Rejects(plan.rejects_path)
    started = time.perf_counter()
    loaders = _Loaders(bind, plan, rejects)
    try:
        for kind, path in plan.files:
            report.files.append(_read_file(kind, path, plan, rejects, loaders.submit, progress))
        loaders.settle()
    finally:
        loaders.close()
        report.rejects_path = rejects.close()
    report.load_seconds = time.perf_counter() - started
    if not plan.dry_run:
        _finish(bind, plan, key, report)
    return report


def _read_file(
    kind: str,
    path: str,
    plan: ImportPlan,
    rejects: _Rejects,
    submit: Callable[[_Batch], None],
    progress: Callable[[int], None],
) -> FileReport:
    export = ExportFile(path)
    file_report = FileReport(kind, export.name, export.position_name)
    fields = FieldMap(kind, plan.overrides)
    batch = _Batch(file_report)
    read = 0
    try:
        for document in export.documents():
            file_report.documents += 1
            if document.value is None:
                rejects.add(file_report, document, document.error or "unreadable")
                continue
            try:
                row = to_row(kind, fields, document.value, plan.rules)
            except Rejected as rejected:
                rejects.add(file_report, document, str(rejected))
                continue
            batch.rows.append(row)
            batch.seconds.append(int(row.id[:8], 16))
            batch.documents.append(document)
            if len(batch.rows) >= BATCH_ROWS:
                submit(batch)
                batch = _Batch(file_report)
                progress(export.size - read)
                read = export.size
    except DocumentError as error:
        raise ImportRefused(str(error)) from error
    finally:
        export.close()
    submit(batch)
    progress(export.size - read)
    file_report.sha256, file_report.size = export.sha256, export.size
    return file_report


def _count(batch: _Batch, result: BatchResult, rejects: _Rejects) -> None:
    batch.report.imported += result.inserted
    batch.report.skipped += result.skipped
    for ordinal in result.taken_elsewhere:
        rejects.add(batch.report, batch.documents[ordinal], "_id: used by another organisation")


def run_id(org: str, files: Sequence[FileReport]) -> uuid.UUID:
    """The import's id: the same org and files (by content) give the same id."""
    return uuid.uuid5(RUN_NAMESPACE, ":".join([org, *sorted(f.sha256 for f in files)]))


def _record(connection: Connection, org: str, report: ImportReport) -> bool:
    """Write the import's entry unless the same files' import wrote it before."""
    assert report.run_id is not None
    held = connection.scalar(
        select(AuditEntry.id)
        .where(
            AuditEntry.org == org,
            AuditEntry.type == IMPORT_TYPE,
            AuditEntry.target_id == report.run_id,
        )
        .limit(1)
    )
    if held is not None:
        return False
    details = {
        "files": [file.record() for file in report.files],
        "documents": report.total("documents"),
        "entries": report.total("documents") - report.total("rejected"),
        "rejected": report.total("rejected"),
    }
    meta = RequestMeta(None, None, USER_AGENT)
    connection.execute(
        ENTRY_INSERT,
        entry_params(service_actor(org), IMPORT_TYPE, IMPORT_ACTION, report.run_id, details, meta),
    )
    return True


def _finish(
    bind: Engine, plan: ImportPlan, key: Ed25519PrivateKey | None, report: ImportReport
) -> None:
    report.run_id = run_id(plan.org, report.files)
    # The record and the rebuild commit together: a run stopped before them leaves no record,
    # so running it again rebuilds even when every entry is already there.
    with batch_transaction(bind, plan.org) as connection:
        report.recorded = _record(connection, plan.org, report)
        if report.recorded or report.total("imported"):
            started = time.perf_counter()
            aggregates.rebuild(connection, plan.org)
            report.rebuild_seconds = time.perf_counter() - started
    if key is not None:
        started = time.perf_counter()

        def on_org(org: str) -> Any:
            return transaction(org, bind)

        report.sealed = sealing.seal(on_org, plan.org, key).entries
        report.seal_seconds = time.perf_counter() - started


def import_summary(report: ImportReport) -> list[str]:
    """What an import did, in lines for the operator."""
    documents = report.total("documents")
    rate = documents / report.load_seconds if report.load_seconds else 0.0
    lines = [
        f"Read {documents:,} documents from {len(report.files)} file(s) in"
        f" {report.load_seconds:.1f} s ({rate:,.0f} documents/s)."
    ]
    for file in report.files:
        lines.append(
            f"  {file.name} ({file.kind}, {file.size:,} bytes, sha256 {file.sha256}):"
            f" {file.documents:,} read, {file.imported:,} imported, {file.skipped:,} skipped,"
            f" {file.rejected:,} rejected"
        )
    verb = "would import" if report.dry_run else "imported"
    line = (
        f"{'Dry run: ' if report.dry_run else ''}{verb} {report.total('imported'):,},"
        f" skipped {report.total('skipped'):,} already present,"
        f" rejected {report.total('rejected'):,}"
    )
    if report.rejects_path is not None:
        line += f" (listed in {report.rejects_path})"
    lines.append(line + ".")
    if report.dry_run:
        lines.append("Nothing was written.")
        return lines
    lines.append(
        f"Import {report.run_id} recorded in the trail (type import)."
        if report.recorded
        else f"Import {report.run_id} of these files was recorded before."
    )
    if report.rebuild_seconds is not None:
        lines.append(f"Rebuilt the org's counters and rollups in {report.rebuild_seconds:.1f} s.")
    lines.append(f"Sealed {report.sealed:,} entries in {report.seal_seconds:.1f} s.")
    return lines

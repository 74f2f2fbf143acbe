"""Checkpoints exported as files, which prove what was there after the database is changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import Connection, select

from insights_audit.integrity.checkpoints import SUMMARY_COLUMNS, public_checkpoint
from insights_audit.models import AuditCheckpoint


def org_directory(root: Path, org: str) -> Path:
    return root / quote(org, safe="")


def export(connection: Connection, org: str, root: Path) -> int:
    """Write every checkpoint of ``org`` missing from ``root`` as ``<org>/<block>.json``."""
    directory = org_directory(root, org)
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for block in connection.execute(
        select(*SUMMARY_COLUMNS).where(AuditCheckpoint.org == org).order_by(AuditCheckpoint.block)
    ):
        path = directory / f"{block.block:012d}.json"
        if path.exists():
            continue
        path.write_text(json.dumps(public_checkpoint(block), indent=2, sort_keys=True) + "\n")
        written += 1
    return written


def read_exported(root: Path, org: str) -> list[dict[str, Any]]:
    directory = org_directory(root, org)
    if not directory.is_dir():
        return []
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def exported_orgs(root: Path) -> Iterator[str]:
    for directory in sorted(root.iterdir()) if root.is_dir() else ():
        if directory.is_dir():
            yield unquote(directory.name)

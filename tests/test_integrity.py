"""The hash chain, signed checkpoints, ``audit verify`` and ``GET {base}/integrity``."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Text, cast, func, literal, select, text, update

from insights_audit import create_app, worker
from insights_audit.audit import keys
from insights_audit.db import orgs
from insights_audit.db.engine import ENGINE_KEY, engine
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import embedded
from insights_audit.integrity import canonical, checkpoints, files, sealing, verification
from insights_audit.models import AuditCheckpoint
from tests.conftest import BASE, TEST_SIGNING_KEY, TokenFactory, bearer, new_id, run_sql
from tests.test_cli import cli

SEED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))

# --- known answers --------------------------------------------------------------------------

VECTOR_ROW = (
    "65f1a2b3c4d5e6f708192a3b",
    "acme",
    "dashboard",
    "view",
    "123e4567-e89b-12d3-a456-426614174000",
    "u-1",
    "ana@example.com",
    '{"name": "Sales \u00e9t\u00e9", "b": [1, 2.5, null, true]}',
    "2026-11-27T06:30:00.123456Z",
    "req-1",
    "203.0.113.7",
    "curl/8.0",
    "12345",
    "admin-1",
    42,
)
# Form 1 (checkpoints sealed before who-wrote-it was recorded) has neither column.
VECTOR_ROW_V1 = (*VECTOR_ROW[:-2], None, None)
VECTOR_CANONICAL_V1 = (
    '{"action":"view","createdAt":"2026-11-27T06:30:00.123456Z",'
    '"details":{"b":[1,2.5,null,true],"name":"Sales \\u00e9t\\u00e9"},'
    '"id":"65f1a2b3c4d5e6f708192a3b","ip":"203.0.113.7","org":"acme","requestId":"req-1",'
    '"targetId":"123e4567-e89b-12d3-a456-426614174000","txid":"12345","type":"dashboard",'
    '"userAgent":"curl/8.0","userEmail":"ana@example.com","userId":"u-1"}'
)
VECTOR_CANONICAL = (
    '{"action":"view","createdAt":"2026-11-27T06:30:00.123456Z",'
    '"details":{"b":[1,2.5,null,true],"name":"Sales \\u00e9t\\u00e9"},'
    '"id":"65f1a2b3c4d5e6f708192a3b","ip":"203.0.113.7","org":"acme",'
    '"recordedBy":"admin-1","recordedByToken":42,"requestId":"req-1",'
    '"targetId":"123e4567-e89b-12d3-a456-426614174000","txid":"12345","type":"dashboard",'
    '"userAgent":"curl/8.0","userEmail":"ana@example.com","userId":"u-1"}'
)
# Checked with coreutils: printf '%s' "$VECTOR_CANONICAL" | sha256sum, and the chain step as
# (32 zero bytes || leaf) | sha256sum.
VECTOR_LEAF_V1 = "9ec0fb5ff20bdf665a33907326779a6c84e9388703d157543c120b9fa523f988"
VECTOR_LEAF = "196f9576ce15a4a5e84fbedd385822a02b32a63cdfd4013aeeb01309719b193e"
VECTOR_HEAD = "6fbfff5b94006d164fe5b8ed73e494828bdf028b907b25e4f8b9312a8250bdd2"
# Checked with `openssl pkeyutl -sign -rawin` and the same seed (bytes 0..31).
VECTOR_SIGNATURE = (
    "01c70e890018d3915da4847bc6931de6543d40adb92b52aae3ab60b13d29a09c"
    "15d5039634437d588be27b6b50d6ad60833eeb6ccf468b62d38d33ad4bf3f405"
)


def test_canonical_form_of_an_entry_is_fixed() -> None:
    assert canonical.canonical_entry(VECTOR_ROW).decode() == VECTOR_CANONICAL


def test_the_first_canonical_form_is_kept_for_checkpoints_sealed_with_it() -> None:
    assert canonical.canonical_entry(VECTOR_ROW_V1, 1).decode() == VECTOR_CANONICAL_V1
    assert canonical.leaf_hash(VECTOR_ROW_V1, 1).hex() == VECTOR_LEAF_V1
    # A value in a column form 1 does not cover was set after sealing.
    with pytest.raises(canonical.NotInForm):
        canonical.canonical_entry(VECTOR_ROW, 1)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 27, 6, 30, 0, 123456, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5))),
    ],
)
def test_postgresql_renders_the_columns_as_the_canonical_form_does(
    app: Flask, moment: datetime
) -> None:
    with app.app_context(), engine().connect() as connection:
        rendered = connection.execute(
            select(
                func.to_char(func.timezone("UTC", moment), canonical.CHAIN_TIME_FORMAT),
                cast(literal(uuid.UUID(VECTOR_ROW[4].upper())), Text),
            )
        ).one()
    assert tuple(rendered) == (canonical.chain_timestamp(moment), VECTOR_ROW[4])


def test_leaf_and_chain_hashes_are_fixed() -> None:
    leaf = canonical.leaf_hash(VECTOR_ROW)
    assert leaf.hex() == VECTOR_LEAF
    assert canonical.chain_hash(canonical.ZERO_HASH, leaf).hex() == VECTOR_HEAD


def test_checkpoints_are_signed_with_ed25519_over_canonical_json() -> None:
    payload = canonical.canonical_json({"org": "acme", "block": 1})
    assert payload == b'{"block":1,"org":"acme"}'
    assert SEED_KEY.sign(payload).hex() == VECTOR_SIGNATURE
    assert keys.key_id(SEED_KEY.public_key()) == "56475aa75463474c"


def test_every_column_of_the_table_is_in_the_canonical_form(app: Flask) -> None:
    columns = run_sql(
        app,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_entries'",
    )
    assert {name for (name,) in columns} == {column.key for column in canonical.CHAIN_COLUMNS}
    assert len(json.loads(VECTOR_CANONICAL)) == len(canonical.CHAIN_COLUMNS)


def test_a_missing_key_file_is_created_with_a_new_key_readable_by_its_owner(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "signing.key"
    first = keys.load_signing_key(None, str(path))
    again = keys.load_signing_key(None, str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.key_id(first.public_key()) == keys.key_id(again.public_key())
    with pytest.raises(RuntimeError, match="32 bytes"):
        keys.load_signing_key(base64.b64encode(b"short").decode(), str(path))


# --- helpers --------------------------------------------------------------------------------


def seal(app: Flask, org: str) -> sealing.Sealed:
    with app.app_context():
        return sealing.seal(transaction, org, keys.app_signing_key(app))


def verify(
    app: Flask, org: str, exported: list[dict[str, Any]] | None = None
) -> verification.Verdict:
    with app.app_context(), transaction(org) as connection:
        public_key = keys.app_signing_key(app).public_key()
        return verification.verify(connection, org, public_key, exported or [])


def chain_order(app: Flask, org: str) -> list[str]:
    rows = run_sql(app, "SELECT id FROM audit_entries WHERE org = :org ORDER BY txid, id", org=org)
    return [entry_id for (entry_id,) in rows]


def assert_fails(app: Flask, org: str, entry_id: str, reason: str) -> None:
    """Verification of ``org`` fails, naming ``entry_id``, for ``reason``."""
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", entry_id)
    assert reason in (verdict.reason or "")


def write_entries(client: FlaskClient, token: str, count: int) -> None:
    """Views and named dashboard events, with a request id, IP and user agent on each."""
    for index in range(count):
        headers = {**bearer(token), "X-Request-ID": f"req-{index}", "User-Agent": "agent/1.0"}
        if index % 2:
            response = client.post(f"{BASE}/dashboard/{new_id()}/view", headers=headers)
            assert response.status_code == 200, response.json
        else:
            body = {
                "type": "dashboard",
                "action": "update",
                "targetId": new_id(),
                "details": {"name": f"Board {index}", "n": index},
            }
            response = client.post(BASE, json=body, headers=headers)
            assert response.status_code == 201, response.json


@pytest.fixture
def sealed_org(app: Flask, client: FlaskClient, token: str, org: str) -> list[str]:
    """Six entries sealed in two checkpoints; returns their ids in chain order."""
    write_entries(client, token, 3)
    assert seal(app, org).checkpoints == 1
    write_entries(client, token, 3)
    assert seal(app, org).checkpoints == 1
    verdict = verify(app, org)
    assert (verdict.status, verdict.checked, verdict.first_bad_id) == ("verified", 6, None)
    return chain_order(app, org)


# --- sealing and verifying ------------------------------------------------------------------


def test_an_org_without_entries_has_no_data(app: Flask, org: str) -> None:
    verdict = verify(app, org)
    assert (verdict.status, verdict.checked, verdict.checkpoint) == ("no_data", 0, None)


def test_unsealed_entries_are_counted_but_not_called_verified(
    app: Flask, client: FlaskClient, token: str, org: str
) -> None:
    write_entries(client, token, 2)
    verdict = verify(app, org)
    assert (verdict.status, verdict.checked, verdict.unsealed) == ("no_data", 0, 2)
    seal(app, org)
    write_entries(client, token, 1)
    verdict = verify(app, org)
    assert (verdict.status, verdict.checked, verdict.unsealed) == ("verified", 2, 1)


def test_checkpoints_link_up_and_cover_the_chain(app: Flask, org: str, sealed_org: list) -> None:
    rows = run_sql(
        app,
        "SELECT block, seq_from, seq_to, first_id, last_id, previous_hash IS NULL,"
        " length(entry_ids), length(entry_hashes), version FROM audit_checkpoints"
        " WHERE org = :org ORDER BY block",
        org=org,
    )
    # Sealed now: in form 2, the one with who wrote each entry (the README's checkpoint format).
    assert rows == [
        (1, 1, 3, sealed_org[0], sealed_org[2], True, 36, 96, 2),
        (2, 4, 6, sealed_org[3], sealed_org[5], False, 36, 96, 2),
    ]
    assert seal(app, org) == sealing.Sealed(0, 0)  # nothing new: no empty checkpoint


def test_a_checkpoint_seals_at_most_10000_entries(app: Flask, org: str) -> None:
    """A backlog is sealed in checkpoints of 10,000 entries (the README's batch), the rest in
    the next."""
    run_sql(
        app,
        "INSERT INTO audit_entries (id, org, type, action, target_id, user_id)"
        " SELECT audit_object_id(now()), :org, 'kpi', 'update', gen_random_uuid(), 'bulk'"
        " FROM generate_series(1, 10001)",
        org=org,
    )
    seal(app, org)
    rows = run_sql(
        app,
        "SELECT seq_from, seq_to FROM audit_checkpoints WHERE org = :org ORDER BY block",
        org=org,
    )
    assert rows == [(1, 10_000), (10_001, 10_001)]
    assert verify(app, org).checked == 10_001
    # The last entry of the big checkpoint deleted: named, however many came before it.
    last = run_sql(
        app, "SELECT last_id FROM audit_checkpoints WHERE org = :org AND block = 1", org=org
    )[0][0]
    run_sql(app, "DELETE FROM audit_entries WHERE id = :id", maintenance=True, id=last)
    assert_fails(app, org, last, "sealed entry 10000 is missing")


def test_an_open_transaction_holds_sealing_back_until_it_commits(
    app: Flask, client: FlaskClient, token: str, org: str
) -> None:
    """An entry that commits after a later one is sealed after it, never skipped."""
    with app.app_context():
        slow = engine().connect()
        transaction_ = slow.begin()
        slow.execute(
            text(
                "INSERT INTO audit_entries (id, org, type, action, target_id, user_id)"
                " VALUES (audit_object_id(now()), :org, 'kpi', 'update', :target, 'slow')"
            ),
            {"org": org, "target": new_id()},
        )
        write_entries(client, token, 2)  # commit while the slow one is still open
        assert seal(app, org) == sealing.Sealed(0, 0)
        transaction_.commit()
        slow.close()
    assert seal(app, org) == sealing.Sealed(checkpoints=1, entries=3)
    verdict = verify(app, org)
    assert (verdict.status, verdict.checked, verdict.unsealed) == ("verified", 3, 0)


def test_sealing_while_views_arrive_seals_every_entry_exactly_once(
    app: Flask, token: str, org: str
) -> None:
    stop = threading.Event()
    statuses: list[int] = []

    def viewer() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(token))
            statuses.append(response.status_code)

    threads = [threading.Thread(target=viewer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(10):
        seal(app, org)
    stop.set()
    for thread in threads:
        thread.join()
    seal(app, org)
    verdict = verify(app, org)
    assert set(statuses) == {200}
    assert (verdict.status, verdict.checked, verdict.unsealed) == ("verified", len(statuses), 0)


def test_the_background_sealer_seals_every_org_one_process_at_a_time(
    app: Flask, client: FlaskClient, token: str, org: str
) -> None:
    write_entries(client, token, 2)
    with app.app_context(), engine().connect() as other_process:
        other_process.scalar(select(func.pg_advisory_lock(worker.SEALER_LOCK)))
        assert worker.seal_everything(app) == 0  # someone else is sealing: skip this round
        other_process.scalar(select(func.pg_advisory_unlock(worker.SEALER_LOCK)))
        other_process.commit()
    assert worker.seal_everything(app) >= 2
    assert (verify(app, org).status, verify(app, org).checked) == ("verified", 2)


def test_the_sealer_exports_new_checkpoints_when_told_where(
    app: Flask, client: FlaskClient, token: str, org: str, tmp_path: Path
) -> None:
    settings = dataclasses.replace(app.config["SETTINGS"], audit_export_dir=str(tmp_path))
    exporting = create_app(settings)
    write_entries(client, token, 2)
    worker.seal_everything(exporting)
    (exported,) = files.read_exported(tmp_path, org)
    assert (exported["org"], exported["seqTo"]) == (org, 2)
    verdict = verify(app, org, files.read_exported(tmp_path, org))
    assert (verdict.status, verdict.checked) == ("verified", 2)
    exporting.extensions[ENGINE_KEY].dispose()


def test_the_sealer_thread_seals_on_its_interval(
    app: Flask, client: FlaskClient, token: str, org: str
) -> None:
    settings = dataclasses.replace(app.config["SETTINGS"], audit_seal_interval_seconds=1)
    background = create_app(settings)
    jobs = worker.start(background)
    assert jobs is not None
    try:
        write_entries(client, token, 3)
        deadline = time.monotonic() + 20
        while verify(app, org).checked < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        # Wait for the pass under way: later tests seal too, and a pass's transactions would
        # hold their entries behind the horizon.
        jobs.stop()
        background.extensions[ENGINE_KEY].dispose()
    assert (verify(app, org).status, verify(app, org).checked) == ("verified", 3)
    no_thread = dataclasses.replace(settings, audit_seal_interval_seconds=0)
    without_sealing = worker.start(create_app(no_thread))
    assert without_sealing is not None and without_sealing.thread is None
    assert without_sealing.deliverer is not None  # push streams are delivered all the same
    without_sealing.stop()


# --- tampering, as the table owner ----------------------------------------------------------


def bump_last_hex(column: str) -> str:
    """The column's text with its last hex digit changed (still a valid value)."""
    return (
        f"overlay({column} placing translate(right({column}, 1), '0123456789abcdef',"
        f" '123456789abcdef0') from length({column}))"
    )


def flip_last_char(column: str) -> str:
    return f"overlay({column} placing chr(ascii(right({column}, 1)) # 1) from length({column}))"


TAMPERING = {
    "id": f"id = {bump_last_hex('id')}",
    "org": f"org = {flip_last_char('org')}",
    "type": "type = CASE type WHEN 'kpi' THEN 'mapping' ELSE 'kpi' END",
    "action": f"action = {flip_last_char('action')}",
    "target_id": f"target_id = ({bump_last_hex('target_id::text')})::uuid",
    "user_id": f"user_id = {flip_last_char('user_id')}",
    "user_email": f"user_email = coalesce({flip_last_char('user_email')}, 'x')",
    "details": "details = details || '{\"tampered\": 1}'",
    "created_at": "created_at = created_at + interval '1 microsecond'",
    "request_id": f"request_id = {flip_last_char('request_id')}",
    "ip": f"ip = coalesce({flip_last_char('ip')}, '10.0.0.1')",
    "user_agent": f"user_agent = {flip_last_char('user_agent')}",
    "txid": "txid = (txid::text::bigint + 1)::text::xid8",
    "recorded_by": f"recorded_by = coalesce({flip_last_char('recorded_by')}, 'x')",
    "recorded_by_token": "recorded_by_token = coalesce(recorded_by_token + 1, 1)",
}


def test_the_tampering_cases_cover_every_column() -> None:
    assert set(TAMPERING) == {column.key for column in canonical.CHAIN_COLUMNS}


@pytest.mark.parametrize("column", sorted(TAMPERING))
@pytest.mark.parametrize("position", [1, 4])
def test_changing_any_column_of_an_entry_names_that_entry(
    app: Flask, org: str, sealed_org: list[str], column: str, position: int
) -> None:
    target = sealed_org[position]
    changed = run_sql(
        app,
        f"UPDATE audit_entries SET {TAMPERING[column]} WHERE id = :id RETURNING id",
        maintenance=True,
        id=target,
    )
    assert len(changed) == 1
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", target), verdict
    assert verdict.checked == position
    assert verdict.reason


def test_deleting_a_middle_entry_names_it(app: Flask, org: str, sealed_org: list[str]) -> None:
    run_sql(app, "DELETE FROM audit_entries WHERE id = :id", maintenance=True, id=sealed_org[2])
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id, verdict.checked) == ("failed", sealed_org[2], 2)
    assert "sealed entry 3 is missing" in (verdict.reason or "")  # its number in the chain


SWAPPED: tuple[str, ...] = ("type", "action", "target_id", "user_id", "user_email", "details")
SWAPPED += ("created_at", "request_id", "ip", "user_agent")


def test_swapping_two_entries_names_the_first(app: Flask, org: str, sealed_org: list[str]) -> None:
    first, second = sealed_org[1], sealed_org[4]
    swapped = ", ".join(f"{column} = other.{column}" for column in SWAPPED)
    run_sql(
        app,
        f"UPDATE audit_entries SET {swapped} FROM audit_entries other"
        " WHERE (audit_entries.id, other.id) IN ((:first, :second), (:second, :first))",
        maintenance=True,
        first=first,
        second=second,
    )
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", first)


def test_a_forged_entry_in_sealed_history_is_named(
    app: Flask, org: str, sealed_org: list[str]
) -> None:
    forged = run_sql(
        app,
        "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, created_at, txid)"
        " SELECT audit_object_id(created_at), org, 'kpi', 'delete', target_id, 'mallory',"
        " created_at, txid FROM audit_entries WHERE id = :id RETURNING id",
        id=sealed_org[3],
    )[0][0]
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", forged)
    assert "not in the sealed chain" in (verdict.reason or "")


@pytest.mark.parametrize("stored", [bytes(32), b"\xff" * 32])
def test_a_rewritten_checkpoint_hash_is_caught_on_the_last_checkpoint_too(
    app: Flask, org: str, sealed_org: list[str], stored: bytes
) -> None:
    """No later checkpoint links to the last one's hash: its own recomputation must catch it."""
    run_sql(
        app,
        "UPDATE audit_checkpoints SET checkpoint_hash = :stored WHERE org = :org AND block = 2",
        org=org,
        stored=stored,
    )
    assert_fails(app, org, sealed_org[3], "checkpoint 2 is not signed by this key")


def test_rewriting_a_checkpoint_breaks_its_signature(
    app: Flask, org: str, sealed_org: list[str]
) -> None:
    run_sql(
        app,
        "UPDATE audit_checkpoints SET seq_to = seq_to + 1 WHERE org = :org AND block = 2",
        org=org,
    )
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", sealed_org[3])
    assert "not signed by this key" in (verdict.reason or "")


def test_a_checkpoint_of_another_key_is_refused(
    app: Flask, org: str, sealed_org: list[str]
) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with app.app_context(), transaction(org) as connection:
        verdict = verification.verify(connection, org, other)
    assert (verdict.status, verdict.first_bad_id) == ("failed", sealed_org[0])


def test_deleting_the_tail_with_its_checkpoint_is_caught_by_an_exported_copy(
    app: Flask, org: str, sealed_org: list[str], tmp_path: Path
) -> None:
    with app.app_context(), transaction(org) as connection:
        assert files.export(connection, org, tmp_path) == 2
    run_sql(
        app, "DELETE FROM audit_entries WHERE id = ANY(:ids)", maintenance=True, ids=sealed_org[3:]
    )
    run_sql(app, "DELETE FROM audit_checkpoints WHERE org = :org AND block = 2", org=org)
    # The database alone is consistent again: only the exported checkpoint shows the loss.
    assert verify(app, org).status == "verified"
    verdict = verify(app, org, files.read_exported(tmp_path, org))
    assert (verdict.status, verdict.first_bad_id, verdict.checked) == ("failed", sealed_org[3], 3)
    assert "missing from the database" in (verdict.reason or "")


def test_deleting_the_tail_alone_names_its_first_entry(
    app: Flask, org: str, sealed_org: list[str]
) -> None:
    run_sql(
        app, "DELETE FROM audit_entries WHERE id = ANY(:ids)", maintenance=True, ids=sealed_org[4:]
    )
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id, verdict.checked) == ("failed", sealed_org[4], 4)


# --- the CLI --------------------------------------------------------------------------------


def audit_cli(database_url: str, *args: str) -> Any:
    """``insights-audit audit ...`` signing with the test app's key (the environment is kept)."""
    return cli(database_url, "audit", *args, env={"AUDIT_SIGNING_KEY": TEST_SIGNING_KEY})


def test_cli_checkpoint_export_and_verify_exit_codes(
    app: Flask, client: FlaskClient, token: str, org: str, database_url: str, tmp_path: Path
) -> None:
    assert audit_cli(database_url, "verify", "--org", org).returncode == 2
    empty = audit_cli(database_url, "verify", "--org", org)
    assert empty.stdout.strip() == "no entries to verify"
    write_entries(client, token, 4)
    unsealed = audit_cli(database_url, "verify", "--org", org)
    assert (unsealed.returncode, unsealed.stdout.strip()) == (2, "no entries to verify")
    assert "4 entries are newer than the last checkpoint" in unsealed.stderr
    made = audit_cli(database_url, "checkpoint", "--org", org, "--out", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert f"{org}: sealed 4 entries in 1 checkpoints, exported 1" in made.stdout
    exported = json.loads(next((tmp_path / org).glob("*.json")).read_text())
    assert (exported["org"], exported["seqFrom"], exported["seqTo"]) == (org, 1, 4)
    ok = audit_cli(database_url, "verify", "--org", org, "--against", str(tmp_path))
    assert (ok.returncode, ok.stdout.strip()) == (0, "verified 4 entries")
    target = chain_order(app, org)[1]
    run_sql(
        app,
        "UPDATE audit_entries SET action = 'viewed' WHERE id = :id",
        maintenance=True,
        id=target,
    )
    bad = audit_cli(database_url, "verify", "--org", org)
    assert bad.returncode == 1
    assert target in bad.stdout and "a field changed" in bad.stdout


def test_exporting_again_writes_only_the_new_checkpoints_in_a_stable_form(
    app: Flask, client: FlaskClient, token: str, org: str, tmp_path: Path
) -> None:
    """Exported files are evidence: an export never rewrites one, each later export adds the
    checkpoints sealed since, and a file is the same bytes whoever writes it (sorted keys, two
    spaces), so copies can be compared and hashed. The folder may not exist yet."""
    root = tmp_path / "evidence" / "checkpoints"
    write_entries(client, token, 2)
    seal(app, org)
    with app.app_context(), transaction(org) as connection:
        assert files.export(connection, org, root) == 1
    (first,) = (root / org).glob("*.json")
    before = first.read_bytes()
    write_entries(client, token, 2)
    seal(app, org)
    with app.app_context(), transaction(org) as connection:
        assert files.export(connection, org, root) == 1
    paths = sorted((root / org).glob("*.json"))
    assert [path.name for path in paths] == ["000000000001.json", "000000000002.json"]
    assert first.read_bytes() == before
    for path in paths:
        text_ = path.read_text()
        assert text_ == json.dumps(json.loads(text_), indent=2, sort_keys=True) + "\n"
        assert list(json.loads(text_)) == sorted(json.loads(text_))
    # Copies of every checkpoint, the database untouched: they agree.
    assert verify(app, org, files.read_exported(root, org)).status == "verified"


def test_an_org_deleted_whole_is_caught_by_its_exported_checkpoints(
    server_url: str, tmp_path: Path
) -> None:
    """Every entry and checkpoint of an org deleted: the database no longer knows the org,
    but ``verify --against`` checks every org the exported folder holds."""
    name = f"insights_audit_gone_{uuid.uuid4().hex[:8]}"
    url = embedded.ensure_database(server_url, name)
    try:
        assert cli(url, "db", "upgrade").returncode == 0
        for seed, org in enumerate(("org-gone", "org-kept"), 1):
            seeded = cli(
                url,
                "demo",
                "seed",
                "--org",
                org,
                "--events",
                "20",
                "--days",
                "2",
                "--seed",
                str(seed),
            )
            assert seeded.returncode == 0, seeded.stderr
        (tmp_path / "not-an-org.txt").write_text("a stray file is not an org\n")
        made = audit_cli(url, "checkpoint", "--out", str(tmp_path))
        assert made.returncode == 0, made.stderr
        ok = audit_cli(url, "verify", "--against", str(tmp_path))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("SET insights_audit.maintenance = 'on'")
            for table in ("audit_entries", "audit_checkpoints"):
                connection.execute(f"DELETE FROM {table} WHERE org = 'org-gone'")
        alone = audit_cli(url, "verify")
        assert alone.returncode == 0, "the database alone cannot tell"
        caught = audit_cli(url, "verify", "--against", str(tmp_path))
        assert caught.returncode == 1
        assert caught.stdout.startswith("FAILED org-gone:")
    finally:
        embedded.drop_database(server_url, name)


# --- the endpoint ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role", ["Opsera Administrator", "Administrator", "Auditor", "Security Manager"]
)
@pytest.mark.parametrize("scope", ["api", "api-readonly"])
def test_integrity_is_open_to_auditing_roles_and_both_scopes(
    client: FlaskClient, make_token: TokenFactory, role: str, scope: str
) -> None:
    secret = make_token(roles=(role,), scopes=(scope,))
    response = client.get(f"{BASE}/integrity", headers=bearer(secret))
    assert response.status_code == 200, response.json
    assert response.json["data"] == {
        "status": "no_data",
        "checked": 0,
        "firstBadId": None,
        "reason": "no entries",
        "checkpoint": None,
        "unsealed": 0,
        "verifiedAt": None,
        "retention": None,
    }


@pytest.mark.parametrize("role", ["Power User", "Users"])
def test_integrity_is_forbidden_to_other_roles(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    response = client.get(f"{BASE}/integrity", headers=bearer(make_token(roles=(role,))))
    assert response.status_code == 403
    assert client.get(f"{BASE}/integrity").status_code == 401


def test_integrity_refuses_query_parameters(client: FlaskClient, make_token: TokenFactory) -> None:
    secret = make_token(roles=("Auditor",))
    response = client.get(f"{BASE}/integrity?org=someone-else", headers=bearer(secret))
    assert response.status_code == 400
    assert "org" in response.json["errors"]["query"]


def test_integrity_reports_the_callers_org_only(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, sealed_org: list[str]
) -> None:
    auditor = make_token(roles=("Auditor",), scopes=("api-readonly",))
    body = client.get(f"{BASE}/integrity", headers=bearer(auditor)).json
    assert body["message"] == "Successfully verified the integrity of the audit trail"
    data = body["data"]
    assert (data["status"], data["checked"], data["firstBadId"]) == ("verified", 6, None)
    checkpoint = data["checkpoint"]
    assert (checkpoint["org"], checkpoint["block"], checkpoint["seqTo"]) == (org, 2, 6)
    assert checkpoint["lastId"] == sealed_org[-1]
    assert checkpoint["keyId"] == keys.key_id(SEED_KEY.public_key())
    assert data["verifiedAt"] is not None
    stranger = make_token(token_org=f"other-{uuid.uuid4()}", roles=("Auditor",))
    assert client.get(f"{BASE}/integrity", headers=bearer(stranger)).json["data"]["checked"] == 0


def test_the_integrity_endpoint_verifies_what_was_sealed_since_its_last_answer(
    app: Flask,
    client: FlaskClient,
    token: str,
    make_token: TokenFactory,
    org: str,
    sealed_org: list[str],
) -> None:
    auditor = make_token(roles=("Auditor",), scopes=("api-readonly",))
    first = client.get(f"{BASE}/integrity", headers=bearer(auditor)).json["data"]
    assert (first["status"], first["checked"]) == ("verified", 6)
    again = client.get(f"{BASE}/integrity", headers=bearer(auditor)).json["data"]
    assert again == first  # nothing sealed since: the same answer, the same verifiedAt
    write_entries(client, token, 3)
    seal(app, org)
    newer = chain_order(app, org)[6:]
    run_sql(app, "DELETE FROM audit_entries WHERE id = :id", maintenance=True, id=newer[1])
    data = client.get(f"{BASE}/integrity", headers=bearer(auditor)).json["data"]
    assert (data["status"], data["firstBadId"], data["checked"]) == ("failed", newer[1], 7)
    assert data["verifiedAt"] == first["verifiedAt"]  # the verified head did not move


def test_entries_verified_before_are_rechecked_only_by_a_full_verification(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, sealed_org: list[str]
) -> None:
    auditor = make_token(roles=("Auditor",))
    assert client.get(f"{BASE}/integrity", headers=bearer(auditor)).json["data"]["checked"] == 6
    run_sql(app, "DELETE FROM audit_entries WHERE id = :id", maintenance=True, id=sealed_org[0])
    # The endpoint answers for the head it verified; `audit verify` re-reads every entry.
    data = client.get(f"{BASE}/integrity", headers=bearer(auditor)).json["data"]
    assert data["status"] == "verified"
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", sealed_org[0])


def test_an_altered_exported_checkpoint_is_refused(
    app: Flask, org: str, sealed_org: list[str], tmp_path: Path
) -> None:
    with app.app_context(), transaction(org) as connection:
        files.export(connection, org, tmp_path)
    exported = files.read_exported(tmp_path, org)
    exported[1]["seqTo"] = 5
    verdict = verify(app, org, exported)
    assert (verdict.status, verdict.first_bad_id) == ("failed", sealed_org[3])
    assert "exported checkpoint 2 is not signed" in (verdict.reason or "")


@pytest.mark.parametrize("signature", [5, None, "not base64!"])
def test_an_exported_checkpoint_with_a_malformed_signature_is_refused(
    app: Flask, org: str, sealed_org: list[str], tmp_path: Path, signature: Any
) -> None:
    with app.app_context(), transaction(org) as connection:
        files.export(connection, org, tmp_path)
    exported = files.read_exported(tmp_path, org)
    exported[0]["signature"] = signature
    verdict = verify(app, org, exported)
    assert (verdict.status, verdict.first_bad_id) == ("failed", sealed_org[0])
    assert "exported checkpoint 1 is not signed" in (verdict.reason or "")


def test_the_sealer_as_the_app_role_seals_the_orgs_with_tokens(
    app: Flask, app_role_url: str, client: FlaskClient, token: str, org: str
) -> None:
    write_entries(client, token, 3)
    as_app_role = create_app(dataclasses.replace(app.config["SETTINGS"], database_url=app_role_url))
    with as_app_role.app_context(), transaction() as connection:
        assert org in orgs.chained_orgs(connection)
    worker.seal_everything(as_app_role)
    verdict = verify(app, org)
    assert (verdict.status, verdict.checked, verdict.unsealed) == ("verified", 3, 0)
    as_app_role.extensions[ENGINE_KEY].dispose()


def test_workers_creating_the_key_file_at_once_all_get_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "race" / "signing.key"
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def load() -> None:
        barrier.wait()
        ids.append(keys.key_id(keys.load_signing_key(None, str(path)).public_key()))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [entry.name for entry in path.parent.iterdir()] == ["signing.key"]


# --- attacks that also rewrite the evidence -------------------------------------------------


def leaf_of(app: Flask, org: str, entry_id: str, version: int) -> bytes:
    with app.app_context(), transaction(org) as connection:
        row = connection.execute(
            select(*canonical.CHAIN_SELECT).where(text("id = :id")), {"id": entry_id}
        ).one()
    return canonical.leaf_hash(row, version)


def test_changing_an_entry_and_its_stored_hash_is_caught_by_the_signed_head(
    app: Flask, org: str, sealed_org: list[str]
) -> None:
    target = sealed_org[4]  # the second entry of checkpoint 2
    run_sql(
        app,
        "UPDATE audit_entries SET details = details || '{\"forged\": 1}' WHERE id = :id",
        maintenance=True,
        id=target,
    )
    forged_leaf = leaf_of(app, org, target, canonical.CHAIN_VERSION)
    # The stored leaf is rewritten too: only the signed head hash still tells.
    run_sql(
        app,
        "UPDATE audit_checkpoints SET entry_hashes = overlay(entry_hashes PLACING :leaf"
        " FROM 33 FOR 32) WHERE org = :org AND block = 2",
        leaf=forged_leaf,
        org=org,
    )
    assert_fails(app, org, sealed_org[3], "do not chain to checkpoint 2's head")


def resign(app: Flask, org: str, number: int, changes: dict[str, Any]) -> None:
    """Change a checkpoint and sign it again with the service's own key (a thief of the key,
    or the database owner with it): the signature is valid, the chain is not."""
    with app.app_context(), transaction(org) as connection:
        row = connection.execute(
            select(*checkpoints.SUMMARY_COLUMNS).where(
                AuditCheckpoint.org == org, AuditCheckpoint.block == number
            )
        ).one()
        values = {**row._asdict(), **changes}
        changed: Any = SimpleNamespace(**values)
        payload = canonical.canonical_json(checkpoints.checkpoint_payload(changed))
        digest = hashlib.sha256(payload).digest()
        values["checkpoint_hash"] = changes.get("checkpoint_hash", digest)
        values["signature"] = keys.app_signing_key(app).sign(payload)
        connection.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.org == org, AuditCheckpoint.block == number)
            .values(**{key: values[key] for key in (*changes, "checkpoint_hash", "signature")})
        )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"seq_from": 5}, "does not follow checkpoint 1"),
        ({"previous_hash": bytes(32)}, "does not follow checkpoint 1"),
        ({"block": 3}, "does not follow checkpoint 1"),
        ({"checkpoint_hash": bytes(32)}, "not signed by this key"),
    ],
)
def test_a_validly_signed_but_inconsistent_checkpoint_is_refused(
    app: Flask, org: str, sealed_org: list[str], changes: dict[str, Any], reason: str
) -> None:
    resign(app, org, 2, changes)
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", sealed_org[3])
    assert reason in (verdict.reason or "")


def test_history_rewritten_and_sealed_again_is_caught_by_the_exported_copies(
    app: Flask, org: str, sealed_org: list[str], tmp_path: Path
) -> None:
    with app.app_context(), transaction(org) as connection:
        assert files.export(connection, org, tmp_path) == 2
    exported = {path: path.read_bytes() for path in tmp_path.rglob("*.json")}
    # Rewrite an entry, drop the checkpoints and seal again with the same key.
    run_sql(
        app,
        "UPDATE audit_entries SET user_id = 'mallory' WHERE id = :id",
        maintenance=True,
        id=sealed_org[1],
    )
    run_sql(app, "DELETE FROM audit_checkpoints WHERE org = :org", org=org)
    assert seal(app, org).checkpoints == 1
    assert verify(app, org).status == "verified"  # the database agrees with itself
    # Exporting again adds nothing over the evidence already there: files are never rewritten.
    with app.app_context(), transaction(org) as connection:
        assert files.export(connection, org, tmp_path) == 0
    assert {path: path.read_bytes() for path in tmp_path.rglob("*.json")} == exported
    verdict = verify(app, org, files.read_exported(tmp_path, org))
    assert (verdict.status, verdict.first_bad_id) == ("failed", sealed_org[0])
    assert "differs from the exported copy" in (verdict.reason or "")


def test_two_sealers_at_once_seal_each_entry_once(
    app: Flask, client: FlaskClient, token: str, org: str
) -> None:
    write_entries(client, token, 40)
    outcomes: list[object] = []

    def sealer_run() -> None:
        try:
            outcomes.append(seal(app, org).checkpoints)
        except Exception as error:  # the failure this test looks for
            outcomes.append(error)

    threads = [threading.Thread(target=sealer_run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(outcome, int) for outcome in outcomes), outcomes
    verdict = verify(app, org)
    assert (verdict.status, verdict.checked, verdict.unsealed) == ("verified", 40, 0)

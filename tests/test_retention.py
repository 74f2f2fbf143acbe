"""Retention: whole months dropped, a signed record per org, and verification that still
holds afterwards, but for entries that vanish any other way."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update

from insights_audit import create_app
from insights_audit.audit import aggregates, keys
from insights_audit.db.engine import ENGINE_KEY
from insights_audit.db.unit_of_work import transaction
from insights_audit.integrity import retention, sealing, verification
from insights_audit.integrity.canonical import canonical_json
from insights_audit.models import RetentionRecord
from tests.conftest import BASE, TEST_SIGNING_KEY, TokenFactory, bearer, new_id, run_sql
from tests.test_cli import cli

# Far from every other test's data: month partitions are shared by every org.
HORIZON = datetime(2020, 4, 1, tzinfo=UTC)
MONTHS = ["2020-01-10", "2020-02-10", "2020-03-10", "2020-04-10", "2020-05-10"]


def backdate(app: Flask, org: str, board: str, *days: str, user: str = "viewer") -> None:
    """Views of ``board`` on ``days``, written in one transaction (so sealed together)."""
    run_sql(app, "SELECT audit_ensure_partitions('2020-01-01', '2020-06-01')")
    values = ", ".join(
        f"(audit_object_id(TIMESTAMPTZ '{day}T12:00:00Z' + interval '{n} second'), :org,"
        f" 'dashboard', 'view', CAST(:board AS uuid), :user, TIMESTAMPTZ '{day}T12:00:00Z'"
        f" + interval '{n} second')"
        for n, day in enumerate(days)
    )
    run_sql(
        app,
        "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, created_at)"
        f" VALUES {values}",
        org=org,
        board=board,
        user=user,
    )


def seal_and_count(app: Flask, org: str) -> None:
    with app.app_context(), transaction(org) as connection:
        aggregates.rebuild(connection, org)
    with app.app_context():
        sealing.seal(transaction, org, keys.app_signing_key(app))


def verify(app: Flask, org: str) -> verification.Verdict:
    with app.app_context(), transaction(org) as connection:
        return verification.verify(connection, org, keys.app_signing_key(app).public_key())


def assert_fails(app: Flask, org: str, reason: str) -> None:
    verdict = verify(app, org)
    assert verdict.status == "failed" and reason in (verdict.reason or ""), verdict


def apply(app: Flask, horizon: datetime = HORIZON, dry_run: bool = False) -> list[str]:
    with app.app_context():
        return retention.apply(transaction, keys.app_signing_key(app), horizon, dry_run=dry_run)


@pytest.fixture
def old_trail(app: Flask, org: str) -> str:
    """Views over five months; a batch spanning February and April is sealed in one
    checkpoint, so that checkpoint straddles the retention cut."""
    board = new_id()
    backdate(app, org, board, MONTHS[0], MONTHS[0])
    backdate(app, org, board, MONTHS[1], MONTHS[3], MONTHS[2])  # one transaction, one block
    backdate(app, org, board, MONTHS[4])
    seal_and_count(app, org)
    return board


def test_retention_drops_whole_old_months_and_verification_still_holds(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, old_trail: str
) -> None:
    viewer = make_token(user="viewer", roles=("Users",))
    before = {
        path: client.get(f"{BASE}{path}", headers=bearer(viewer)).json["data"]
        for path in (f"/dashboard/{old_trail}/stats?days=7", "/dashboard/recently-viewed")
    }
    assert verify(app, org).checked == 6
    lines = apply(app)
    assert any(line.startswith("audit_entries_p202001: removed") for line in lines)
    assert run_sql(app, "SELECT to_regclass('audit_entries_p202003')") == [(None,)]
    assert run_sql(app, "SELECT to_regclass('audit_entries_p202004')") != [(None,)]
    verdict = verify(app, org)
    # Two of January, one each of February and March removed; April and May still checked.
    assert (verdict.status, verdict.checked, verdict.removed) == ("verified", 2, 4)
    assert verdict.retention is not None
    assert verdict.retention["removedBefore"] == "2020-04-01T00:00:00.000000Z"
    after = {
        path: client.get(f"{BASE}{path}", headers=bearer(viewer)).json["data"] for path in before
    }
    for answers in (before, after):  # the request time differs, nothing else may
        answers[f"/dashboard/{old_trail}/stats?days=7"]["period"].pop("to")
    assert after == before  # counters and rollups are kept
    assert after[f"/dashboard/{old_trail}/stats?days=7"]["totalViews"] == 6
    auditor = make_token(roles=("Auditor",))
    integrity = client.get(f"{BASE}/integrity", headers=bearer(auditor)).json["data"]
    assert integrity["status"] == "verified"
    assert integrity["retention"]["org"] == org and integrity["retention"]["entries"] >= 1
    # Answered again from the verified head (nothing sealed since): the record is still shown.
    again = client.get(f"{BASE}/integrity", headers=bearer(auditor)).json["data"]
    assert again["retention"] == integrity["retention"]


def test_the_cli_says_what_retention_removed(
    app: Flask, database_url: str, org: str, old_trail: str
) -> None:
    apply(app)
    env = {"AUDIT_SIGNING_KEY": TEST_SIGNING_KEY}
    result = cli(database_url, "audit", "verify", "--org", org, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified 2 entries" in result.stdout
    assert "4 earlier sealed entries were removed by retention" in result.stdout
    assert "created before 2020-04-01" in result.stdout


def test_a_dry_run_removes_nothing(app: Flask, org: str, old_trail: str) -> None:
    lines = apply(app, dry_run=True)
    assert any("would remove" in line for line in lines)
    assert run_sql(app, "SELECT to_regclass('audit_entries_p202001') IS NOT NULL") == [(True,)]
    assert verify(app, org).checked == 6


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("DELETE FROM audit_retention_records WHERE org = :org", "missing"),
        ("UPDATE audit_retention_records SET entries = entries + 1 WHERE org = :org", "signed"),
        (
            "UPDATE audit_retention_records SET removed_before = '2020-06-01' WHERE org = :org",
            "signed",
        ),
    ],
)
def test_a_removed_or_edited_record_fails_verification(
    app: Flask, org: str, old_trail: str, tamper: str, reason: str
) -> None:
    apply(app)
    run_sql(app, tamper, org=org)
    verdict = verify(app, org)
    assert verdict.status == "failed" and reason in (verdict.reason or "")


def test_a_rewritten_record_hash_fails_verification(app: Flask, org: str, old_trail: str) -> None:
    apply(app)
    run_sql(
        app,
        "UPDATE audit_retention_records SET record_hash = :zero WHERE org = :org AND number = 3",
        org=org,
        zero=bytes(32),
    )
    assert_fails(app, org, "retention record 3 is not signed by this key")


def test_an_entry_of_the_cut_second_is_not_taken_for_one_retention_removed(
    app: Flask, org: str, old_trail: str
) -> None:
    """Retention removes what was created before the cut; an entry created in the cut's own
    second stays, and deleting it by hand is caught."""
    run_sql(
        app,
        "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, created_at)"
        " VALUES (audit_object_id(TIMESTAMPTZ '2020-04-01T00:00:00.5Z'), :org, 'dashboard',"
        " 'view', :board, 'viewer', TIMESTAMPTZ '2020-04-01T00:00:00.5Z') RETURNING id",
        org=org,
        board=old_trail,
    )
    seal_and_count(app, org)
    apply(app)
    kept = run_sql(
        app,
        "SELECT id FROM audit_entries WHERE org = :org AND created_at < '2020-04-01T00:00:01Z'"
        " AND created_at >= '2020-04-01'",
        org=org,
    )[0][0]
    run_sql(app, "DELETE FROM audit_entries WHERE id = :id", maintenance=True, id=kept)
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", kept)
    assert "missing" in (verdict.reason or "")


def test_a_record_signed_again_after_another_one_fails_verification(
    app: Flask, org: str, old_trail: str
) -> None:
    """Record 2 made to follow something else and signed again with the service's key (a
    thief of the key): its signature holds, its link to record 1 does not."""
    apply(app)
    where = (RetentionRecord.org == org, RetentionRecord.number == 2)
    with app.app_context(), transaction(org) as connection:
        row = connection.execute(select(*RetentionRecord.__table__.columns).where(*where)).one()
        changed = SimpleNamespace(**{**row._asdict(), "previous_hash": bytes(32)})
        signed = canonical_json(retention.record_payload(changed))
        connection.execute(
            update(RetentionRecord)
            .where(*where)
            .values(
                previous_hash=bytes(32),
                record_hash=hashlib.sha256(signed).digest(),
                signature=keys.app_signing_key(app).sign(signed),
            )
        )
    assert_fails(app, org, "retention record 2 does not follow the one before")


def test_a_retention_record_taken_out_of_the_middle_fails_verification(
    app: Flask, org: str, old_trail: str
) -> None:
    """A signed record per dropped month; the middle one deleted: the next no longer follows."""
    apply(app)
    numbers = run_sql(app, "SELECT number FROM audit_retention_records WHERE org = :org", org=org)
    assert sorted(numbers) == [(1,), (2,), (3,)]
    run_sql(app, "DELETE FROM audit_retention_records WHERE org = :org AND number = 2", org=org)
    assert_fails(app, org, "retention record 3 does not follow the one before")


def test_an_entry_forged_before_entries_retention_removed_is_named(app: Flask, org: str) -> None:
    """One checkpoint holds an April entry and, in a later transaction, February and March
    entries; retention removes the latter. An entry forged into that later transaction's
    place, after the kept April entry and before the removed ones, is still caught."""
    board = new_id()
    backdate(app, org, board, MONTHS[3])
    backdate(app, org, board, MONTHS[1], MONTHS[2])
    seal_and_count(app, org)
    apply(app)
    forged = run_sql(
        app,
        "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, created_at, txid)"
        " SELECT '000000000000000000000000', :org, 'dashboard', 'view', :board, 'mallory',"
        " TIMESTAMPTZ '2020-04-20T00:00:00Z', CAST(CAST(last_txid AS text) AS xid8)"
        " FROM audit_checkpoints WHERE org = :org AND block = 1 RETURNING id",
        org=org,
        board=board,
    )[0][0]
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", forged)


def test_a_partition_dropped_by_hand_fails_verification(
    app: Flask, org: str, old_trail: str
) -> None:
    first = run_sql(app, "SELECT min(id) FROM audit_entries WHERE org = :org", org=org)[0][0]
    run_sql(app, "DROP TABLE audit_entries_p202001")
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", first)
    assert "missing" in (verdict.reason or "")


def test_entries_deleted_on_the_maintenance_path_still_fail(
    app: Flask, org: str, old_trail: str
) -> None:
    apply(app)
    kept = run_sql(app, "SELECT min(id) FROM audit_entries WHERE org = :org", org=org)[0][0]
    run_sql(app, "DELETE FROM audit_entries WHERE id = :id", maintenance=True, id=kept)
    verdict = verify(app, org)
    assert (verdict.status, verdict.first_bad_id) == ("failed", kept)


def test_retention_keeps_at_least_30_days(app: Flask) -> None:
    run_sql(app, "SELECT audit_ensure_partitions(current_date, current_date)")
    name = datetime.now(UTC).strftime("audit_entries_p%Y%m")
    with pytest.raises(sa_exc.DBAPIError, match="at least 30 days"):
        run_sql(app, "SELECT audit_drop_partition(:name, now())", name=name)


def test_an_unsealed_entry_holds_its_month_back(app: Flask, org: str, old_trail: str) -> None:
    backdate(app, org, new_id(), MONTHS[1])  # February, after sealing
    try:
        lines = apply(app)
        assert any(line.startswith("audit_entries_p202001: removed") for line in lines)
        held = [line for line in lines if line.startswith("audit_entries_p202002")]
        assert held == [f"audit_entries_p202002: kept, entries of {org} are not sealed yet"]
        assert run_sql(app, "SELECT to_regclass('audit_entries_p202002') IS NOT NULL") == [(True,)]
    finally:  # later tests share the months: leave nothing unsealed behind
        run_sql(
            app,
            "DELETE FROM audit_entries WHERE org = :org AND created_at < '2020-06-01'",
            maintenance=True,
            org=org,
        )


def test_expired_idempotency_keys_are_purged(
    app: Flask, client: FlaskClient, token: str, org: str
) -> None:
    key = f"old-{uuid.uuid4()}"
    client.post(
        f"{BASE}/dashboard/{new_id()}/view", headers={**bearer(token), "Idempotency-Key": key}
    )
    run_sql(
        app,
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = :key",
        key=key,
    )
    lines = apply(app)
    assert any(line.startswith("purged") for line in lines)
    assert run_sql(app, "SELECT count(*) FROM idempotency_keys WHERE key = :key", key=key) == [(0,)]


def old_entry(app: Flask, org: str, day: str) -> None:
    """One view of ``org`` on ``day`` (its month's partition created if missing)."""
    run_sql(app, "SELECT audit_ensure_partitions(CAST(:day AS date), CAST(:day AS date))", day=day)
    backdate(app, org, new_id(), day)


def forget_before(app: Flask, moment: str, *orgs: str) -> None:
    """Later tests share the months: leave nothing of ``orgs`` behind."""
    for org in orgs:
        run_sql(
            app,
            "DELETE FROM audit_entries WHERE org = :org AND created_at < CAST(:moment AS date)",
            maintenance=True,
            org=org,
            moment=moment,
        )


def test_the_app_role_cannot_drop_a_month_without_its_retention_records(
    app: Flask, app_role_url: str, org: str
) -> None:
    """Second review, finding 8: as the app role, one call dropped every org's month with
    retention unset and no record written."""
    other = f"org-o-{new_id()[:8]}"
    old_entry(app, org, "2019-06-10")
    old_entry(app, other, "2019-06-11")
    try:
        with psycopg.connect(app_role_url) as connection:
            with pytest.raises(psycopg.errors.RaiseException, match="no retention record"):
                connection.execute(
                    "SELECT audit_drop_partition('audit_entries_p201906',"
                    " now() - interval '31 days')"
                )
            connection.rollback()
        assert run_sql(app, "SELECT to_regclass('audit_entries_p201906') IS NOT NULL") == [(True,)]
    finally:
        forget_before(app, "2019-07-01", org, other)


def test_the_app_role_sees_only_its_transactions_org_in_a_partition(
    app: Flask, app_role_url: str, database_url: str, org: str
) -> None:
    """Second review, finding 8: ``audit_partition_orgs`` listed every org's name and counts."""
    other = f"org-o-{new_id()[:8]}"
    old_entry(app, org, "2019-07-10")
    old_entry(app, other, "2019-07-11")
    shares = "SELECT org, entries FROM audit_partition_orgs('audit_entries_p201907')"
    try:
        with psycopg.connect(app_role_url) as connection:
            connection.execute("SELECT set_config('insights_audit.org', %s, true)", [org])
            assert connection.execute(shares).fetchall() == [(org, 1)]
            # The org of the transaction is unchanged afterwards.
            assert connection.execute(
                "SELECT current_setting('insights_audit.org')"
            ).fetchone() == (org,)
            connection.rollback()
            for scope in ("*", ""):
                connection.execute("SELECT set_config('insights_audit.org', %s, true)", [scope])
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    connection.execute(shares)
                connection.rollback()
        with psycopg.connect(database_url) as owner:
            owner.execute("SELECT set_config('insights_audit.org', '*', true)")
            assert {org, other} <= {row[0] for row in owner.execute(shares)}
    finally:
        forget_before(app, "2019-08-01", org, other)


def test_the_app_role_still_applies_retention(
    app: Flask, app_role_url: str, make_token: TokenFactory, org: str
) -> None:
    """Retention in the service's background job runs as the app role: org by org, with a
    record for each, the drop accepted."""
    make_token()  # the org the service writes for
    run_sql(app, "SELECT audit_ensure_partitions('2018-01-01', '2018-02-01')")
    backdate(app, org, new_id(), "2018-01-10", "2018-02-10")
    seal_and_count(app, org)
    as_app_role = create_app(dataclasses.replace(app.config["SETTINGS"], database_url=app_role_url))
    try:
        with as_app_role.app_context():
            lines = retention.apply(
                transaction, keys.app_signing_key(as_app_role), datetime(2018, 3, 1, tzinfo=UTC)
            )
        assert [line.split(":")[0] for line in lines[:2]] == [
            "audit_entries_p201801",
            "audit_entries_p201802",
        ], lines
        assert run_sql(app, "SELECT to_regclass('audit_entries_p201801')") == [(None,)]
        verdict = verify(app, org)
        assert (verdict.status, verdict.removed) == ("verified", 2)
    finally:
        as_app_role.extensions[ENGINE_KEY].dispose()

"""The ``insights-audit`` command: its groups and commands, each run in the app's context."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import click
import marshmallow as ma
import psycopg
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo, with_appcontext
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from insights_audit import worker
from insights_audit.audit import aggregates
from insights_audit.audit.entries import RequestMeta, service_actor
from insights_audit.audit.keys import signing_key
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.app_role import grant_app_role
from insights_audit.db.engine import engine
from insights_audit.db.orgs import chained_orgs, orgs_with_entries
from insights_audit.db.unit_of_work import UnitOfWork, batch_transaction, transaction
from insights_audit.dev import demo
from insights_audit.errors import DomainError
from insights_audit.imports.documents import STANDARD_INPUT
from insights_audit.imports.mapping import ENTRIES, LEGACY_UUIDS, VIEWS, Rules, parse_overrides
from insights_audit.imports.run import (
    IMPORT_CLOCK_SKEW,
    IMPORT_HAD_REJECTS,
    ImportPlan,
    ImportRefused,
    import_summary,
    run_import,
)
from insights_audit.integrity import files, retention, sealing, verification
from insights_audit.reports import service as reports
from insights_audit.reports.schemas import REPORT_FORMATS, UsageQuery
from insights_audit.trail.export import export_bytes
from insights_audit.trail.queries import export_count
from insights_audit.trail.schemas import EXPORT_FORMATS, ExportQuery
from insights_audit.trail.service import trail_filter
from insights_audit.viewer import links
from insights_audit.web.auth import KNOWN_ROLES, SCOPES
from insights_audit.web.tokens import create_token, list_tokens, revoke_token


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


@click.group("db", cls=AppGroup, help="Database schema.")
def db_cli() -> None:
    pass


@db_cli.command("upgrade", help="Apply every pending migration (safe to run again).")
def db_upgrade() -> None:
    schema_migrations.upgrade(_settings().database_url)
    click.echo(f"Database is at revision {schema_migrations.head_revision()}.")


@db_cli.command("grant-app-role", help="Give a login role exactly what the service needs.")
@click.argument("role")
def db_grant_app_role(role: str) -> None:
    with transaction() as connection:
        grant_app_role(connection, role)
    click.echo(f"Granted {role} what insights-audit needs; run the service as {role}.")


@click.group("tokens", cls=AppGroup, help="API tokens.")
def tokens_cli() -> None:
    pass


@tokens_cli.command("create", help="Create a token; the secret is printed once, on the last line.")
@click.option("--org", required=True, help="Organisation (tenant) of the token.")
@click.option("--user", "user_id", required=True, help="User id the token acts as.")
@click.option("--email", default=None, help="E-mail address of that user.")
@click.option(
    "--role", "roles", multiple=True, required=True, type=click.Choice(sorted(KNOWN_ROLES))
)
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(sorted(SCOPES)))
@click.option("--name", default=None, help="A label to recognise the token by.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None)
def tokens_create(
    org: str,
    user_id: str,
    email: str | None,
    roles: tuple[str, ...],
    scopes: tuple[str, ...],
    name: str | None,
    expires_in_days: int | None,
) -> None:
    if not org.strip() or not user_id.strip():
        raise click.BadParameter("must not be empty", param_hint="--org/--user")
    with transaction() as connection:
        token_id, secret = create_token(
            connection,
            org=org,
            user_id=user_id,
            user_email=email,
            roles=list(roles),
            scopes=list(scopes),
            name=name,
            expires_in_days=expires_in_days,
        )
    click.echo(f"Created token {token_id} for user {user_id} in org {org}. It is shown only once:")
    click.echo(secret)


@tokens_cli.command("list", help="One tab-separated line per token.")
@click.option("--org", default=None, help="Only the tokens of this organisation.")
def tokens_list(org: str | None) -> None:
    with transaction() as connection:
        listings = list_tokens(connection, org)
    for token in listings:
        fields = (
            str(token.id),
            token.name or "-",
            token.org,
            token.user_id,
            ",".join(token.roles),
            ",".join(token.scopes),
            token.state,
        )
        click.echo("\t".join(fields))


@tokens_cli.command("revoke", help="Revoke a token by the ID that `tokens list` shows.")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    with transaction() as connection:
        revoked = revoke_token(connection, token_id)
    if not revoked:
        raise click.ClickException(f"No active token with ID {token_id}.")
    click.echo(f"Revoked token {token_id}.")


@click.group("aggregates", cls=AppGroup, help="The counters and rollups the reads use.")
def aggregates_cli() -> None:
    pass


@aggregates_cli.command("rebuild", help="Recompute aggregates from the audit trail.")
@click.option("--org", default=None, help="Only this organisation (default: every one).")
def aggregates_rebuild(org: str | None) -> None:
    with transaction() as connection:
        orgs = [org] if org else orgs_with_entries(connection)
    for name in orgs:
        started = time.perf_counter()
        with batch_transaction(org=name) as connection:
            aggregates.rebuild(connection, name)
        click.echo(f"Rebuilt the aggregates of {name} in {time.perf_counter() - started:.1f} s.")


@click.group("demo", cls=AppGroup, help="Demo data.")
def demo_cli() -> None:
    pass


@demo_cli.command("seed", help="Fill an org with realistic views and KPI/mapping changes.")
@click.option("--org", required=True, help="Organisation to fill.")
@click.option("--events", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--users", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--dashboards", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.option("--seed", "seed_value", type=int, default=1, show_default=True)
def demo_seed(
    org: str, events: int, users: int, dashboards: int, days: int, seed_value: int
) -> None:
    plan = demo.SeedPlan(org, events, users, dashboards, days, seed_value)
    with click.progressbar(
        length=events, label=f"Loading {events:,} events", file=sys.stderr
    ) as bar:
        report = demo.seed(engine(), plan, bar.update)
    with engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        aggregates.vacuum_analyze(connection)
    click.echo(
        f"Loaded {report.entries:,} entries into {org}: COPY {report.copy_seconds:.1f} s"
        f" ({report.entries / report.copy_seconds:,.0f} entries/s), aggregates"
        f" {report.aggregate_seconds:.1f} s."
    )


@click.group("audit", cls=AppGroup, help="Tamper evidence of the audit trail.")
def audit_cli() -> None:
    pass


def _orgs(org: str | None, *extra: Iterable[str]) -> list[str]:
    if org:
        return [org]
    with transaction() as connection:
        known = set(chained_orgs(connection))
    for names in extra:
        known.update(names)
    return sorted(known)


@audit_cli.command("checkpoint", help="Seal new entries into signed checkpoints.")
@click.option("--org", default=None, help="Only this organisation (default: every one).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also export every checkpoint as a file under DIR/<org>/ (kept off this database).",
)
def audit_checkpoint(org: str | None, out: Path | None) -> None:
    key = signing_key(_settings())
    for name in _orgs(org):
        sealed = sealing.seal(transaction, name, key)
        line = f"{name}: sealed {sealed.entries} entries in {sealed.checkpoints} checkpoints"
        if out is not None:
            with transaction(name) as connection:
                written = files.export(connection, name, out)
            line += f", exported {written} to {files.org_directory(out, name)}"
        click.echo(line + ".")
    worker.measure_gauges(_orgs(None))


@audit_cli.command("verify", help="Check every sealed entry; exit 0 verified, 1 failed, 2 no data.")
@click.option("--org", default=None, help="Only this organisation (default: every one).")
@click.option(
    "--against",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Also compare with the checkpoints exported to DIR by `audit checkpoint --out`.",
)
@click.option(
    "--aggregates",
    "check_aggregates",
    is_flag=True,
    help="Also compare the counters and rollups with what the trail implies.",
)
def audit_verify(org: str | None, against: Path | None, check_aggregates: bool) -> None:
    public_key = signing_key(_settings()).public_key()
    exported_orgs = files.exported_orgs(against) if against is not None else ()
    checked = unsealed = 0
    notes: list[str] = []
    for name in _orgs(org, exported_orgs):
        exported = files.read_exported(against, name) if against is not None else []
        with transaction(name) as connection:
            verdict = verification.verify(connection, name, public_key, exported)
        if verdict.status == "failed":
            click.echo(
                f"FAILED {name}: entry {verdict.first_bad_id}: {verdict.reason}"
                f" (after {verdict.checked} verified entries)"
            )
            sys.exit(1)
        checked += verdict.checked
        unsealed += verdict.unsealed
        if verdict.removed and verdict.retention is not None:
            notes.append(
                f"{name}: {verdict.removed} earlier sealed entries were removed by retention"
                f" (created before {verdict.retention['removedBefore']}, removed on"
                f" {verdict.retention['removedAt']}; record {verdict.retention['number']})"
            )
        if verdict.imported:
            sources = [
                f"{file['name']} ({file['kind']}, sha256 {file['sha256']})"
                for record in verdict.imports
                for file in record["files"]
            ]
            notes.append(
                f"{name}: {verdict.imported} entries were imported, from "
                + ("; ".join(sources) if sources else "files whose import did not finish")
            )
        if check_aggregates:
            _verify_aggregates(name)
    if unsealed:
        click.echo(
            f"{unsealed} entries are newer than the last checkpoint and were not checked;"
            " `insights-audit audit checkpoint` seals them.",
            err=True,
        )
    if checked == 0 and not notes:
        click.echo("no entries to verify")
        sys.exit(2)
    click.echo(f"verified {checked} entries")
    for line in notes:
        click.echo(line)


def _verify_aggregates(org: str) -> None:
    """Exit 1 when the org's counters and rollups differ from its trail (they are outside the
    tamper evidence: the app role can write them)."""
    with batch_transaction(org=org) as connection:
        differing = aggregates.differences(connection, org)
        connection.rollback()  # the comparison rebuilt them: keep what was stored
    if differing:
        listing = ", ".join(f"{table} ({rows} differ)" for table, rows in differing.items())
        click.echo(f"FAILED {org}: aggregates differ from the trail: {listing}")
        sys.exit(1)


@click.command("export", help="Write the org's trail as NDJSON or CSV, oldest first.")
@click.option("--org", required=True, help="Organisation whose trail to export.")
@click.option("--type", "types", multiple=True, help="Only entries of this type (repeatable).")
@click.option(
    "--action", "actions", multiple=True, help="An action, or a prefix ending in * (repeatable)."
)
@click.option("--target-id", default=None, help="Only entries of this dashboard, KPI or mapping.")
@click.option("--user-id", "user_ids", multiple=True, help="Only this user's entries (repeatable).")
@click.option("--since", default=None, help="From this RFC 3339 time on (inclusive).")
@click.option("--until", default=None, help="Before this RFC 3339 time (exclusive).")
@click.option("--q", default=None, help="Words that must all occur in the entry's text.")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="ndjson")
@click.option(
    "--out", type=click.File("wb"), default="-", help="File to write (default: standard output)."
)
def export_cli(
    org: str,
    types: tuple[str, ...],
    actions: tuple[str, ...],
    target_id: str | None,
    user_ids: tuple[str, ...],
    since: str | None,
    until: str | None,
    q: str | None,
    fmt: str,
    out: BinaryIO,
) -> None:
    given = {
        "type": list(types),
        "action": list(actions),
        "targetId": target_id,
        "userId": list(user_ids),
        "since": since,
        "until": until,
        "q": q,
        "format": fmt,
    }
    try:
        # The API's own validation: the same filters mean the same thing here.
        query = ExportQuery().load({name: value for name, value in given.items() if value})
    except ma.ValidationError as error:
        raise click.UsageError(f"invalid filters: {error.messages}") from error
    wanted = trail_filter(query)
    work = UnitOfWork(engine(), org, snapshot=True, unbounded=True)
    try:
        # A progress bar only for a person watching (one count first, in the same snapshot).
        total = work.connection.scalar(export_count(org, wanted)) if sys.stderr.isatty() else None
        with click.progressbar(
            length=total or 0, label="Exporting", file=sys.stderr if total else io.StringIO()
        ) as bar:
            for chunk in export_bytes(work.connection, org, wanted, fmt, bar.update):
                out.write(chunk)
    finally:
        work.close()


@click.group("report", cls=AppGroup, help="Reports on how dashboards are used.")
def report_cli() -> None:
    pass


@report_cli.command("usage", help="The usage report of a period (the API's bytes).")
@click.option("--org", required=True, help="The organisation to report on.")
@click.option(
    "--since", default=None, help="From this RFC 3339 time on (default: until - 30 days)."
)
@click.option("--until", default=None, help="Before this RFC 3339 time (default: now).")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="json")
@click.option(
    "--out", type=click.File("wb"), default="-", help="File to write (default: standard output)."
)
def report_usage(org: str, since: str | None, until: str | None, fmt: str, out: BinaryIO) -> None:
    given = {"since": since, "until": until, "format": fmt}
    try:
        # The API's own validation: the same period means the same thing here.
        query = UsageQuery().load({name: value for name, value in given.items() if value})
    except ma.ValidationError as error:
        raise click.UsageError(f"invalid period: {error.messages}") from error
    work = UnitOfWork(engine(), org, snapshot=True, unbounded=True)
    try:
        # The report is one statement: a person watching sees the seconds it has taken.
        with _ticking(f"Counting the views of {org}"):
            report = reports.usage_report(work, query.get("since"), query.get("until"))
    except DomainError as error:
        raise click.UsageError(f"invalid period: {error.errors or error.message}") from error
    finally:
        work.close()
    out.write(reports.report_bytes(report, fmt))


@contextmanager
def _ticking(label: str) -> Iterator[None]:
    """On a terminal (standard error), ``label`` with the seconds the block has taken so far,
    once a second, then in all; elsewhere nothing."""
    if not sys.stderr.isatty():
        yield
        return
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1):
            click.echo(f"\r{label} ... {time.monotonic() - started:.0f} s", err=True, nl=False)

    ticker = threading.Thread(target=tick, name="report-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        click.echo(f"\r{label}: {time.monotonic() - started:.1f} s", err=True)


@click.command("import", help="Bring a document store's view logs and audit entries into an org.")
@click.option("--org", required=True, help="Organisation the history belongs to.")
@click.option(
    "--views",
    multiple=True,
    metavar="FILE",
    help="mongoexport output of view logs: JSON lines or an array, gzip or not; - reads"
    " standard input (repeatable).",
)
@click.option(
    "--entries",
    multiple=True,
    metavar="FILE",
    help="mongoexport output of audit entries, read like --views (repeatable).",
)
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="FIELD=PATH",
    help="Read FIELD from PATH (dotted; a|b tries a, then b; empty: never) instead of the"
    " default (repeatable).",
)
@click.option(
    "--legacy-uuid",
    type=click.Choice(sorted(LEGACY_UUIDS)),
    default="python",
    show_default=True,
    help="Byte order of UUIDs stored as binary subtype 3: the driver that wrote them.",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="import-rejects.jsonl",
    show_default=True,
    help="Where rejected documents are listed, with their line and reason.",
)
@click.option("--dry-run", is_flag=True, help="Read and check everything, import nothing.")
def import_cli(
    org: str,
    views: tuple[str, ...],
    entries: tuple[str, ...],
    mappings: tuple[str, ...],
    legacy_uuid: str,
    rejects_path: Path,
    dry_run: bool,
) -> None:
    if not views and not entries:
        raise click.UsageError("give at least one --views or --entries file")
    files = [(VIEWS, path) for path in views] + [(ENTRIES, path) for path in entries]
    if [path for _, path in files].count(STANDARD_INPUT) > 1:
        raise click.UsageError("standard input (-) can be read only once")
    for _, path in files:
        if path != STANDARD_INPUT and not Path(path).is_file():
            raise click.BadParameter(f"{path}: no such file", param_hint="--views/--entries")
    try:
        overrides = parse_overrides(mappings)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--map") from error
    settings = _settings()
    with transaction() as connection:
        now: datetime = connection.execute(select(func.now())).scalar_one()
    days = settings.audit_retention_days
    rules = Rules(
        org,
        latest=now + IMPORT_CLOCK_SKEW,
        earliest=now - timedelta(days=days) if days is not None else None,
        legacy_uuid=LEGACY_UUIDS[legacy_uuid],
    )
    plan = ImportPlan(org, files, overrides, rules, rejects_path, dry_run)
    size = sum(Path(path).stat().st_size for _, path in files if path != STANDARD_INPUT)
    # A bar of the bytes read, for a person watching files (standard input has no known end).
    watched = sys.stderr.isatty() and STANDARD_INPUT not in [path for _, path in files]
    try:
        with click.progressbar(
            length=size, label="Importing", file=sys.stderr if watched else io.StringIO()
        ) as bar:
            report = run_import(
                engine(), plan, None if dry_run else signing_key(settings), bar.update
            )
    except ImportRefused as error:
        raise click.ClickException(str(error)) from error
    for line in import_summary(report):
        click.echo(line)
    if report.total("rejected"):
        sys.exit(IMPORT_HAD_REJECTS)


@click.group("retention", cls=AppGroup, help="Removing entries older than AUDIT_RETENTION_DAYS.")
def retention_cli() -> None:
    pass


@retention_cli.command("apply", help="Drop whole months past the horizon; sign what was removed.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed, remove nothing.")
def retention_apply(dry_run: bool) -> None:
    days = _settings().audit_retention_days
    if days is None:
        click.echo("Retention is off (AUDIT_RETENTION_DAYS is unset): nothing is removed.")
        return
    with transaction() as connection:
        now: datetime = connection.execute(select(func.now())).scalar_one()
    horizon = now - timedelta(days=days)
    key = signing_key(_settings())
    for line in retention.apply(transaction, key, horizon, dry_run=dry_run):
        click.echo(line)


class Duration(click.ParamType):
    """A duration: seconds, or a number with ``s``, ``m``, ``h`` or ``d`` (``90m``, ``1h``)."""

    name = "duration"
    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        unit = self.UNITS.get(text[-1:], None)
        digits = text[:-1] if unit else text
        if not digits.isdigit():
            self.fail(f"{value!r} is not a duration such as 3600, 90m, 1h or 1d", param, ctx)
        return int(digits) * (unit or 1)


@click.command("viewer-link", help="A short-lived, read-only link that opens the viewer signed in.")
@with_appcontext
@click.option("--org", required=True, help="Organisation of the person.")
@click.option("--user", "user_id", required=True, help="User id the link signs in as.")
@click.option("--email", default=None, help="E-mail address of that user.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(sorted(KNOWN_ROLES)),
    help="Their roles (repeatable; default Users).",
)
@click.option(
    "--ttl", type=Duration(), default="1h", show_default=True, help="How long it signs in."
)
def viewer_link_cli(
    org: str, user_id: str, email: str | None, roles: tuple[str, ...], ttl: int
) -> None:
    if not org.strip() or not user_id.strip():
        raise click.BadParameter("must not be empty", param_hint="--org/--user")
    if not links.MIN_TTL_SECONDS <= ttl <= links.MAX_TTL_SECONDS:
        raise click.BadParameter("must be between 1m and 1d", param_hint="--ttl")
    settings = _settings()
    base_url = settings.public_base_url or f"http://{os.environ.get('BIND', '127.0.0.1:8000')}"
    actor = service_actor(org)
    with transaction(org) as connection:
        link = links.mint(
            connection,
            actor,
            RequestMeta(None, None, "insights-audit viewer-link"),
            base_url,
            user_id=user_id,
            user_email=email,
            roles=list(roles) or list(links.DEFAULT_ROLES),
            ttl_seconds=ttl,
            via="cli",
        )
    expires = link["expiresAt"].isoformat(timespec="seconds")
    click.echo(f"Viewer link for {user_id} in org {org}, valid until {expires}:")
    click.echo(link["url"])


COMMANDS = (
    db_cli,
    tokens_cli,
    aggregates_cli,
    demo_cli,
    audit_cli,
    export_cli,
    report_cli,
    retention_cli,
    viewer_link_cli,
    import_cli,
)


def register_commands(app: Flask) -> None:
    """The commands on the app's own CLI (``flask --app``, test runners)."""
    for command in COMMANDS:
        app.cli.add_command(command)


@click.group(
    "insights-audit",
    commands=COMMANDS,
    help="Operate insights-audit: the database set by DATABASE_URL, tokens, the audit trail.",
)
@click.pass_context
def service_cli(ctx: click.Context) -> None:
    # Every command runs inside the app's context (settings and engine from the environment).
    ctx.with_resource(ctx.ensure_object(ScriptInfo).load_app().app_context())


def main() -> None:
    from insights_audit import create_app

    try:
        service_cli.main(
            prog_name="insights-audit",
            obj=ScriptInfo(create_app=lambda: create_app(), load_dotenv_defaults=False),
        )
    except sa_exc.OperationalError as error:
        if isinstance(error.orig, psycopg.errors.QueryCanceled):
            raise  # reached, and a statement ran too long: not a connection problem
        # One clear line instead of a driver traceback: which server, and why not.
        reason = str(error.orig or error).strip().splitlines()[0]
        url = make_url(Settings.from_env().database_url).render_as_string(hide_password=True)
        click.echo(f"Error: cannot reach the database at {url}: {reason}", err=True)
        click.echo("Set DATABASE_URL to the service's database.", err=True)
        sys.exit(1)

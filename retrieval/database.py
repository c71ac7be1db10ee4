"""One database behind one small interface: a SQLite file (the embedded default) or a PostgreSQL server.

Queries are plain SQL with named parameters (`:name`), written once for both engines; a list parameter expands
to `IN (...)`. SQLAlchemy Core gives the engines and the connection pool, Alembic the schema migrations (each
owner of tables keeps its scripts; `migrate` brings a database to their head under a lock, so that two
processes starting at once migrate once, and refuses a schema newer than the code).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

# A fixed key for PostgreSQL's advisory lock around migrations: replicas starting together take turns.
_MIGRATION_LOCK = 0x5B07_DB01


class DatabaseError(RuntimeError):
    """The database is unreachable (or went away mid-request), or its schema is not one this code knows: one line.
    Nothing of a request it cuts is committed; the next request reconnects."""


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and "://" in target


def redacted(target: str | Path) -> str:
    """The database as it may be printed: a URL without its password."""
    return sa.make_url(target).render_as_string(hide_password=True) if is_url(target) else str(target)


def _engine(target: str | Path, timeout: float, schema: str = "") -> Engine:
    if not is_url(target):
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(sa.URL.create("sqlite", database=str(path)),
                                  connect_args={"timeout": timeout, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    url = sa.make_url(target)
    if url.get_backend_name() != "postgresql":
        raise DatabaseError(f"database URL {redacted(target)}: expected postgresql://...")
    # psycopg 3, not SQLAlchemy's default driver for the name; pre-ping: a server restarted under a running
    # app costs the first request after it nothing but a reconnect.
    connect_args: dict = {"connect_timeout": max(1, round(timeout))}
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
    return sa.create_engine(url.set(drivername="postgresql+psycopg"), pool_pre_ping=True, connect_args=connect_args)


def _sqlite_connect(dbapi_connection, _record) -> None:
    # The driver's own transaction handling off: `_sqlite_begin` says when a transaction starts and how.
    dbapi_connection.isolation_level = None
    _write_ahead(dbapi_connection)
    # journal_size_limit: the WAL shrinks back after a large write (an ingest) instead of keeping its peak size.
    for pragma in ("synchronous=NORMAL", "foreign_keys=ON", "journal_size_limit=67108864"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _write_ahead(dbapi_connection, patience: float = 30.0) -> None:
    """WAL mode. Switching a new file to it needs the file to itself for a moment, and SQLite can report that
    lock at once instead of through the busy timeout: processes opening a new file together wait their turn."""
    deadline = time.monotonic() + patience
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_begin(conn: Connection) -> None:
    # A write takes the lock when it begins, so that it waits (busy timeout) rather than failing half-way when
    # a read transaction would have to be upgraded; a read takes a snapshot and blocks nobody (WAL).
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("writing") else "BEGIN")


def _statement(sql: str, params: dict) -> sa.TextClause:
    statement = sa.text(sql)
    lists = [sa.bindparam(k, expanding=True) for k, v in params.items() if isinstance(v, (list, tuple))]
    return statement.bindparams(*lists) if lists else statement


class Database:
    """A SQLite file (a path) or a PostgreSQL database (a postgresql:// URL): transactions, rows, writes.

    On PostgreSQL, `schema` names the schema (created if missing) that unqualified table names mean: one
    database holds several stores side by side (the app's tables, each knowledge base's)."""

    def __init__(self, target: str | Path, timeout: float = 60, schema: str = ""):
        self.target = target
        if schema and is_url(target):
            _create_schema(target, schema, timeout)
        self.engine = _engine(target, timeout, schema)
        self.dialect = self.engine.dialect.name  # "sqlite" or "postgresql"
        self._local = threading.local()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.engine.dispose()

    def __str__(self) -> str:
        return redacted(self.target)

    @contextmanager
    def _connect(self, writing: bool, isolation: str = "") -> Iterator[Connection]:
        current = getattr(self._local, "connection", None)
        if current is not None:
            yield current
            return
        if self.closed:  # a background thread outliving its owner: it must not reopen (or re-create) the database
            raise DatabaseError(f"database {self}: closed")
        try:
            connection = self.engine.connect()
        except sa.exc.OperationalError as err:
            raise DatabaseError(f"database {self}: cannot connect ({_first_line(err)})") from None
        try:
            with connection:
                connection.execution_options(writing=writing)
                if isolation and self.dialect == "postgresql":
                    connection.execution_options(isolation_level=isolation)
                with connection.begin():
                    self._local.connection = connection
                    try:
                        yield connection
                    finally:
                        self._local.connection = None
        except sa.exc.DBAPIError as err:
            if err.connection_invalidated:  # the server went away mid-request: nothing of it was committed
                raise DatabaseError(f"database {self}: connection lost ({_first_line(err)})") from None
            raise

    @contextmanager
    def transaction(self, *locks: str) -> Iterator[Connection]:
        """All-or-nothing for several statements; a nested use in the same thread joins the outer one. On
        PostgreSQL the named `locks` are taken first (in one order, held to the end), so that writers in other
        processes and replicas wait their turn; SQLite's write transactions take turns already."""
        with self._connect(writing=True) as connection:
            if self.dialect == "postgresql":
                for name in sorted(locks):
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": name})
            yield connection

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """Reads that all see one state of the database (PostgreSQL: repeatable read; SQLite: any transaction)."""
        with self._connect(writing=False, isolation="REPEATABLE READ") as connection:
            yield connection

    def rows(self, sql: str, **params) -> list[dict]:
        with self._connect(writing=False) as connection:
            return [dict(row._mapping) for row in connection.execute(_statement(sql, params), params)]

    def tuples(self, sql: str, **params) -> list[tuple]:
        """`rows` as tuples, in the order selected (columns need no names)."""
        with self._connect(writing=False) as connection:
            return [tuple(row) for row in connection.execute(_statement(sql, params), params)]

    def execute(self, sql: str, **params) -> int:
        """Run one write; returns how many rows it changed."""
        with self._connect(writing=True) as connection:
            return connection.execute(_statement(sql, params), params).rowcount

    def execute_many(self, sql: str, rows: list[dict]) -> None:
        """Run one write for each row of parameters (in one round of the driver's batching)."""
        if rows:
            with self._connect(writing=True) as connection:
                connection.execute(sa.text(sql), rows)

    def insert(self, sql: str, **params) -> int:
        """Run one INSERT and return the new row's `id`."""
        with self._connect(writing=True) as connection:
            return connection.execute(_statement(sql + " RETURNING id", params), params).scalar_one()

    def upsert(self, table: str, key: str, **values) -> None:
        """Insert a row, or replace the one with the same `key` (both engines speak ON CONFLICT)."""
        columns = ", ".join(values)
        marks = ", ".join(f":{c}" for c in values)
        sets = ", ".join(f"{c} = excluded.{c}" for c in values if c != key)
        self.execute(f"INSERT INTO {table}({columns}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {sets}", **values)


def _create_schema(target: str, schema: str, timeout: float) -> None:
    """Before the schema's own engine first connects: SQLAlchemy reads the default schema then, once."""
    engine = _engine(target, timeout)
    try:
        with engine.begin() as connection:
            exists = "SELECT 1 FROM pg_namespace WHERE nspname = :s"
            if connection.execute(sa.text(exists), {"s": schema}).first():
                return  # no CREATE right needed to use one that exists
            # Replicas opening a new knowledge base together: one creates it, the others wait and find it.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    except sa.exc.OperationalError as err:
        raise DatabaseError(f"database {redacted(target)}: cannot connect ({_first_line(err)})") from None
    finally:
        engine.dispose()


def _first_line(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- migrations ------------------------------------------------------------------------------------------

@functools.cache
def _scripts(folder: str):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", folder)
    return config, ScriptDirectory.from_config(config)


def revision(db: Database, connection: Connection | None = None) -> str | None:
    """The schema revision the database is at; None for a database no migration has run on."""
    from alembic.runtime.migration import MigrationContext

    if connection is None:
        with db._connect(writing=False) as connection:
            return revision(db, connection)
    return MigrationContext.configure(connection).get_current_revision()


def head(scripts: Path) -> str:
    return _scripts(str(scripts))[1].get_current_head()


def migrate(db: Database, scripts: Path) -> tuple[str | None, str]:
    """Bring the database to the head of `scripts` (a folder of Alembic migrations); returns (before, after).

    Refuses, changing nothing, a database at a revision the scripts do not know (written by newer code)."""
    from alembic import command

    config, directory = _scripts(str(scripts))
    target = directory.get_current_head()
    before = revision(db)
    if before == target:
        return before, target
    with db.transaction() as connection:
        if db.dialect == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        before = revision(db, connection)  # another process may have migrated while this one waited
        _check_known(db, directory, before)
        if before != target:
            config.attributes["connection"] = connection
            try:
                command.upgrade(config, "head")
            finally:
                config.attributes.pop("connection", None)
    return before, target


def _check_known(db: Database, directory, current: str | None) -> None:
    from alembic.util import CommandError

    if current is None:
        return
    try:
        known = directory.get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        raise DatabaseError(f"database {db}: schema revision {current} is newer than this supportbot knows "
                            f"(its newest is {directory.get_current_head()}); upgrade supportbot")


# --- copying a database --------------------------------------------------------------------------------------

def copy_tables(source: Database, target: Database, tables: list[str], batch: int = 1000) -> dict[str, dict]:
    """Copy the rows of `tables` (parents before children) from `source` into the same, empty tables of `target`,
    in one transaction, then check each table's row count and checksum on both sides.

    Returns {table: {"rows", "checksum"}}; raises DatabaseError (the target unchanged) when a target table is
    not empty or a check fails."""
    with target.transaction() as connection:
        for table in tables:
            if connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one():
                raise DatabaseError(f"database {target}: table {table} is not empty; copy only into a new database")
        expected = {}
        for table in tables:
            rows = source.rows(f"SELECT * FROM {table} ORDER BY 1")
            _insert_rows(connection, table, rows, batch)
            expected[table] = _checksum(rows)
        if target.dialect == "postgresql":
            for table in tables:
                _advance_sequence(connection, table)
        report = {}
        for table in tables:
            got = _checksum(target.rows(f"SELECT * FROM {table} ORDER BY 1"))
            if expected[table] != got:
                raise DatabaseError(f"database {target}: table {table} differs after the copy "
                                    f"({got['rows']} rows against {expected[table]['rows']}); nothing was copied")
            report[table] = got
    return report


def import_file(db: Database, path: Path, table: str) -> int:
    """Move the rows of `table` from the SQLite file `path` (where an older version kept them) into the same
    table of `db`, once: the file is renamed `*.imported` after the rows are committed. Returns how many."""
    if not path.exists():
        return 0
    old = Database(path)
    try:
        rows = old.rows(f"SELECT * FROM {table}") if sa.inspect(old.engine).has_table(table) else []
    finally:
        old.close()
    with db.transaction() as connection:
        if not connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one():
            _insert_rows(connection, table, rows)
    path.rename(path.with_name(path.name + ".imported"))
    return len(rows)


def _advance_sequence(connection: Connection, table: str) -> None:
    """After rows are copied with their ids, a serial id continues after the largest one."""
    serials = connection.execute(sa.text(
        "SELECT column_name, pg_get_serial_sequence(:t, column_name) FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = :t"), {"t": table}).all()
    for column, sequence in serials:
        if sequence:
            connection.execute(sa.text(f"SELECT setval(:s, COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"),
                               {"s": sequence})


def _insert_rows(connection: Connection, table: str, rows: list[dict], batch: int = 1000) -> None:
    if not rows:
        return
    columns = list(rows[0])
    insert = sa.text(f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})")
    for start in range(0, len(rows), batch):
        connection.execute(insert, rows[start:start + batch])


def _checksum(rows: list[dict]) -> dict:
    """Count and digest of the rows in an order of their own: the engines sort text differently (PostgreSQL by its
    locale's collation, SQLite byte by byte)."""
    digest = hashlib.sha256()
    for line in sorted(json.dumps(list(row.values()), default=str) for row in rows):
        digest.update(line.encode())
    return {"rows": len(rows), "checksum": digest.hexdigest()[:16]}

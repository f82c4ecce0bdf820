"""The model and operation store, through SQLAlchemy: SQLite by default, PostgreSQL for several
machines. The table of operations is also the job queue: a worker claims a queued operation with
one conditional UPDATE, holds it under a lease it renews, and finishes it in one UPDATE.

The schema is versioned by Alembic (``exporter/service/migrations``): the API server calls
``Store.migrate()`` once at start; every other process only connects.
"""

from __future__ import annotations

import enum
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from exporter.core.errors import Code, ExportError


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class State(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELLED)


class Base(DeclarativeBase):
    pass


class ModelRow(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    parent: Mapped[str] = mapped_column(String(512), index=True)
    display_name: Mapped[str] = mapped_column(String(64))
    model_type: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)  # the stored model folder
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)


class OperationRow(Base):
    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    parent: Mapped[str] = mapped_column(String(512), index=True)
    model_name: Mapped[str] = mapped_column(String(512))
    output_config: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True, default=State.QUEUED.value)
    progress_percent: Mapped[int] = mapped_column(Integer, default=0)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)
    output_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # google.rpc.Status JSON
    report: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    principal: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)


class Store:
    """All reads and writes of models and operations; one instance per process."""

    def __init__(self, url: str):
        """Connect to `url`. The schema is the server's to migrate, once at start (``migrate``)."""
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    # Schema -------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Upgrade the database to the newest Alembic revision: nothing to do when it is there.

        One transaction under a lock (an advisory lock on PostgreSQL, SQLite's write lock), so
        processes that migrate at the same moment take turns and the later ones find it done.
        A database that ``create_all`` made before Alembic is stamped at the baseline first.
        """
        from alembic import command

        from exporter.service.migrations import BASELINE, alembic_config

        with self.engine.connect() as connection:
            _lock_for_migration(connection)
            config = alembic_config(connection=connection)
            if _made_by_create_all(connection):
                command.stamp(config, BASELINE)
            command.upgrade(config, "head")
            connection.commit()

    # Models -------------------------------------------------------------------------------
    def add_model(self, row: ModelRow) -> ModelRow:
        with self.session.begin() as session:
            session.add(row)
        return row

    def get_model(self, name: str) -> ModelRow | None:
        with self.session() as session:
            return session.get(ModelRow, name)

    def list_models(self, parent: str, offset: int, limit: int) -> list[ModelRow]:
        with self.session() as session:
            query = select(ModelRow).where(ModelRow.parent == parent).order_by(ModelRow.create_time, ModelRow.name)
            return list(session.scalars(query.offset(offset).limit(limit)))

    # Operations ---------------------------------------------------------------------------
    def create_operation(
        self, parent: str, model_name: str, output_config: dict, principal: str | None = None
    ) -> OperationRow:
        now = utc_now()
        op_id = uuid.uuid4().hex
        row = OperationRow(
            id=op_id,
            name=f"{parent}/operations/{op_id}",
            parent=parent,
            model_name=model_name,
            output_config=output_config,
            state=State.QUEUED.value,
            progress_percent=0,
            create_time=now,
            update_time=now,
            attempts=0,
            cancel_requested=False,
            principal=principal,
        )
        with self.session.begin() as session:
            session.add(row)
        return row

    def count_unfinished(
        self, principal: str | None = None, states: tuple[State, ...] = (State.QUEUED, State.RUNNING)
    ) -> int:
        """Operations in `states`, of one principal or of everyone."""
        from sqlalchemy import func

        with self.session() as session:
            query = (
                select(func.count()).select_from(OperationRow).where(OperationRow.state.in_([s.value for s in states]))
            )
            if principal is not None:
                query = query.where(OperationRow.principal == principal)
            return int(session.scalar(query))

    def get_operation(self, name: str) -> OperationRow | None:
        with self.session() as session:
            return session.scalar(select(OperationRow).where(OperationRow.name == name))

    def list_operations(self, parent: str, done: bool | None, offset: int, limit: int) -> list[OperationRow]:
        with self.session() as session:
            query = select(OperationRow).where(OperationRow.parent == parent)
            finished = [s.value for s in State if s.done]
            if done is True:
                query = query.where(OperationRow.state.in_(finished))
            elif done is False:
                query = query.where(OperationRow.state.not_in(finished))
            query = query.order_by(OperationRow.create_time, OperationRow.id).offset(offset).limit(limit)
            return list(session.scalars(query))

    def delete_operation(self, name: str) -> bool:
        with self.session.begin() as session:
            row = session.scalar(select(OperationRow).where(OperationRow.name == name))
            if row is None:
                return False
            session.delete(row)
            return True

    def request_cancel(self, name: str) -> OperationRow | None:
        """Cancel a queued operation at once; ask a running one's worker to stop."""
        with self.session.begin() as session:
            row = session.scalar(select(OperationRow).where(OperationRow.name == name).with_for_update())
            if row is None:
                return None
            if not State(row.state).done:
                row.cancel_requested = True
                row.update_time = utc_now()
                if row.state == State.QUEUED.value:
                    row.state = State.CANCELLED.value
                    row.error = cancelled_status()
            return row

    def cancel_requested(self, op_id: str) -> bool:
        with self.session() as session:
            return bool(session.scalar(select(OperationRow.cancel_requested).where(OperationRow.id == op_id)))

    # The queue ----------------------------------------------------------------------------
    def claim(self, owner: str, lease_seconds: float) -> OperationRow | None:
        """Take the oldest queued operation for `owner`, or None; safe between processes."""
        for _ in range(5):
            with self.session.begin() as session:
                op_id = session.scalar(
                    select(OperationRow.id)
                    .where(OperationRow.state == State.QUEUED.value)
                    .order_by(OperationRow.create_time, OperationRow.id)
                    .limit(1)
                )
                if op_id is None:
                    return None
                now = utc_now()
                taken = session.execute(
                    update(OperationRow)
                    .where(OperationRow.id == op_id, OperationRow.state == State.QUEUED.value)
                    .values(
                        state=State.RUNNING.value,
                        lease_owner=owner,
                        attempts=OperationRow.attempts + 1,
                        lease_expires=now + timedelta(seconds=lease_seconds),
                        update_time=now,
                    )
                ).rowcount
                if taken == 1:
                    return session.get(OperationRow, op_id)
        return None

    def _update_held(self, op_id: str, owner: str, **values: Any) -> int:
        """Update a running operation only while `owner` holds its lease; the rows changed."""
        with self.session.begin() as session:
            return session.execute(
                update(OperationRow)
                .where(
                    OperationRow.id == op_id,
                    OperationRow.lease_owner == owner,
                    OperationRow.state == State.RUNNING.value,
                )
                .values(**values)
            ).rowcount

    def renew(self, op_id: str, owner: str, lease_seconds: float) -> None:
        self._update_held(op_id, owner, lease_expires=utc_now() + timedelta(seconds=lease_seconds))

    def progress(self, op_id: str, owner: str, percent: int) -> None:
        self._update_held(op_id, owner, progress_percent=percent, update_time=utc_now())

    def finish(self, op_id: str, owner: str, state: State, **values: Any) -> bool:
        """End a running operation held by `owner`, in one step; False when it lost the lease."""
        return (
            self._update_held(
                op_id, owner, state=state.value, update_time=utc_now(), lease_owner=None, lease_expires=None, **values
            )
            == 1
        )

    def release_lost(self, owner: str | None, max_attempts: int, reason: str) -> int:
        """Running operations whose worker is gone (`owner`, or any with an expired lease):
        queued again while attempts remain, failed with `reason` otherwise."""
        now = utc_now()
        with self.session.begin() as session:
            query = select(OperationRow).where(OperationRow.state == State.RUNNING.value)
            if owner is not None:
                query = query.where(OperationRow.lease_owner == owner)
            else:
                query = query.where(OperationRow.lease_expires < now)
            rows = list(session.scalars(query.with_for_update()))
            for row in rows:
                row.lease_owner, row.lease_expires, row.update_time = None, None, now
                if row.cancel_requested:
                    row.state, row.error = State.CANCELLED.value, cancelled_status()
                elif row.attempts < max_attempts:
                    row.state, row.progress_percent = State.QUEUED.value, 0
                else:
                    row.state = State.FAILED.value
                    row.error = ExportError(
                        Code.ABORTED, f"{reason}; gave up after {row.attempts} attempts"
                    ).to_status()
            return len(rows)

    def iter_running(self) -> Iterator[OperationRow]:
        with self.session() as session:
            yield from session.scalars(select(OperationRow).where(OperationRow.state == State.RUNNING.value))


def _sqlite_pragmas(connection, _record) -> None:
    # WAL lets the API read while a worker writes; the server and its workers share one file.
    # WAL is kept in the file, so it is switched on once; the switch needs the database to
    # itself and does not wait on the busy timeout, so processes starting together retry it.
    cursor = connection.cursor()
    deadline = time.monotonic() + 30
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def cancelled_status() -> dict:
    return ExportError(Code.CANCELLED, "the operation was cancelled").to_status()


# Any 64-bit number, the same in every process: the key of the advisory lock that migrations take.
_MIGRATION_LOCK_KEY = 0x6578706F72746572  # "exporter"

# Every column of the tables that `Base.metadata.create_all` made before Alembic, which is the
# schema of the baseline revision; a database holding them and no alembic_version is stamped.
_CREATE_ALL_COLUMNS = {
    "models": {"name", "parent", "display_name", "model_type", "path", "create_time", "update_time"},
    "operations": {
        "id",
        "name",
        "parent",
        "model_name",
        "output_config",
        "state",
        "progress_percent",
        "create_time",
        "update_time",
        "output_dir",
        "error",
        "report",
        "attempts",
        "lease_owner",
        "lease_expires",
        "cancel_requested",
        "principal",
    },
}


def _lock_for_migration(connection: Connection) -> None:
    """Begin the migration's transaction holding a lock that other migrating processes wait for."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        # Released by the transaction's commit or rollback.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    elif dialect == "sqlite":
        # The driver opens no transaction for DDL by itself; this one takes the write lock at once
        # (waiting up to the connection's busy timeout), and Connection.commit() ends it.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.begin()


def _made_by_create_all(connection: Connection) -> bool:
    """Whether the store's tables exist without Alembic's version table (made before Alembic).

    Raises when only part of that schema is there: stamping it would hide a missing column."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables or not tables & _CREATE_ALL_COLUMNS.keys():
        return False
    missing = []
    for table, columns in _CREATE_ALL_COLUMNS.items():
        if table not in tables:
            missing.append(f"table {table}")
            continue
        present = {column["name"] for column in inspect(connection).get_columns(table)}
        missing += [f"column {table}.{name}" for name in sorted(columns - present)]
    if missing:
        raise RuntimeError(
            "the database has store tables but no alembic_version table, and it lacks "
            f"{', '.join(missing)}: it is not the schema that the Alembic baseline stands for, "
            "so it is not stamped; bring it to that schema by hand, then migrate"
        )
    return True

"""The model and operation store, through SQLAlchemy: SQLite by default, PostgreSQL for several
machines. The table of operations is also the job queue, and it alone decides who runs what: a
worker claims a queued operation with one conditional UPDATE that grows its fencing token
(``fence``), renews its lease and heartbeat while it runs, and every later write of that attempt,
the publish included, is conditional on the token still being current. A job runner that delivers
a job twice (Celery re-delivers) only gets a second, refused claim.

The schema is versioned by Alembic (``exporter/service/migrations``): the API server calls
``Store.migrate()`` once at start; every other process only connects.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import create_engine, event, func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from exporter.core.errors import Code, ExportError
from exporter.service.fencing import PublishTransaction, end_values, held, requeue, write_lock
from exporter.service.schema import lock_for_migration, made_by_create_all, newest_present
from exporter.service.tables import (
    MILLISECOND,
    Base,
    Limits,
    ModelRow,
    OperationRow,
    State,
    UTCDateTime,
    cancelled_status,
    utc_now,
)

# The tables' names, read from here by the routes, the migrations and the tests.
__all__ = [
    "Base",
    "Limits",
    "ModelRow",
    "OperationRow",
    "State",
    "Store",
    "UTCDateTime",
    "cancelled_status",
    "utc_now",
]


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
            lock_for_migration(connection)
            config = alembic_config(connection=connection)
            if made_by_create_all(connection):
                command.stamp(config, newest_present(connection, BASELINE))
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
        self,
        parent: str,
        model_name: str,
        output_config: dict,
        principal: str | None = None,
        *,
        destination: str | None = None,
        limits: Limits | None = None,
    ) -> OperationRow:
        """Queue an operation. The limits are checked and the row inserted in one transaction,
        under a lock that every creation takes (PostgreSQL: an advisory lock; SQLite: its write
        lock), so two requests never both take the last place.

        The create time is unique per `destination` to the millisecond: a request in the same
        millisecond as the last one for that prefix gets the next millisecond, so AutoML's folder
        name ``model-export-<name>-<create time>`` never repeats under one prefix."""
        op_id = uuid.uuid4().hex
        with self.session.begin() as session:
            _lock_creation(session)
            if limits is not None:
                _check_limits(session, principal, limits)
            now = utc_now()
            now = now.replace(microsecond=now.microsecond // 1000 * 1000)
            if destination is not None:
                latest = session.scalar(
                    select(func.max(OperationRow.create_time)).where(OperationRow.destination == destination)
                )
                if latest is not None and latest >= now:
                    now = latest + MILLISECOND
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
                fence=0,
                destination=destination,
            )
            session.add(row)
        return row

    def count_unfinished(
        self, principal: str | None = None, states: tuple[State, ...] = (State.QUEUED, State.RUNNING)
    ) -> int:
        """Operations in `states`, of one principal or of everyone."""
        with self.session() as session:
            return _count(session, principal, states)

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
    def claim(self, owner: str, lease_seconds: float, op_id: str | None = None) -> OperationRow | None:
        """Take a queued operation for `owner`: `op_id`, else the oldest queued one. None when
        there is none to take (the one named runs elsewhere, is done or gone: a job delivered
        again). The claim grows the operation's fence; the row returned carries the new one."""
        for _ in range(5):
            with self.session.begin() as session:
                candidate = op_id or session.scalar(
                    select(OperationRow.id)
                    .where(OperationRow.state == State.QUEUED.value)
                    .order_by(OperationRow.create_time, OperationRow.id)
                    .limit(1)
                )
                if candidate is None:
                    return None
                now = utc_now()
                taken = session.execute(
                    update(OperationRow)
                    .where(OperationRow.id == candidate, OperationRow.state == State.QUEUED.value)
                    .values(
                        state=State.RUNNING.value,
                        lease_owner=owner,
                        attempts=OperationRow.attempts + 1,
                        fence=OperationRow.fence + 1,
                        lease_expires=now + timedelta(seconds=lease_seconds),
                        heartbeat_at=now,
                        update_time=now,
                    )
                ).rowcount
                if taken == 1:
                    return session.get(OperationRow, candidate)
            if op_id is not None:
                return None
        return None

    def _update_held(self, op_id: str, fence: int, **values: Any) -> int:
        """Update a running operation only while `fence` is its current claim; the rows changed."""
        with self.session.begin() as session:
            return session.execute(held(op_id, fence).values(**values)).rowcount

    def renew(self, op_id: str, fence: int, lease_seconds: float) -> bool:
        """The holder's heartbeat: False when its claim is no longer current."""
        now = utc_now()
        return (
            self._update_held(op_id, fence, lease_expires=now + timedelta(seconds=lease_seconds), heartbeat_at=now) == 1
        )

    def progress(self, op_id: str, fence: int, percent: int) -> None:
        self._update_held(op_id, fence, progress_percent=percent, update_time=utc_now())

    def finish(self, op_id: str, fence: int, state: State, **values: Any) -> bool:
        """End a running operation whose current claim is `fence`, in one step; False when the
        claim is stale (the result is dropped: another attempt owns the operation)."""
        return self._update_held(op_id, fence, **end_values(state, values)) == 1

    def publishing(self, op_id: str, fence: int) -> PublishTransaction:
        return PublishTransaction(self.session, op_id, fence)

    def hand_back(self, op_id: str, fence: int) -> bool:
        """Return a running operation to the queue, its attempt not counted (a graceful stop)."""
        with self.session.begin() as session:
            write_lock(session)
            row = session.scalar(
                select(OperationRow)
                .where(OperationRow.id == op_id, OperationRow.fence == fence, OperationRow.state == State.RUNNING.value)
                .with_for_update()
            )
            if row is None:
                return False
            requeue(row, utc_now(), counted=False, max_attempts=None, reason="")
            return True

    def release_lost(
        self,
        owner: str | None,
        max_attempts: int,
        reason: str,
        *,
        liveness_seconds: float | None = None,
        counted: bool = True,
        on_released: Callable[[OperationRow], None] | None = None,
    ) -> int:
        """Running operations whose holder is gone: held by `owner`; or, with `owner` None, with
        an expired lease or a heartbeat older than `liveness_seconds`. Each is queued again while
        attempts remain (`counted` False: this attempt is not counted), failed with `reason`
        otherwise; `on_released` sees each row after."""
        now = utc_now()
        with self.session.begin() as session:
            write_lock(session)
            query = select(OperationRow).where(OperationRow.state == State.RUNNING.value)
            if owner is not None:
                query = query.where(OperationRow.lease_owner == owner)
            else:
                gone = OperationRow.lease_expires < now
                if liveness_seconds is not None:
                    gone = gone | (OperationRow.heartbeat_at < now - timedelta(seconds=liveness_seconds))
                query = query.where(gone)
            rows = list(session.scalars(query.with_for_update()))
            for row in rows:
                requeue(row, now, counted=counted, max_attempts=max_attempts, reason=reason)
        for row in rows:
            if on_released is not None:
                on_released(row)
        return len(rows)

    def to_dispatch(self, older_than_seconds: float, limit: int = 100) -> list[OperationRow]:
        """Queued operations that no job runner was sent (or not for `older_than_seconds`: the
        message may be lost), marked as sent now. Sending one twice is harmless: only one claim
        of it succeeds."""
        now = utc_now()
        with self.session.begin() as session:
            write_lock(session)
            rows = list(
                session.scalars(
                    select(OperationRow)
                    .where(
                        OperationRow.state == State.QUEUED.value,
                        OperationRow.dispatched_at.is_(None)
                        | (OperationRow.dispatched_at < now - timedelta(seconds=older_than_seconds)),
                    )
                    .order_by(OperationRow.create_time, OperationRow.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            for row in rows:
                row.dispatched_at = now
            return rows

    def mark_undispatched(self, op_ids: list[str]) -> None:
        """Queued operations whose message could not be sent: to be sent in the next round."""
        with self.session.begin() as session:
            session.execute(
                update(OperationRow)
                .where(OperationRow.id.in_(op_ids), OperationRow.state == State.QUEUED.value)
                .values(dispatched_at=None)
            )

    def iter_running(self) -> Iterator[OperationRow]:
        with self.session() as session:
            yield from session.scalars(select(OperationRow).where(OperationRow.state == State.RUNNING.value))


# Any 64-bit number, the same in every process: the advisory lock that operation creation takes.
_CREATION_LOCK_KEY = 0x6F7065726174696F  # "operatio"


def _lock_creation(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATION_LOCK_KEY})
    else:
        write_lock(session)


def _count(session: Session, principal: str | None, states: tuple[State, ...]) -> int:
    query = select(func.count()).select_from(OperationRow).where(OperationRow.state.in_([s.value for s in states]))
    if principal is not None:
        query = query.where(OperationRow.principal == principal)
    return int(session.scalar(query))


def _check_limits(session: Session, principal: str | None, limits: Limits) -> None:
    who = principal or "everyone"
    if _count(session, principal, (State.QUEUED, State.RUNNING)) >= limits.per_principal:
        raise ExportError(
            Code.RESOURCE_EXHAUSTED,
            f"{who} already has {limits.per_principal} exports queued or running; wait for one to finish",
        )
    if _count(session, None, (State.QUEUED,)) >= limits.queue:
        raise ExportError(Code.RESOURCE_EXHAUSTED, f"the export queue is full ({limits.queue} queued)")


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

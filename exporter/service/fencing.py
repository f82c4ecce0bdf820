"""How an attempt's writes are fenced: the conditional UPDATE of a held operation, the publish
transaction, and what becomes of an operation whose attempt ended without a result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from exporter.core.errors import Code, ExportError
from exporter.service.tables import OperationRow, State, cancelled_status, utc_now


class PublishTransaction:
    """One attempt's publish and the operation's end as one transaction, holding the operation's
    row (PostgreSQL: its row lock; SQLite: the write lock) from the fence check right before the
    publish until the result is recorded. A claim, requeue or hand-back of the operation waits for
    it: an attempt whose claim is no longer current publishes nothing, and one whose claim is
    current publishes and ends the operation with no moment between the two.

    ``with store.publishing(op_id, fence) as held: <publish>``, then ``held.finish(...)``; the
    transaction stays open after a clean exit of the block until ``finish`` or ``close``."""

    def __init__(self, sessions: sessionmaker, op_id: str, fence: int):
        self.sessions, self.op_id, self.fence = sessions, op_id, fence
        self.session: Session | None = None

    def __enter__(self) -> PublishTransaction:
        self.session = self.sessions()
        self.session.begin()
        taken = self.session.execute(held(self.op_id, self.fence).values(update_time=utc_now())).rowcount
        if taken != 1:
            self.close()
            raise ExportError(
                Code.ABORTED,
                "this attempt's claim on the operation is no longer current (the operation was handed to another "
                "attempt, cancelled or ended); nothing was published",
            )
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.close()

    def finish(self, state: State, **values: Any) -> bool:
        """Record the end in the held transaction and commit; False when none is held."""
        if self.session is None:
            return False
        try:
            taken = self.session.execute(held(self.op_id, self.fence).values(**end_values(state, values))).rowcount
            self.session.commit()
            return taken == 1
        finally:
            self.close()

    def close(self) -> None:
        if self.session is not None:
            self.session.rollback()
            self.session.close()
            self.session = None


def held(op_id: str, fence: int):
    """An UPDATE of the running operation `op_id` whose current claim is `fence`."""
    return update(OperationRow).where(
        OperationRow.id == op_id, OperationRow.fence == fence, OperationRow.state == State.RUNNING.value
    )


def end_values(state: State, values: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": state.value,
        "update_time": utc_now(),
        "lease_owner": None,
        "lease_expires": None,
        "heartbeat_at": None,
        **values,
    }


def requeue(row: OperationRow, now: datetime, *, counted: bool, max_attempts: int | None, reason: str) -> None:
    """A running row whose attempt ended without a result: queued again, cancelled or failed."""
    row.lease_owner, row.lease_expires, row.heartbeat_at, row.update_time = None, None, None, now
    if not counted:
        row.attempts -= 1
    if row.cancel_requested:
        row.state, row.error = State.CANCELLED.value, cancelled_status()
    elif max_attempts is None or row.attempts < max_attempts:
        row.state, row.progress_percent, row.dispatched_at = State.QUEUED.value, 0, None
    else:
        row.state = State.FAILED.value
        row.error = ExportError(Code.ABORTED, f"{reason}; gave up after {row.attempts} attempts").to_status()


def write_lock(session: Session) -> None:
    """Take SQLite's write lock now, for a read-then-write transaction (PostgreSQL locks rows)."""
    if session.get_bind().dialect.name == "sqlite":
        # Any UPDATE takes the write lock, waiting up to the busy timeout; this one changes nothing.
        session.execute(text("UPDATE operations SET id = id WHERE 0 = 1"))

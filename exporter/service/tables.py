"""The store's tables (models and operations) and the states of an operation, as SQLAlchemy
models; ``exporter.service.store`` reads and writes them, Alembic migrates them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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
    # Grows by one with every claim; a worker's writes count only while its claim's fence is current.
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The holder's last sign of life: a holder silent for liveness_seconds is gone.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The output prefix: create times are unique per destination, so folder names are too.
    destination: Mapped[str | None] = mapped_column(String(1024), nullable=True, index=True)
    # When a job runner (Celery) was last sent this queued operation; None: to be sent.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class Limits:
    """What the creation of an operation checks, in the same transaction that creates it."""

    per_principal: int  # queued or running operations of one principal
    queue: int  # queued operations in all


# One create time step: AutoML's folder names carry create times to the millisecond.
MILLISECOND = timedelta(milliseconds=1)


def cancelled_status() -> dict:
    return ExportError(Code.CANCELLED, "the operation was cancelled").to_status()

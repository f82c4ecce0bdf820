"""The service's settings, from ``EXPORTER_*`` environment variables (or a .env file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXPORTER_", env_file=".env", extra="ignore")

    # Where the service keeps imported models and, by default, its SQLite database.
    data_dir: Path = Path("service-data")
    # SQLAlchemy URL of the operations store; default: SQLite in data_dir.
    database_url: str | None = None
    # A SavedModel is a program: models are imported only from under these folders.
    import_roots: list[Path] = Field(default_factory=list)
    # Buckets models may be imported from (gs://BUCKET/...).
    import_buckets: list[str] = Field(default_factory=list)
    # Local export destinations (plain paths and file://) must lie under these folders.
    output_roots: list[Path] = Field(default_factory=list)
    # Per project: {"project-id": ["/srv/exports/project-id"]}. A project listed here exports only
    # under its own folders; one not listed uses output_roots.
    project_output_roots: dict[str, list[Path]] = Field(default_factory=dict)
    # Buckets gs:// exports may be written to (gs://BUCKET/...).
    output_buckets: list[str] = Field(default_factory=list)
    workers: int = Field(default=2, ge=0, le=64)
    # Added to the workers' nice value, so that the API answers promptly while they convert.
    worker_niceness: int = Field(default=10, ge=0, le=19)
    # A running job's lease; a worker renews it every lease_seconds / 3.
    lease_seconds: float = Field(default=30.0, gt=1)
    # How many times a job is started before a lost worker fails it for good.
    max_attempts: int = Field(default=2, ge=1, le=10)
    # A running job's holder writes a heartbeat every second; one silent this long is gone, and
    # its job is queued again (within seconds of a crash, not only when the lease runs out).
    liveness_seconds: float = Field(default=10.0, gt=1)
    # On SIGTERM a worker lets its running job finish for up to this long, then hands it back to
    # the queue (not counted as an attempt) and exits.
    drain_seconds: float = Field(default=10.0, ge=0)
    # Who runs the jobs: "embedded" (worker processes of `exporter serve`, no broker) or "celery"
    # (`exporter worker` processes on any machine that reaches the broker, store and storage).
    runner: Literal["embedded", "celery"] = "embedded"
    # The Celery broker (Redis by default; amqp:// for RabbitMQ also works).
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Redis re-delivers a job not acknowledged within this time: longer than the longest export.
    broker_visibility_seconds: float = Field(default=7200.0, gt=0)
    # The export cache (exporter/cache.py): a folder (shared by the fleet when it is on shared
    # storage) where converted and verified artifacts are kept for repeats; None: no cache.
    export_cache_dir: Path | None = None
    export_cache_mb: int = Field(default=2048, ge=1)
    # A queued operation whose job message may be lost (sent this long ago) is sent again.
    redispatch_seconds: float = Field(default=300.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # JSON bodies nested deeper than this are refused (INVALID_ARGUMENT), before they are parsed.
    max_json_depth: int = Field(default=64, ge=2, le=512)
    # Bearer tokens and permissions (see exporter/service/auth.py); None: no auth, loopback only.
    auth_file: Path | None = None
    # Queued or running exports one principal may have at once, and queued exports in all.
    max_active_exports_per_principal: int = Field(default=8, ge=1)
    max_queue: int = Field(default=100, ge=1)
    poll_seconds: float = Field(default=0.2, gt=0)
    # /docs, /redoc and /openapi.json answer without a token even when auth is on.
    public_docs: bool = False
    # A worker exits after this many jobs, or when its memory is above this after a job; the pool
    # starts a fresh one (TensorFlow and the converters keep memory they do not give back).
    worker_max_jobs: int = Field(default=20, ge=1)
    worker_max_rss_mb: int = Field(default=2048, ge=64)
    # Where each export's convert and verify steps run (docs/security.md, "Sandbox"): "required" (in
    # bubblewrap; exports are refused where it cannot start), "auto" (bubblewrap, else a child
    # process under the limits only) or "off" (in the worker process itself).
    sandbox: Literal["required", "auto", "off"] = "required"
    sandbox_bwrap: str = "bwrap"
    sandbox_cpu_seconds: int = Field(default=900, ge=1)
    sandbox_memory_mb: int = Field(default=4096, ge=64)
    sandbox_wall_seconds: float = Field(default=1800.0, ge=1)

    @model_validator(mode="after")
    def _visibility_outlasts_an_export(self) -> ServiceSettings:
        # A job still running when the visibility timeout ends is delivered to a second worker;
        # the store refuses that claim, but the message would run again and again.
        if self.runner == "celery" and self.broker_visibility_seconds <= self.sandbox_wall_seconds:
            raise ValueError(
                f"broker_visibility_seconds ({self.broker_visibility_seconds:g}) must be longer than the longest "
                f"export (sandbox_wall_seconds, {self.sandbox_wall_seconds:g})"
            )
        return self

    @field_validator("import_roots", "output_roots")
    @classmethod
    def _absolute(cls, roots: list[Path]) -> list[Path]:
        return [Path(root).expanduser().resolve() for root in roots]

    @field_validator("project_output_roots")
    @classmethod
    def _absolute_per_project(cls, roots: dict[str, list[Path]]) -> dict[str, list[Path]]:
        return {project: [Path(root).expanduser().resolve() for root in folders] for project, folders in roots.items()}

    def output_roots_for(self, project: str) -> list[Path]:
        """The folders a project's local exports may be written under."""
        if project in self.project_output_roots:
            return self.project_output_roots[project]
        return self.output_roots

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'exporter.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return (self.data_dir / "models").resolve()

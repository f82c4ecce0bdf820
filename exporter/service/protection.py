"""The service's sandbox setting: the Sandbox each export runs in, and what /healthz says of it."""

from __future__ import annotations

from exporter.core.errors import Code, ExportError
from exporter.sandbox import LIMITS_ONLY, Limits, Sandbox
from exporter.service.settings import ServiceSettings


def _sandbox(settings: ServiceSettings, isolation: str) -> Sandbox:
    limits = Limits(
        cpu_seconds=settings.sandbox_cpu_seconds,
        memory_mb=settings.sandbox_memory_mb,
        wall_seconds=settings.sandbox_wall_seconds,
    )
    return Sandbox(isolation=isolation, bwrap=settings.sandbox_bwrap, limits=limits)


def resolve(settings: ServiceSettings) -> tuple[Sandbox | None, str | None]:
    """The sandbox the setting gives here, and why bubblewrap cannot start (None when it can)."""
    if settings.sandbox == "off":
        return None, None
    sandbox = _sandbox(settings, "bubblewrap")
    reason = sandbox.unavailable()
    if reason and settings.sandbox == "auto":
        return _sandbox(settings, LIMITS_ONLY), reason
    return (None if reason else sandbox), reason


def export_sandbox(settings: ServiceSettings) -> Sandbox | None:
    """The sandbox an export of an imported model runs in; FAILED_PRECONDITION when the setting
    requires bubblewrap and it cannot start."""
    sandbox, reason = resolve(settings)
    if settings.sandbox == "required" and sandbox is None:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"exports of imported models must run in the sandbox (EXPORTER_SANDBOX=required), which cannot "
            f"start here: {reason}; install bubblewrap, or set EXPORTER_SANDBOX=auto or off",
        )
    return sandbox


def describe(settings: ServiceSettings) -> dict:
    """The protection exports run under, for /healthz."""
    sandbox, reason = resolve(settings)
    if sandbox is None:
        why = "EXPORTER_SANDBOX=off" if settings.sandbox == "off" else f"EXPORTER_SANDBOX=required: {reason}"
        return {"mode": "off", "setting": settings.sandbox, "reason": why, "exportsRefused": settings.sandbox != "off"}
    described = {**sandbox.describe(), "setting": settings.sandbox}
    if reason:
        described["reason"] = f"bubblewrap cannot start: {reason}"
    return described

"""The command line's service verbs: `exporter serve`, `exporter models ...`, `exporter operations ...`.

They talk to a running service over HTTP (``--server`` or ``EXPORTER_SERVER``); errors come back
as ExportErrors, which the CLI prints as its one line.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from exporter.core.errors import Code, ExportError

SERVER = Annotated[str, typer.Option(envvar="EXPORTER_SERVER", help="the service's base URL")]
PARENT = Annotated[str, typer.Option(help="projects/PROJECT/locations/LOCATION")]
models_app = typer.Typer(no_args_is_help=True, help="Models of a running service.")
operations_app = typer.Typer(no_args_is_help=True, help="Operations of a running service.")


def _client(server: str):
    from exporter.service.client import ServiceClient

    return ServiceClient(server)


def _print_json(payload) -> None:
    print(json.dumps(payload, indent=2))


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: EXPORTER_WORKERS or 2)")] = None,
) -> None:
    """Run the REST service (AutoML v1beta1 paths) with its supervised worker processes."""
    import uvicorn

    from exporter.service.app import create_app
    from exporter.service.settings import ServiceSettings

    settings = ServiceSettings() if workers is None else ServiceSettings(workers=workers)
    if settings.auth_file is None and not is_loopback(host):
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"refusing to listen on {host} without auth: set EXPORTER_AUTH_FILE, or listen on 127.0.0.1",
        )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def worker(
    queues: Annotated[
        str | None,
        typer.Option(help="comma-separated queues (default: every format this machine can build)"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="the worker's name (default: host, pid and a random part)")] = None,
) -> None:
    """Run a Celery worker for a fleet (EXPORTER_RUNNER=celery): it takes export jobs from the
    broker (EXPORTER_BROKER_URL) and records them in the shared store (EXPORTER_DATABASE_URL)."""
    from exporter.service.celery_worker import queues_here, start_worker
    from exporter.service.settings import ServiceSettings

    settings = ServiceSettings()
    if settings.database_url is None:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            "a fleet worker needs the shared store: set EXPORTER_DATABASE_URL (postgresql+psycopg://...)",
        )
    chosen = [q.strip() for q in queues.split(",") if q.strip()] if queues else queues_here()
    start_worker(settings, chosen, name)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@models_app.command("import")
def models_import(
    source: Annotated[str, typer.Argument(help="the model folder, on the server's file system")],
    parent: PARENT = "projects/local/locations/local",
    model_id: Annotated[str | None, typer.Option(help="the model id (default: generated)")] = None,
    display_name: Annotated[str | None, typer.Option(help="overrides the manifest's")] = None,
    model_type: Annotated[str | None, typer.Option(help="overrides the manifest's")] = None,
    server: SERVER = "http://127.0.0.1:8080",
) -> None:
    """Register a model folder with the service."""
    model: dict = {}
    if display_name:
        model["displayName"] = display_name
    if model_type:
        model["imageClassificationModelMetadata"] = {"modelType": model_type}
    body = {"sourceUri": source, **({"modelId": model_id} if model_id else {}), **({"model": model} if model else {})}
    _print_json(_client(server).call("POST", f"{parent}/models:import", body))


@models_app.command("list")
def models_list(parent: PARENT = "projects/local/locations/local", server: SERVER = "http://127.0.0.1:8080") -> None:
    """List the models under PARENT."""
    _print_json(_client(server).call("GET", f"{parent}/models"))


@models_app.command("get")
def models_get(
    name: Annotated[str, typer.Argument(help="projects/P/locations/L/models/M")],
    server: SERVER = "http://127.0.0.1:8080",
) -> None:
    """Show one model."""
    _print_json(_client(server).call("GET", name))


@operations_app.command("list")
def operations_list(
    parent: PARENT = "projects/local/locations/local",
    filter: Annotated[str | None, typer.Option(help="done=true or done=false")] = None,
    server: SERVER = "http://127.0.0.1:8080",
) -> None:
    """List the operations under PARENT."""
    _print_json(_client(server).call("GET", f"{parent}/operations", params={"filter": filter} if filter else None))


@operations_app.command("get")
def operations_get(
    name: Annotated[str, typer.Argument(help="projects/P/locations/L/operations/ID")],
    report: Annotated[bool, typer.Option(help="show the export report instead")] = False,
    server: SERVER = "http://127.0.0.1:8080",
) -> None:
    """Show one operation (or its export report)."""
    _print_json(_client(server).call("GET", f"{name}:exportReport" if report else name))


@operations_app.command("wait")
def operations_wait(
    name: Annotated[str, typer.Argument(help="projects/P/locations/L/operations/ID")],
    timeout: Annotated[float, typer.Option(help="seconds")] = 600,
    server: SERVER = "http://127.0.0.1:8080",
) -> None:
    """Wait until an operation is done; exit 1 when it failed."""
    client = _client(server)
    deadline = time.monotonic() + timeout
    while True:
        left = max(1, min(60, int(deadline - time.monotonic())))
        operation = client.call("POST", f"{name}:wait", {"timeout": f"{left}s"})
        if operation.get("done") or time.monotonic() >= deadline:
            break
    _print_json(operation)
    if "error" in operation:
        error = operation["error"]
        raise ExportError(Code(error.get("code", 2)), error.get("message", ""))
    if not operation.get("done"):
        raise ExportError(Code.DEADLINE_EXCEEDED, f"{name} is not done after {timeout:g} s")


@operations_app.command("cancel")
def operations_cancel(
    name: Annotated[str, typer.Argument(help="projects/P/locations/L/operations/ID")],
    server: SERVER = "http://127.0.0.1:8080",
) -> None:
    """Ask the service to cancel an operation."""
    _client(server).call("POST", f"{name}:cancel", {})
    print(f"cancel requested for {name}")

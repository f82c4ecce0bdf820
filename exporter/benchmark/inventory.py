"""The inventory of remote devices: a small TOML file, one table per device.

    [devices.pi4]
    host = "192.168.1.20"
    port = 22                    # optional
    user = "pi"
    key = "keys/pi4_ed25519"     # private key; relative paths are relative to this file
    known_hosts = "known_hosts"  # optional, default ~/.ssh/known_hosts; the host's key must be in it
    python = "python3"           # optional: the device's Python
    runtime = "tflite_runtime"   # ai_edge_litert or tflite_runtime
    threads = 4                  # optional, default 1
    workdir = "bench"            # optional: the folder the run's temporary folder is made in (default: mktemp's)

Each device is the target ``ssh:<name>``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.core.errors import Code, ExportError

RUNTIMES = ("ai_edge_litert", "tflite_runtime")


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    key: Path
    known_hosts: Path = Path("~/.ssh/known_hosts")
    python: str = "python3"
    runtime: str = Field("ai_edge_litert", pattern="^(" + "|".join(RUNTIMES) + ")$")
    threads: int = Field(1, ge=1, le=256)
    workdir: str | None = None


def load_inventory(path: str | Path) -> list[Device]:
    """The devices of an inventory file; a bad file is one INVALID_ARGUMENT naming the entry."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"--inventory {str(path)!r}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"--inventory {str(path)!r} is not TOML: {error}") from None
    tables = data.get("devices")
    if not isinstance(tables, dict) or not tables:
        raise ExportError(Code.INVALID_ARGUMENT, f"--inventory {str(path)!r}: no [devices.<name>] table")
    devices = []
    for name, table in tables.items():
        try:
            device = Device(name=name, **table)
        except (ValidationError, TypeError) as error:
            problems = (
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
                if isinstance(error, ValidationError)
                else str(error)
            )
            raise ExportError(Code.INVALID_ARGUMENT, f"--inventory device {name!r}: {problems}") from None
        resolve = lambda p: (path.parent / p.expanduser()).resolve()  # noqa: E731
        devices.append(
            device.model_copy(update={"key": resolve(device.key), "known_hosts": resolve(device.known_hosts)})
        )
    return devices

"""A real OpenSSH server (Debian's openssh-server) on a loopback port, standing in for a device.

The server runs as the current user with its own sshd_config, a throwaway host key and a
throwaway client key; only public-key login of the current user is allowed, and SFTP is sshd's
internal one. Fails loudly when sshd is not installed ('make setup' installs it).
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path  # private key the server accepts
    known_hosts: Path  # holds the server's real host key
    host_public_key: str  # "ssh-ed25519 AAAA..."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path) -> list[str]:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().split()[0:2]


def start_sshd(folder: Path):
    """Start sshd in `folder`; returns (SshServer, process). Stop it with process.terminate()."""
    if not SSHD.exists():
        raise RuntimeError(f"no {SSHD}: install Debian's openssh-server ('make setup' does)")
    folder.mkdir(parents=True, exist_ok=True)
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    host_type, host_blob = keygen(host_key)
    keygen(client_key)
    (folder / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
            ]
        )
        + "\n"
    )
    process = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {process.stdout.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.terminate()
        raise RuntimeError("sshd did not start listening within 15 s")
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_type} {host_blob}\n")
    server = SshServer("127.0.0.1", port, getpass.getuser(), client_key, known_hosts, f"{host_type} {host_blob}")
    return server, process

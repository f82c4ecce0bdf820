"""Remote devices over SSH: copy the artifact, the held-out images and a self-contained runner,
run it there, bring its JSON back, and leave nothing behind.

paramiko rather than the OpenSSH client: its errors are typed (a host key that does not match,
an unknown host, refused authentication, an unreachable address), so each becomes a row's reason
without parsing a client's messages, and SFTP copies need no second program. Host key checking is
always on: the device's key must be in the inventory's known_hosts file. The runners
(runners/tflite_runner.py, onnx_runner.py, openvino_runner.py) need only Python, numpy and the
device's TFLite runtime, onnxruntime or OpenVINO, and compute accuracy and agreement there, so a
runtime that differs on the device shows in its row.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from exporter.benchmark.inventory import Device
from exporter.benchmark.targets.base import (
    RUNNERS,
    Artifact,
    NotRunnable,
    RunnerFailed,
    Target,
    Workload,
    parse_runner_output,
    tflite_feed,
)

CONNECT_SECONDS = 10
RUN_SECONDS = 1800
NOT_FOUND_STATUS = 127  # the shell's status for a command it cannot find
# The formats a device runs: the runner that times each, and the artifact files it reads (the first
# is the model it is given).
DEVICE_RUNNERS = {
    "tflite": ("tflite_runner.py", ("model.tflite",)),
    "onnx": ("onnx_runner.py", ("model.onnx",)),
    "openvino": ("openvino_runner.py", ("model.xml", "model.bin")),
}


def _fingerprint(key) -> str:
    return f"{key.get_name()} {key.get_fingerprint().hex(':')}"


@dataclass
class SshDevice(Target):
    device: Device = field(default=None)  # type: ignore[assignment]

    @property
    def where(self) -> str:
        return f"device {self.device.name} ({self.device.user}@{self.device.host}:{self.device.port})"

    def connect(self):
        import paramiko

        device = self.device
        if not device.known_hosts.is_file():
            raise NotRunnable(f"{self.where}: no known_hosts file at {device.known_hosts} (host key checking is on)")
        client = paramiko.SSHClient()
        client.load_host_keys(str(device.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                device.host,
                port=device.port,
                username=device.user,
                key_filename=str(device.key),
                timeout=CONNECT_SECONDS,
                banner_timeout=CONNECT_SECONDS,
                auth_timeout=CONNECT_SECONDS,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException as error:
            client.close()
            raise NotRunnable(
                f"{self.where}: host key mismatch: the host offered {_fingerprint(error.key)}, "
                f"{device.known_hosts} holds {_fingerprint(error.expected_key)}; not connecting"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise NotRunnable(f"{self.where}: authentication with the key {device.key} was refused") from None
        except paramiko.SSHException as error:  # RejectPolicy's unknown host, a broken handshake
            client.close()
            raise NotRunnable(f"{self.where}: {error}") from None
        except OSError as error:  # refused, no route, timed out, name not resolved
            client.close()
            reason = error.strerror or str(error) or type(error).__name__
            raise NotRunnable(f"{self.where} is unreachable: {reason}") from None
        return client

    def check(self) -> None:
        self.connect().close()

    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        client = self.connect()
        try:
            folder = self._make_folder(client)
            try:
                return self._run_in(client, folder, artifact, workload)
            finally:
                self._remove_folder(client, folder)
        finally:
            client.close()

    def _exec(self, client, command: str, timeout: float = CONNECT_SECONDS * 3) -> tuple[int, str, str]:
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out, err

    def _make_folder(self, client) -> str:
        where = f" -p {shlex.quote(self.device.workdir)}" if self.device.workdir else ""
        status, out, err = self._exec(client, f"mktemp -d{where} exporter-benchmark.XXXXXXXX")
        if status != 0:
            raise RunnerFailed(f"{self.where}: could not make a temporary folder: {err.strip()[-200:]}")
        return out.strip()

    def _remove_folder(self, client, folder: str) -> None:
        status, _, err = self._exec(client, f"rm -rf -- {shlex.quote(folder)} && test ! -e {shlex.quote(folder)}")
        if status != 0:
            raise RunnerFailed(f"{self.where}: could not remove {folder}: {err.strip()[-200:]}")

    def _run_in(self, client, folder: str, artifact: Artifact, workload: Workload) -> dict:
        device = self.device
        runner, files = DEVICE_RUNNERS[artifact.model_format]
        command = [device.python, runner, files[0], "data", f"--threads={device.threads}"]
        if artifact.model_format == "tflite":
            command += [f"--runtime={device.runtime}", *tflite_feed(artifact.folder / files[0])]
        command += workload.runner_options()
        sftp = client.open_sftp()
        try:
            # Every runner imports tflite_runner's timing, beside it as run.
            for name in dict.fromkeys(("tflite_runner.py", runner)):
                sftp.put(str(RUNNERS / name), f"{folder}/{name}")
            for name in files:
                sftp.put(str(artifact.folder / name), f"{folder}/{name}")
            sftp.mkdir(f"{folder}/data")
            for name in ("pixels.u8", "meta.json"):
                sftp.put(str(workload.data_dir / name), f"{folder}/data/{name}")
        finally:
            sftp.close()
        status, out, err = self._exec(client, f"cd {shlex.quote(folder)} && {shlex.join(command)}", timeout=RUN_SECONDS)
        if status == NOT_FOUND_STATUS:
            raise NotRunnable(f"{self.where}: {device.python} is not found on the device")
        try:
            result = parse_runner_output(status, out, err)
        except NotRunnable as missing:
            raise NotRunnable(f"{self.where}: {missing}") from None
        return {**result, "device": device.name}


def ssh_devices(devices: list[Device]) -> list[SshDevice]:
    return [SshDevice(f"ssh:{device.name}", tuple(DEVICE_RUNNERS), device=device) for device in devices]

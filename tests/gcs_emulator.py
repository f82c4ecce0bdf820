"""gcp-storage-emulator on loopback, for the tests that use gs:// for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service_harness import free_port

EMULATOR = Path(sys.executable).parent / "gcp-storage-emulator"


class StorageEmulator:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(EMULATOR), "start", "--host", "127.0.0.1", "--port", str(self.port), "--in-memory"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, "gcp-storage-emulator exited at start"
            try:
                httpx.get(f"{self.url}/storage/v1/b", timeout=1)
                return
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "gcp-storage-emulator did not come up in 30 s"
                time.sleep(0.2)

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        os.environ["STORAGE_EMULATOR_HOST"] = self.url
        return storage.Client(project="local", credentials=AnonymousCredentials())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

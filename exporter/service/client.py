"""A small HTTP client of the service, for the command line (the official client works too)."""

from __future__ import annotations

from typing import Any

import httpx

from exporter.core.errors import Code, ExportError


class ServiceClient:
    def __init__(self, server: str, timeout: float = 120.0):
        self.http = httpx.Client(base_url=server.rstrip("/"), timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, params: dict | None = None) -> dict:
        try:
            response = self.http.request(method, f"/v1beta1/{path}", json=body, params=params)
        except httpx.HTTPError as error:
            raise ExportError(Code.UNAVAILABLE, f"cannot reach the service at {self.http.base_url}: {error}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code >= 400:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            code = Code.__members__.get(error.get("status", ""), Code.UNKNOWN)
            raise ExportError(code, error.get("message") or f"HTTP {response.status_code}")
        return payload

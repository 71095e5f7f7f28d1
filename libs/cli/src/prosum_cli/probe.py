"""Asking services whether they are ready (``GET /ready``) and saying briefly why not."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Probe:
    ready: bool
    status_code: int | None
    reason: str
    body: dict[str, Any] | None = None

    @property
    def chain_check(self) -> dict[str, Any] | None:
        """The ledger adapter's chain check from its /ready body; None for other services."""
        check = _checks(self.body).get("chain")
        return check if isinstance(check, dict) else None

    @property
    def chain(self) -> str | None:
        """The chain check in brief, e.g. ``evm, height 12``; None for other services."""
        return describe_chain_check(self.chain_check)


def describe_chain_check(check: dict[str, Any] | None) -> str | None:
    if check is None:
        return None
    parts: list[str] = []
    for key in ("backend", "status"):
        value = check.get(key)
        if isinstance(value, str):
            parts.append(value)
    height = check.get("height")
    if isinstance(height, int):
        parts.append(f"height {height}")
    if check.get("ok") is False:
        why = check.get("error") or check.get("detail") or "failing"
        parts.append(_shorten(str(why), 60))
    return ", ".join(parts) if parts else ("ok" if check.get("ok") else "failing")


def _checks(body: dict[str, Any] | None) -> dict[str, Any]:
    checks = (body or {}).get("checks")
    return checks if isinstance(checks, dict) else {}


def _shorten(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failing_checks(body: dict[str, Any] | None) -> str:
    problems: list[str] = []
    for name, check in _checks(body).items():
        if isinstance(check, dict) and check.get("ok") is False:
            why = check.get("error") or check.get("detail") or check.get("status") or "failed"
            problems.append(f"{name}: {why}")
    return "; ".join(problems)


def probe_ready(client: httpx.Client, url: str) -> Probe:
    try:
        response = client.get(f"{url}/ready")
    except httpx.ConnectError:
        return Probe(False, None, "not listening")
    except httpx.TimeoutException:
        return Probe(False, None, "no answer: timed out")
    except httpx.HTTPError as exc:
        return Probe(False, None, _shorten(f"no answer: {type(exc).__name__}"))
    body: dict[str, Any] | None
    try:
        parsed = response.json()
        body = parsed if isinstance(parsed, dict) else None
    except ValueError:
        body = None
    if response.status_code == 200:
        return Probe(True, 200, "ready", body)
    why = failing_checks(body) or f"HTTP {response.status_code}"
    return Probe(False, response.status_code, _shorten(why), body)


def probe_all(urls: Mapping[str, str], *, timeout: float = 2.0) -> dict[str, Probe]:
    """Probe every service at once, so one hung service costs ``timeout`` once, not per service."""
    if not urls:
        return {}
    with (
        httpx.Client(timeout=timeout, trust_env=False) as client,
        ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="probe") as pool,
    ):
        futures = {name: pool.submit(probe_ready, client, url) for name, url in urls.items()}
        return {name: future.result() for name, future in futures.items()}

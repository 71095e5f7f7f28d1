"""Identity's HTTP API: FastAPI routers over the application services."""

from __future__ import annotations

from fastapi import APIRouter

from prosum_identity.entrypoints.http import admin, devices, oauth, participants, thresholds
from prosum_identity.entrypoints.http.api import IdentityApi


def routers(api: IdentityApi) -> list[APIRouter]:
    return [
        oauth.router(api),
        participants.router(api),
        devices.router(api),
        thresholds.router(api),
        admin.router(api),
    ]


__all__ = ["IdentityApi", "routers"]

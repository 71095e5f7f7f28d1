"""Every refusal as a 4xx with ``{"detail": {"reason": ..., "message": ...}}``, the shape
``prosum_auth.http`` uses, whatever raised it: a malformed body, a domain rule, a credential."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from prosum_identity.application.keys import SigningKeyUnavailable
from prosum_identity.domain.errors import IdentityError, Refusal
from prosum_identity.entrypoints.http.schemas import ErrorResponse
from prosum_platform.domain import DomainRuleViolation

log = logging.getLogger(__name__)

STATUS = {
    Refusal.INVALID: 422,
    Refusal.UNAUTHENTICATED: 401,
    Refusal.FORBIDDEN: 403,
    Refusal.NOT_FOUND: 404,
    Refusal.CONFLICT: 409,
    Refusal.GONE: 410,
    Refusal.RATE_LIMITED: 429,
}


def error_response(
    status: int,
    reason: str,
    message: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    detail: dict[str, Any] = {"reason": reason, "message": message}
    if errors is not None:
        detail["errors"] = errors
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and what: the input itself may be a secret.
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in exc.errors()
    ]


class IdentityRoute(APIRoute):
    """Routes whose refusals come out in the one error shape (FastAPI's own exception handlers
    belong to the app, which the platform makes; a route class is the service's to choose)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                return error_response(
                    422,
                    "request_invalid",
                    "the request does not have the documented shape",
                    errors=_field_errors(exc),
                )
            except IdentityError as exc:
                headers = (
                    {"Retry-After": str(exc.retry_after_s)}
                    if exc.retry_after_s is not None
                    else None
                )
                return error_response(STATUS[exc.kind], exc.reason, exc.detail, headers=headers)
            except DomainRuleViolation as exc:
                return error_response(409, exc.reason, exc.detail)
            except SigningKeyUnavailable as exc:
                log.error("identity: cannot sign: %s", exc)
                return error_response(503, "signing_unavailable", str(exc))

        return guarded


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the refusals a route can answer with."""
    meaning = {
        401: "no valid credential (access token, or the device's signature)",
        403: "the credential does not allow this",
        404: "no such resource",
        409: "the current state does not allow it",
        410: "it expired",
        422: "the body or a parameter is malformed (reason request_invalid), or its content is "
        "refused (another reason)",
        429: "too many requests; retry after the Retry-After header's seconds",
        503: "identity cannot sign right now",
    }
    return {status: {"model": ErrorResponse, "description": meaning[status]} for status in statuses}

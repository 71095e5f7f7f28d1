"""Metering's HTTP API.

Ingestion needs a threshold with ``submit_readings`` in ``X-Prosum-Threshold``. Reading data
needs a bearer access token (scope ``ops``, or ``participant`` with a participant id) or a
threshold with ``read_data``. Refusals answer ``{"detail": {"reason": ..., "message": ...}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from prosum_auth import AuthError, TokenVerifier
from prosum_auth.http import THRESHOLD_HEADER, bearer, http_error
from prosum_metering.application.access import AccessDenied, InvalidQuery, NotFound, Requester
from prosum_metering.application.batches import BatchService
from prosum_metering.application.corrections import CorrectionService
from prosum_metering.application.ingest import (
    IngestService,
    Item,
    ItemResult,
    SubmissionResult,
    Submitter,
)
from prosum_metering.application.queries import DataService
from prosum_metering.domain.model import Decision
from prosum_metering.domain.readings import MAX_REGISTER_WH, Reason, parse_utc
from prosum_metering.entrypoints.csv_format import CsvError, parse_csv
from prosum_platform.domain import DomainRuleViolation

T = TypeVar("T")

READING_FORMAT = f"""
A **signed reading** is the state of a meter's two cumulative registers at the end of a
15-minute interval:

| field | type | meaning |
|---|---|---|
| `device_id` | string | the device (registered in identity) that measured and signed it |
| `metering_point` | string, 1-64 printable characters | the metering point the device measures |
| `interval_end` | RFC 3339 UTC (`Z` or `+00:00`) | end of the interval, on the 15-minute grid (`:00`, `:15`, `:30`, `:45`, zero seconds), not in the future |
| `import_wh` | integer, 0 to {MAX_REGISTER_WH} | OBIS 1-0:1.8.0, Wh taken from the grid, cumulative |
| `export_wh` | integer, 0 to {MAX_REGISTER_WH} | OBIS 1-0:2.8.0, Wh fed into the grid, cumulative |
| `signature` | base64url, no padding, 86 characters | Ed25519 signature by the device key |

No other fields are allowed; numbers must be JSON integers (not `1.0`, not strings).

**What the device signs**: the UTF-8 bytes of these six lines joined by a single `\\n`
(0x0A), with no trailing newline:

```
prosum-reading-v1
<device_id>
<metering_point>
<interval_end as YYYY-MM-DDTHH:MM:SSZ>
<import_wh in decimal, no sign, no leading zeros>
<export_wh in decimal, no sign, no leading zeros>
```

The timestamp is signed in that canonical form whatever form was sent (`+00:00` is signed
as `Z`). The **reading hash** is `SHA-256(0x00 || those bytes || the 64 signature bytes)` in
lowercase hex: the reading's address in this API and its leaf in its batch's Merkle tree.

**Rules**: the signature verifies with the device's key as registered in identity; the device
is not revoked and measures that metering point; the device belongs to the threshold's
participant (and measures the threshold's metering point, if it names one); registers never
go backwards, also for late readings between known ones; between two readings neither
register rises by more than `rating_w x hours between them` Wh (`rating_w / 4` per interval).
The same reading again is a `duplicate` (accepted, changes nothing); a different reading for
a metering point and time already held is a `conflicting_duplicate`, refused and kept as a
conflict for ops to resolve.

**Intervals**: an interval is measured once the readings at both of its ends are in (the
first reading of a metering point is its baseline). Net surplus = export - import, floored
at 0, is minted to the owner once per metering point and interval (command id
`mint:<metering point>:<YYYYMMDDTHHMMZ>`), with evidence hash
`SHA-256(0x02 || start reading hash || end reading hash)`. Missing readings are reported as
gaps and never filled in.

**Refusal reasons**: `malformed`, `off_grid`, `in_future`, `unknown_device`,
`device_revoked`, `wrong_metering_point`, `not_covered_by_threshold`, `signature_invalid`,
`register_backwards`, `implausible`, `conflicting_duplicate`.
"""

READING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "device_id",
        "metering_point",
        "interval_end",
        "import_wh",
        "export_wh",
        "signature",
    ],
    "properties": {
        "device_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"},
        "metering_point": {"type": "string", "minLength": 1, "maxLength": 64},
        "interval_end": {
            "type": "string",
            "format": "date-time",
            "description": "UTC, on the 15-minute grid",
            "example": "2026-06-01T12:15:00Z",
        },
        "import_wh": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_REGISTER_WH,
            "description": "OBIS 1-0:1.8.0 register, Wh",
        },
        "export_wh": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_REGISTER_WH,
            "description": "OBIS 1-0:2.8.0 register, Wh",
        },
        "signature": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{85}[AQgw]$",
            "description": "Ed25519 over the canonical bytes, base64url without padding",
        },
    },
}

_ERROR = {"description": "refused: `{detail: {reason, message}}`"}
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid credential"},
    403: {"description": "the credential does not allow this"},
}
_INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_AUTH_RESPONSES,
    400: {"description": "the body is not JSON (or not UTF-8 CSV with the right header)"},
    413: {"description": "the body or the number of readings exceeds the limit"},
    415: {"description": "wrong content type"},
}

ThresholdHeader = Annotated[
    str | None,
    Header(alias=THRESHOLD_HEADER, description="threshold (submit_readings or read_data)"),
]
Authorization = Annotated[
    str | None, Header(description="Bearer access token (ops, or participant)")
]

# Status of a refused single reading, by reason.
_SINGLE_STATUS = {Reason.NOT_COVERED: 403, Reason.CONFLICTING_DUPLICATE: 409}


class Resolve(BaseModel):
    decision: Decision = Field(
        description="keep_held: the held reading stays; take_submitted: it is superseded"
    )
    note: str = Field(default="", max_length=500)


@dataclass
class MeteringApi:
    ingest: IngestService
    data: DataService
    batches: BatchService
    corrections: CorrectionService
    verifier: TokenVerifier
    max_request_bytes: int
    max_readings: int


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _refuse(status: int, reason: str, message: str) -> HTTPException:
    return HTTPException(status, detail={"reason": reason, "message": message})


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run blocking work (database, signatures) off the event loop, mapping refusals."""
    try:
        return await anyio.to_thread.run_sync(fn)
    except AuthError as error:
        raise http_error(error) from None
    except AccessDenied as denied:
        raise _refuse(403, denied.reason, denied.detail) from None
    except NotFound as missing:
        status = 409 if missing.reason == "not_sealed" else 404
        raise _refuse(status, missing.reason, missing.detail) from None
    except InvalidQuery as invalid:
        raise _refuse(422, invalid.reason, invalid.detail) from None
    except DomainRuleViolation as violation:
        raise _refuse(409, violation.reason, violation.detail) from None


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _refuse(413, "request_too_large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _refuse(413, "request_too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _content_type(request: Request, *accepted: str) -> None:
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if (
        given
        and given not in accepted
        and not (given.endswith("+json") and "application/json" in accepted)
    ):
        raise _refuse(415, "unsupported_media_type", f"send {' or '.join(accepted)}")


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _refuse(400, "malformed_json", f"the body is not JSON: {exc}") from None


def _time(text: str, name: str) -> int:
    try:
        moment, fraction = parse_utc(text)
    except Exception as exc:
        raise _refuse(422, "invalid_range", f"{name}: {exc}") from None
    if fraction:
        raise _refuse(422, "invalid_range", f"{name} must be whole seconds")
    return moment


def build_router(api: MeteringApi) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["metering"])
    verifier = api.verifier

    def submitter(threshold: str | None) -> Submitter:
        found = verifier.threshold(threshold, "submit_readings")
        return Submitter(found.participant_id, found.metering_point or None, found.threshold_id)

    def requester(authorization: str | None, threshold: str | None) -> Requester:
        token = bearer(authorization)
        if token:
            claims = verifier.access(token)
            if "ops" in claims.scopes:
                return Requester(f"ops:{claims.subject}", ops=True)
            if "participant" in claims.scopes and claims.participant_id:
                return Requester(claims.subject, participant_id=claims.participant_id)
            raise AuthError(403, "insufficient_scope", "needs scope ops or participant")
        if threshold:
            found = verifier.threshold(threshold, "read_data")
            return Requester(f"threshold:{found.threshold_id}", participant_id=found.participant_id)
        raise AuthError(
            401, "credential_missing", "send a bearer access token or a read_data threshold"
        )

    def ops(authorization: str | None) -> str:
        return verifier.access(bearer(authorization), "ops").subject

    async def _submit(
        request: Request,
        threshold: str | None,
        parse: Callable[[bytes], list[Item]],
        fmt: str,
    ) -> SubmissionResult:
        who = await _in_thread(lambda: submitter(threshold))
        body = await _body(request, api.max_request_bytes)
        items = await anyio.to_thread.run_sync(parse, body)
        return await _in_thread(partial(api.ingest.submit, who, items, fmt))

    @router.post(
        "/readings",
        summary="Submit one signed reading",
        description=READING_FORMAT
        + "\n\nAnswers 201 when the reading was accepted, 200 when it was a duplicate of one "
        "already held, and 4xx with the reason when it was refused (409 for a conflicting "
        "duplicate, 403 when the threshold does not cover the device, 422 otherwise).",
        status_code=201,
        responses={
            **_INGEST_RESPONSES,
            200: {"description": "a duplicate: the same reading is already held"},
            409: {"description": "a conflicting duplicate (reported to ops as a conflict)"},
            422: _ERROR,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": READING_SCHEMA}},
            }
        },
    )
    async def submit_one(request: Request, threshold: ThresholdHeader = None) -> Response:
        _content_type(request, "application/json")

        def parse(body: bytes) -> list[Item]:
            return [Item(0, _parse_json(body))]

        result = await _submit(request, threshold, parse, "json")
        outcome: ItemResult = result.results[0]
        body = {"submission_id": result.submission_id, **outcome.as_dict("index")}
        if outcome.status == "accepted":
            return _json(body, 201)
        if outcome.status == "duplicate":
            return _json(body, 200)
        status = _SINGLE_STATUS.get(outcome.reason or "", 422)
        detail: dict[str, Any] = {"reason": outcome.reason, "message": outcome.detail}
        if outcome.conflict_id:
            detail["conflict_id"] = outcome.conflict_id
        return _json({"detail": detail, "submission_id": result.submission_id}, status)

    @router.post(
        "/readings/batch",
        summary="Submit many signed readings (JSON)",
        description='`{"readings": [reading, ...]}` (or the bare array), up to the configured '
        "number per request (10,000 by default). Each reading is judged on its own: the answer "
        "lists, by `index` (from 0), whether it was accepted, a duplicate or rejected with "
        "its reason; the good readings are kept whatever happens to the others.\n\n"
        + READING_FORMAT,
        responses=_INGEST_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["readings"],
                            "properties": {"readings": {"type": "array", "items": READING_SCHEMA}},
                        }
                    }
                },
            }
        },
    )
    async def submit_batch(request: Request, threshold: ThresholdHeader = None) -> Response:
        _content_type(request, "application/json")

        def parse(body: bytes) -> list[Item]:
            payload = _parse_json(body)
            if isinstance(payload, dict) and set(payload) == {"readings"}:
                payload = payload["readings"]
            if not isinstance(payload, list):
                raise _refuse(422, "malformed", 'send {"readings": [...]} or an array')
            if len(payload) > api.max_readings:
                raise _refuse(
                    413, "too_many_readings", f"at most {api.max_readings} readings per request"
                )
            return [Item(i, raw) for i, raw in enumerate(payload)]

        result = await _submit(request, threshold, parse, "json")
        return _json(result.summary("index"))

    @router.post(
        "/readings/csv",
        summary="Back-fill signed readings from CSV",
        description="`text/csv`, UTF-8. The first line names the columns `device_id, "
        "metering_point, interval_end, import_wh, export_wh, signature` (any order); each "
        "further line is one reading, registers as decimal integers. Every line that cannot "
        "be used is reported by its `line` number (the header is line 1) with the reason; the "
        "good lines are kept.\n\n" + READING_FORMAT,
        responses=_INGEST_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        },
    )
    async def submit_csv(request: Request, threshold: ThresholdHeader = None) -> Response:
        _content_type(request, "text/csv", "application/csv")

        def parse(body: bytes) -> list[Item]:
            try:
                return parse_csv(body, api.max_readings)
            except CsvError as exc:
                raise _refuse(400, "malformed_csv", str(exc)) from None
            except OverflowError as exc:
                raise _refuse(413, "too_many_readings", str(exc)) from None

        result = await _submit(request, threshold, parse, "csv")
        return _json(result.summary("line"))

    @router.get(
        "/readings/{reading_hash}",
        summary="A reading by its hash (owner, counterparties, ops)",
        description="Served to the reading's owner, to ops, and to participants that traded "
        "with the owner in an interval the reading bounds; 403 for anyone else.",
        responses={**_AUTH_RESPONSES, 404: _ERROR},
    )
    async def get_reading(
        reading_hash: str, authorization: Authorization = None, threshold: ThresholdHeader = None
    ) -> Response:
        return _json(
            await _in_thread(
                lambda: api.data.reading(requester(authorization, threshold), reading_hash)
            )
        )

    @router.get(
        "/readings/{reading_hash}/proof",
        summary="Merkle proof that a reading is in an anchored batch (public)",
        description="The path from the reading hash to its batch's root, and where the root "
        "was anchored. Hashing: leaf = SHA-256(0x00 || canonical bytes || signature), node = "
        "SHA-256(0x01 || left || right), an odd last node carried up. 409 `not_sealed` until "
        "the reading's batch is sealed.",
        responses={404: _ERROR, 409: _ERROR},
    )
    async def get_proof(reading_hash: str) -> Response:
        return _json(await _in_thread(lambda: api.data.proof(reading_hash)))

    @router.get(
        "/evidence/{evidence_hash}",
        summary="The readings behind a mint's evidence hash (owner, counterparties, ops)",
        responses={**_AUTH_RESPONSES, 404: _ERROR},
    )
    async def get_evidence(
        evidence_hash: str, authorization: Authorization = None, threshold: ThresholdHeader = None
    ) -> Response:
        return _json(
            await _in_thread(
                lambda: api.data.evidence(requester(authorization, threshold), evidence_hash)
            )
        )

    @router.get("/batches/{batch_id}", summary="A sealed batch: root, size, anchoring (public)")
    async def get_batch(batch_id: str) -> Response:
        return _json(await _in_thread(lambda: api.data.batch(batch_id)))

    @router.post(
        "/batches/{batch_id}/anchor",
        summary="Anchor a batch again after the ledger refused it (ops)",
        status_code=202,
        responses={**_AUTH_RESPONSES, 409: _ERROR},
    )
    async def retry_anchor(batch_id: str, authorization: Authorization = None) -> Response:
        def run() -> dict[str, Any]:
            ops(authorization)
            return {"batch_id": batch_id, "command_id": api.batches.retry_anchor(batch_id)}

        return _json(await _in_thread(run), 202)

    @router.get(
        "/intervals",
        summary="Measured intervals of a metering point (owner and ops; counterparties see "
        "the intervals they traded)",
        responses={**_AUTH_RESPONSES, 404: _ERROR, 422: _ERROR},
    )
    async def get_intervals(
        metering_point: str,
        start: Annotated[str, Query(alias="from", description="RFC 3339 UTC, inclusive")],
        end: Annotated[str, Query(alias="to", description="RFC 3339 UTC, exclusive")],
        authorization: Authorization = None,
        threshold: ThresholdHeader = None,
    ) -> Response:
        first, last = _time(start, "from"), _time(end, "to")
        return _json(
            await _in_thread(
                lambda: api.data.intervals(
                    requester(authorization, threshold), metering_point, first, last
                )
            )
        )

    @router.get(
        "/gaps",
        summary="Gaps of a metering point: spans without readings, never filled in",
        responses={**_AUTH_RESPONSES, 404: _ERROR},
    )
    async def get_gaps(
        metering_point: str, authorization: Authorization = None, threshold: ThresholdHeader = None
    ) -> Response:
        return _json(
            await _in_thread(
                lambda: api.data.gaps(requester(authorization, threshold), metering_point)
            )
        )

    @router.get("/conflicts", summary="Conflicting duplicates (ops)", responses=_AUTH_RESPONSES)
    async def get_conflicts(
        status: Annotated[str | None, Query(pattern="^(open|kept|replaced)$")] = None,
        authorization: Authorization = None,
    ) -> Response:
        def run() -> dict[str, Any]:
            ops(authorization)
            return api.data.conflicts(status)

        return _json(await _in_thread(run))

    @router.post(
        "/conflicts/{conflict_id}/resolve",
        summary="Resolve a conflicting duplicate (ops)",
        description="`keep_held` leaves everything as it is. `take_submitted` supersedes the "
        "held reading (kept on record) and re-measures the two intervals it bounds; each is "
        "reported as `metering.interval_adjusted`. A mint already decided is never repeated.",
        responses={**_AUTH_RESPONSES, 409: _ERROR},
    )
    async def resolve_conflict(
        conflict_id: str, body: Resolve, authorization: Authorization = None
    ) -> Response:
        def run() -> dict[str, Any]:
            who = ops(authorization)
            resolution = api.corrections.resolve(conflict_id, body.decision, who, body.note)
            return {
                "conflict_id": resolution.conflict_id,
                "decision": resolution.decision,
                "adjustments": list(resolution.adjustments),
            }

        return _json(await _in_thread(run))

    return router

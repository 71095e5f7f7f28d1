"""Request and response bodies of identity's HTTP API (the OpenAPI document is made from
these). Requests refuse unknown fields, and amounts are strict integers: ``"100"`` or ``1e3``
is not a number of watt-hours."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
MeteringPoint = Annotated[str, Field(min_length=1, max_length=64)]
Reason = Annotated[str, Field(max_length=500)]
WattHours = Annotated[int, Field(strict=True, ge=0, le=2**62)]
Ecoin = Annotated[int, Field(strict=True, ge=0, le=2**62)]
RoleName = Literal["producer", "consumer", "prosumer", "operator"]
DeviceKindName = Literal["smart_meter", "home_gateway", "ev_charger", "battery"]
ActionName = Literal["bid", "ask", "submit_readings", "read_data"]
ScopeName = Literal["ops", "partner", "participant"]
PublicKey = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{43}$",
        description="raw 32-byte Ed25519 public key, base64url without padding",
        examples=["11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"],
    ),
]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    reason: str = Field(description="stable machine-readable code", examples=["dact_mismatch"])
    message: str = Field(description="what exactly was wrong, for people")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="for request_invalid: each field that failed and why"
    )


class ErrorResponse(BaseModel):
    detail: ErrorDetail


class OAuthErrorResponse(BaseModel):
    """RFC 6749 section 5.2."""

    error: Literal[
        "invalid_request",
        "invalid_client",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    ]
    error_description: str


# -- tokens and keys ----------------------------------------------------------------------------


class TokenResponse(BaseModel):
    access_token: str = Field(description="a signed JWT (typ at+jwt, alg EdDSA)")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - RFC 6750 token type
    expires_in: int = Field(description="seconds until the token expires")
    scope: str = Field(description="the granted scopes, space-separated")


class Jwk(BaseModel):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    use: Literal["sig"]
    alg: Literal["EdDSA"]


class JwkSet(BaseModel):
    keys: list[Jwk]


class SigningKeyOut(BaseModel):
    kid: str
    status: Literal["pending", "active", "retired", "removed"]
    public_key: str
    created_at: datetime
    activates_at: datetime = Field(description="from when it signs")
    remove_after: datetime | None = Field(
        description="retired keys: when it is unpublished (every token it signed has expired)"
    )


class RotationOut(BaseModel):
    kid: str = Field(description="the new key")
    keys: list[SigningKeyOut]


# -- participants ---------------------------------------------------------------------------------


class LimitsBody(Request):
    max_order_wh: WattHours = Field(description="largest single order, Wh")
    max_open_wh: WattHours = Field(description="most volume in open orders, Wh")
    max_ecoin: Ecoin = Field(description="most ecoin one order may be worth")


class ParticipantRegistration(Request):
    participant_id: Id | None = Field(
        default=None,
        description="your id for the participant; identity makes one when left out. "
        "Registering the same id with the same data again answers 200 with the first "
        "registration; with other data, 409.",
    )
    name: Annotated[str, Field(min_length=1, max_length=200)]
    role: RoleName
    metering_point: MeteringPoint = Field(description="the metering point it trades for")
    limits: LimitsBody | None = Field(
        default=None, description="its thresholds' limits; the service defaults when left out"
    )


class ReasonBody(Request):
    reason: Reason = ""


class LimitsChange(Request):
    limits: LimitsBody | None = Field(description="null: back to the service defaults")


class LimitsOut(BaseModel):
    max_order_wh: int
    max_open_wh: int
    max_ecoin: int


class ParticipantOut(BaseModel):
    participant_id: str
    name: str
    role: RoleName
    metering_point: str
    status: Literal["pending", "active", "grant_failed", "suspended", "closed"]
    status_reason: str
    pending_command_id: str | None = Field(
        description="the ledger command identity waits for (grant or revoke)"
    )
    limits: LimitsOut | None = Field(description="its own limits; null: the defaults apply")
    effective_limits: LimitsOut = Field(description="what its thresholds get")
    registered_at: datetime
    updated_at: datetime
    version: int


class ParticipantPage(BaseModel):
    items: list[ParticipantOut]
    next_after: str | None = Field(description="pass as ?after= for the next page; null: last")


# -- devices ----------------------------------------------------------------------------------------


class DeviceRegistration(Request):
    device_id: Id = Field(description="the device's identity of things (IDoT), e.g. serial")
    kind: DeviceKindName
    public_key: PublicKey
    metering_point: MeteringPoint = Field(description="must be the participant's")
    rating_w: Annotated[int, Field(strict=True, ge=1, le=100_000_000)] = Field(
        description="rated power in W; bounds plausible readings"
    )
    dact: dict[str, Any] | None = Field(
        default=None, description="its DACT, to register it now (else PUT .../dact later)"
    )


class DactBody(Request):
    dact: dict[str, Any] = Field(
        description="the DACT document; see the thresholds section for its exact format"
    )


class DeviceOut(BaseModel):
    device_id: str
    participant_id: str
    kind: DeviceKindName
    public_key: str
    metering_point: str
    rating_w: int
    status: Literal["active", "revoked"]
    dact_sha256: str | None = Field(description="the registered form of its DACT")
    dact_actions: list[ActionName]
    dact_registered_at: datetime | None
    registered_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


# -- challenges and thresholds ----------------------------------------------------------------------


class ChallengeOut(BaseModel):
    challenge_id: str
    device_id: str
    nonce: str = Field(description="32 random bytes, base64url")
    issued_at: datetime
    expires_at: datetime = Field(description="answer before this; a challenge answers once")
    message: str = Field(
        description="the exact text to sign (UTF-8), for the DACT registered for the device: "
        "prosum.threshold-request.v1, challenge_id, nonce, device_id and the DACT's sha256 "
        "hex, joined by \\n"
    )


class ThresholdRequestBody(Request):
    device_id: Id
    challenge_id: Id
    signature: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Ed25519 signature of the message, base64url without padding (86 chars)"
    )
    dact: dict[str, Any] = Field(description="the device's DACT, as registered")
    actions: list[ActionName] | None = Field(
        default=None,
        description="ask for fewer actions than the DACT and role allow (least privilege)",
    )


class ThresholdOut(BaseModel):
    threshold: str = Field(
        description="the signed threshold (JWT, typ threshold+jwt); send it to other services "
        "as the X-Prosum-Threshold header"
    )
    threshold_id: str
    participant_id: str
    device_id: str
    metering_point: str
    actions: list[ActionName]
    limits: LimitsOut
    issued_at: datetime
    expires_at: datetime
    kid: str = Field(description="the signing key")


class ThresholdRecord(BaseModel):
    threshold_id: str
    participant_id: str
    device_id: str
    metering_point: str
    actions: list[ActionName]
    limits: LimitsOut
    kid: str
    issued_at: datetime
    expires_at: datetime
    status: Literal["valid", "expired", "revoked"]
    revoked_at: datetime | None
    revoke_reason: str | None


# -- clients ------------------------------------------------------------------------------------------


class ClientCreate(Request):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: Annotated[list[ScopeName], Field(min_length=1)]
    participant_id: Id | None = Field(
        default=None, description="binds a participant-scope client to its participant"
    )


class ClientOut(BaseModel):
    client_id: str
    name: str
    scopes: list[ScopeName]
    participant_id: str | None
    status: Literal["active", "disabled"]
    created_at: datetime
    secret_rotated_at: datetime | None
    disabled_at: datetime | None


class ClientSecretOut(BaseModel):
    client_id: str
    client_secret: str = Field(description="shown this once; identity keeps only a hash")

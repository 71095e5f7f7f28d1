"""The DACT (device access control token) and the message a device signs for a threshold.

Song (2019): the certification node requires the device to present a DACT made of its identity
of things (IDoT), matches it against the DACT registered in advance and, on a match, hands out a
threshold. In prosum:

**The DACT** is a JSON object with exactly these members::

    {
      "dact": 1,                              format version
      "device_id": "meter-0042",              the device (IDoT)
      "participant_id": "p-7",                whose device it is
      "kind": "smart_meter",                  smart_meter | home_gateway | ev_charger | battery
      "metering_point": "DE000123...",        the metering point it measures
      "actions": ["ask", "submit_readings"],  what it may do; sorted, no repeats, not empty
      "public_key": "<43 chars>"              its Ed25519 key: raw 32 bytes, base64url, no padding
    }

Its **canonical form** is the RFC 8785 (JCS) serialisation, which for this document is: members
sorted by name, no whitespace, strings as UTF-8 with JSON's minimal escapes, the version as a
plain integer. The **registered form** is ``sha256(canonical form)`` in lowercase hex: identity
keeps only that digest (and, for operators, the actions). When asking for a threshold the device
presents the DACT; identity recomputes the digest, compares it with the registered one and
checks that the key inside is the device's key.

**The signed message** proves possession of the key for one challenge and one DACT. It is the
UTF-8 encoding of five lines joined by ``\\n`` (no trailing newline)::

    prosum.threshold-request.v1
    <challenge_id>
    <nonce>
    <device_id>
    <sha256 hex of the presented DACT's canonical form>

signed with the device's Ed25519 key; the signature travels base64url-encoded without padding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prosum_identity.domain.errors import IdentityError, invalid
from prosum_identity.domain.model import (
    ALL_ACTIONS,
    DeviceKind,
    check_id,
    check_metering_point,
)

DACT_VERSION = 1
DACT_MEMBERS = frozenset(
    {"dact", "device_id", "participant_id", "kind", "metering_point", "actions", "public_key"}
)
REQUEST_CONTEXT = "prosum.threshold-request.v1"
PUBLIC_KEY_LENGTH = 32
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
SIGNATURE_LENGTH = 64


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, expected_length: int, what: str) -> bytes:
    """Strict base64url without padding, of exactly ``expected_length`` bytes."""
    if len(text) != -(-expected_length * 4 // 3) or not _B64URL.match(text):
        raise invalid(
            f"{what}_malformed",
            f"{what} must be {expected_length} bytes, base64url-encoded without padding",
        )
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise invalid(f"{what}_malformed", f"{what} is not base64url") from None
    if len(raw) != expected_length or b64url(raw) != text:
        raise invalid(f"{what}_malformed", f"{what} does not encode {expected_length} bytes")
    return raw


def public_key_bytes(text: str) -> bytes:
    return b64url_decode(text, PUBLIC_KEY_LENGTH, "public_key")


def canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Dact:
    device_id: str
    participant_id: str
    kind: str
    metering_point: str
    actions: tuple[str, ...]
    public_key: str

    @classmethod
    def from_document(cls, document: object) -> Dact:
        """Read a presented or registered DACT; anything that is not exactly the format is
        refused (``dact_malformed``), so one DACT has exactly one canonical form."""
        if not isinstance(document, Mapping):
            raise _malformed("the DACT must be a JSON object")
        members = set(document)
        if members != DACT_MEMBERS:
            missing, extra = DACT_MEMBERS - members, members - DACT_MEMBERS
            raise _malformed(f"members missing: {sorted(missing)}, unknown: {sorted(extra)}")
        version = document["dact"]
        if isinstance(version, bool) or version != DACT_VERSION:
            raise _malformed(f"unsupported DACT version {version!r} (expected {DACT_VERSION})")
        strings = ("device_id", "participant_id", "kind", "metering_point", "public_key")
        for name in strings:
            if not isinstance(document[name], str):
                raise _malformed(f"{name} must be a string")
        actions = document["actions"]
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise _malformed("actions must be a list of strings")
        if not actions:
            raise _malformed("actions must not be empty")
        if unknown := set(actions) - ALL_ACTIONS:
            raise _malformed(f"unknown actions {sorted(unknown)}")
        if actions != sorted(set(actions)):
            raise _malformed("actions must be sorted and without repeats")
        if document["kind"] not in {k.value for k in DeviceKind}:
            raise _malformed(f"unknown device kind {document['kind']!r}")
        try:
            check_id(document["device_id"], "device_id")
            check_id(document["participant_id"], "participant_id")
            check_metering_point(document["metering_point"])
            public_key_bytes(document["public_key"])
        except IdentityError as exc:
            raise _malformed(exc.detail) from None
        return cls(
            device_id=document["device_id"],
            participant_id=document["participant_id"],
            kind=document["kind"],
            metering_point=document["metering_point"],
            actions=tuple(actions),
            public_key=document["public_key"],
        )

    def document(self) -> dict[str, Any]:
        return {
            "dact": DACT_VERSION,
            "device_id": self.device_id,
            "participant_id": self.participant_id,
            "kind": self.kind,
            "metering_point": self.metering_point,
            "actions": list(self.actions),
            "public_key": self.public_key,
        }

    def canonical(self) -> bytes:
        return canonical_json(self.document())

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def threshold_request_message(
    challenge_id: str, nonce: str, device_id: str, dact_digest: str
) -> bytes:
    """The exact bytes a device signs to ask for a threshold (see the module docstring)."""
    return "\n".join((REQUEST_CONTEXT, challenge_id, nonce, device_id, dact_digest)).encode()


def _malformed(detail: str) -> Exception:
    return invalid("dact_malformed", detail)

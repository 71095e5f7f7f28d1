"""The DACT: one canonical form, its digest, strict reading; and the exact signed message."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from prosum_identity.domain.dact import Dact, threshold_request_message
from prosum_identity.domain.errors import IdentityError

KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "dact": 1,
        "device_id": "meter-0042",
        "participant_id": "p-7",
        "kind": "smart_meter",
        "metering_point": "DE0001234",
        "actions": ["ask", "submit_readings"],
        "public_key": KEY,
    }
    doc.update(changes)
    return doc


def test_the_canonical_form_is_sorted_compact_utf8() -> None:
    dact = Dact.from_document(document())
    assert dact.canonical() == (
        b'{"actions":["ask","submit_readings"],"dact":1,"device_id":"meter-0042",'
        b'"kind":"smart_meter","metering_point":"DE0001234","participant_id":"p-7",'
        b'"public_key":"' + KEY.encode() + b'"}'
    )
    assert dact.digest() == hashlib.sha256(dact.canonical()).hexdigest()


def test_member_order_and_whitespace_do_not_change_the_digest() -> None:
    shuffled = json.loads(json.dumps(dict(reversed(list(document().items()))), indent=4))
    assert Dact.from_document(shuffled).digest() == Dact.from_document(document()).digest()


def test_non_ascii_is_written_as_utf8_not_escaped() -> None:
    dact = Dact.from_document(document(metering_point="Zählpunkt-1"))
    assert "Zählpunkt-1".encode() in dact.canonical()


def test_any_change_changes_the_digest() -> None:
    base = Dact.from_document(document()).digest()
    assert Dact.from_document(document(actions=["ask"])).digest() != base
    assert Dact.from_document(document(metering_point="DE0001235")).digest() != base


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ("not an object", "must be a JSON object"),
        ({k: v for k, v in document().items() if k != "public_key"}, "missing"),
        (document(extra="x"), "unknown"),
        (document(dact=2), "version"),
        (document(dact=True), "version"),
        (document(actions=["submit_readings", "ask"]), "sorted"),
        (document(actions=["ask", "ask"]), "sorted"),
        (document(actions=["ask", "steal"]), "unknown actions"),
        (document(actions=[]), "empty"),
        (document(actions="ask"), "list"),
        (document(kind="toaster"), "kind"),
        (document(public_key=KEY[:-1]), "public_key"),
        (document(public_key=KEY + "="), "public_key"),
        (document(public_key="!" * 43), "public_key"),
        (document(device_id=" spaced"), "device_id"),
        (document(participant_id=7), "string"),
    ],
)
def test_anything_but_the_exact_format_is_malformed(doc: object, why: str) -> None:
    with pytest.raises(IdentityError) as refused:
        Dact.from_document(doc)
    assert refused.value.reason == "dact_malformed"
    assert why in refused.value.detail


def test_the_signed_message_is_five_lines_without_a_trailing_newline() -> None:
    digest = "ab" * 32
    assert threshold_request_message("ch-1", "nonce", "meter-0042", digest) == (
        b"prosum.threshold-request.v1\nch-1\nnonce\nmeter-0042\n" + digest.encode()
    )

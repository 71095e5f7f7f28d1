"""Metering's HTTP API as wired by its bootstrap (migrated SQLite store, identity events applied
as the consumer applies them): every bad input answers with its own 4xx or rejection record,
good readings of a bad batch are kept, and data is served only to those entitled."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prosum_contracts import Envelope
from prosum_metering.adapters.store import unit_of_work
from prosum_metering.application.batches import BatchService
from prosum_metering.bootstrap import DEFINITION
from prosum_metering.entrypoints.consumers import metering_handlers
from prosum_platform.service import Platform, build_platform, create_app
from prosum_platform.service.migrations import upgrade
from prosum_platform.settings import ServiceSettings
from tests.unit.metering.meters import (
    INTERVAL,
    Identity,
    Meter,
    identity,
    onboarding,
    revoked_device,
    trade,
    utc,
)

TODAY = int(time.time()) // 86_400 * 86_400
T = TODAY - 86_400  # yesterday 00:00 UTC: every reading of the day is in the past
MAX_BYTES = 100_000
MAX_READINGS = 200


class Api:
    def __init__(self, client: TestClient, platform: Platform, identity_: Identity) -> None:
        self.client = client
        self.platform = platform
        self.identity = identity_
        self._handlers = metering_handlers()

    def deliver(self, *envelopes: Envelope) -> None:
        for envelope in envelopes:
            with self.platform.store.transaction() as tx:
                if tx.record_processed("metering", envelope.event_id):
                    self._handlers[envelope.type](envelope, tx)

    def post(self, meter: Meter, body: Any, path: str = "/v1/readings", **headers: str) -> Any:
        return self.client.post(
            path,
            json=body,
            headers={"X-Prosum-Threshold": self.identity.threshold(meter), **headers},
        )

    def csv(self, meter: Meter, text: str) -> Any:
        return self.client.post(
            "/v1/readings/csv",
            content=text.encode(),
            headers={
                "X-Prosum-Threshold": self.identity.threshold(meter),
                "Content-Type": "text/csv",
            },
        )


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path / 'metering.db'}"
    for name, value in {
        "PROSUM_DB_URL": url,
        "PROSUM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "PROSUM_METERING_VERIFY_WORKERS": "0",
        "PROSUM_METERING_MAX_REQUEST_BYTES": str(MAX_BYTES),
        "PROSUM_METERING_MAX_READINGS_PER_REQUEST": str(MAX_READINGS),
    }.items():
        monkeypatch.setenv(name, value)
    upgrade("prosum_metering", url)
    platform = build_platform(DEFINITION, ServiceSettings("metering"))
    # No lifespan: the routes run, the relay and consumers do not.
    client = TestClient(create_app(DEFINITION, platform, run_relay=False, run_consumers=False))
    who = Identity()
    service = Api(client, platform, who)
    service.deliver(who.keys_changed())
    try:
        yield service
    finally:
        platform.engine.dispose()


@pytest.fixture
def meter(api: Api) -> Meter:
    producer = Meter("meter-1", "MP-1", "seller-1", rating_w=8_000)  # 2,000 Wh per interval
    api.deliver(*onboarding(producer))
    return producer


def refusal(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["detail"]["reason"]


def test_a_reading_is_accepted_once_and_a_repeat_is_a_duplicate(api: Api, meter: Meter) -> None:
    first = api.post(meter, meter.reading(T, 100, 0))
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "accepted" and len(body["reading_hash"]) == 64
    again = api.post(meter, meter.reading(T, 100, 0))
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert again.json()["reading_hash"] == body["reading_hash"]


# -- bad input, one each -----------------------------------------------------------------------


def test_bad_signature(api: Api, meter: Meter) -> None:
    forged = meter.reading(T, 100, 0) | {"export_wh": 5}
    assert refusal(api.post(meter, forged)) == (422, "signature_invalid")


def test_signed_by_another_key(api: Api, meter: Meter) -> None:
    impostor = Meter(meter.device_id, meter.metering_point, meter.participant_id)
    assert refusal(api.post(meter, impostor.reading(T, 100, 0))) == (422, "signature_invalid")


def test_unknown_device(api: Api, meter: Meter) -> None:
    unknown = Meter("meter-unknown", "MP-1", "seller-1")
    assert refusal(api.post(meter, unknown.reading(T, 100, 0))) == (422, "unknown_device")


def test_revoked_device(api: Api, meter: Meter) -> None:
    threshold = api.identity.threshold(meter)
    api.deliver(revoked_device(meter))
    response = api.client.post(
        "/v1/readings", json=meter.reading(T, 100, 0), headers={"X-Prosum-Threshold": threshold}
    )
    # identity revokes the device's thresholds with it: the request is refused at the door.
    assert refusal(response) == (403, "device_revoked")


def test_revoked_device_in_a_gateway_batch(api: Api, meter: Meter) -> None:
    gateway = Meter("gateway-1", "MP-1", "seller-1")
    api.deliver(
        identity(
            "device_registered",
            "seller-1",
            device_id="gateway-1",
            participant_id="seller-1",
            kind="home_gateway",
            public_key=gateway.public_key,
            metering_point="MP-1",
            rating_w=8_000,
        )
    )
    api.deliver(revoked_device(meter))
    response = api.client.post(
        "/v1/readings",
        json=meter.reading(T, 100, 0),
        headers={"X-Prosum-Threshold": api.identity.threshold(gateway)},
    )
    assert refusal(response) == (422, "device_revoked")


def test_device_of_another_metering_point(api: Api, meter: Meter) -> None:
    response = api.post(meter, meter.reading(T, 100, 0, metering_point="MP-2"))
    assert refusal(response) == (422, "wrong_metering_point")


def test_device_not_covered_by_the_threshold(api: Api, meter: Meter) -> None:
    other = Meter("meter-2", "MP-2", "seller-2")
    api.deliver(*onboarding(other))
    response = api.post(meter, other.reading(T, 100, 0))
    assert refusal(response) == (403, "not_covered_by_threshold")


def test_missing_threshold(api: Api, meter: Meter) -> None:
    response = api.client.post("/v1/readings", json=meter.reading(T, 100, 0))
    assert refusal(response) == (401, "credential_missing")


def test_threshold_without_submit_readings(api: Api, meter: Meter) -> None:
    threshold = api.identity.threshold(meter, actions=("read_data",))
    response = api.client.post(
        "/v1/readings", json=meter.reading(T, 100, 0), headers={"X-Prosum-Threshold": threshold}
    )
    assert refusal(response) == (403, "action_not_allowed")


def test_threshold_from_an_unknown_key(api: Api, meter: Meter) -> None:
    forger = Identity(kid=api.identity.kid)
    response = api.client.post(
        "/v1/readings",
        json=meter.reading(T, 100, 0),
        headers={"X-Prosum-Threshold": forger.threshold(meter)},
    )
    assert refusal(response) == (401, "signature_invalid")


def test_revoked_threshold(api: Api, meter: Meter) -> None:
    threshold = api.identity.threshold(meter, threshold_id="th-revoked")
    api.deliver(
        identity(
            "threshold_revoked", "seller-1", threshold_id="th-revoked", participant_id="seller-1"
        )
    )
    response = api.client.post(
        "/v1/readings", json=meter.reading(T, 100, 0), headers={"X-Prosum-Threshold": threshold}
    )
    assert refusal(response) == (403, "threshold_revoked")


def test_an_access_token_is_not_a_threshold(api: Api, meter: Meter) -> None:
    response = api.client.post(
        "/v1/readings",
        json=meter.reading(T, 100, 0),
        headers={"X-Prosum-Threshold": api.identity.participant_token("seller-1")},
    )
    assert refusal(response) == (401, "wrong_credential_type")


def test_register_going_backwards(api: Api, meter: Meter) -> None:
    assert api.post(meter, meter.reading(T, 500, 500)).status_code == 201
    response = api.post(meter, meter.reading(T + INTERVAL, 499, 600))
    assert refusal(response) == (422, "register_backwards")


def test_timestamp_off_the_grid(api: Api, meter: Meter) -> None:
    response = api.post(meter, meter.reading(T, 1, 0, interval_end=utc(T + 60)))
    assert refusal(response) == (422, "off_grid")


def test_timestamp_in_the_future(api: Api, meter: Meter) -> None:
    future = (int(time.time()) // INTERVAL + 2) * INTERVAL
    assert refusal(api.post(meter, meter.reading(future, 1, 0))) == (422, "in_future")


def test_implausible_value(api: Api, meter: Meter) -> None:
    assert api.post(meter, meter.reading(T, 0, 0)).status_code == 201
    assert refusal(api.post(meter, meter.reading(T + INTERVAL, 0, 2_001))) == (422, "implausible")


def test_conflicting_duplicate(api: Api, meter: Meter) -> None:
    assert api.post(meter, meter.reading(T, 100, 0)).status_code == 201
    response = api.post(meter, meter.reading(T, 101, 0))
    assert refusal(response) == (409, "conflicting_duplicate")
    conflict_id = response.json()["detail"]["conflict_id"]
    listed = api.client.get(
        "/v1/conflicts", headers={"Authorization": f"Bearer {api.identity.ops_token()}"}
    ).json()["conflicts"]
    assert [c["conflict_id"] for c in listed] == [conflict_id]


def test_malformed_json(api: Api, meter: Meter) -> None:
    response = api.client.post(
        "/v1/readings",
        content=b'{"device_id": ',
        headers={
            "X-Prosum-Threshold": api.identity.threshold(meter),
            "Content-Type": "application/json",
        },
    )
    assert refusal(response) == (400, "malformed_json")


def test_malformed_reading(api: Api, meter: Meter) -> None:
    assert refusal(api.post(meter, meter.reading(T, 1, 0) | {"import_wh": 1.5})) == (
        422,
        "malformed",
    )


def test_wrong_content_type(api: Api, meter: Meter) -> None:
    response = api.client.post(
        "/v1/readings",
        content=b"device_id=x",
        headers={
            "X-Prosum-Threshold": api.identity.threshold(meter),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert refusal(response) == (415, "unsupported_media_type")


def test_oversized_request(api: Api, meter: Meter) -> None:
    big = [meter.reading(T, 0, 0)] * 600  # ~150 KB of JSON: over the limit in bytes
    response = api.post(meter, {"readings": big}, path="/v1/readings/batch")
    assert refusal(response) == (413, "request_too_large")


def test_oversized_request_without_a_length(api: Api, meter: Meter) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 4096

    response = api.client.post(
        "/v1/readings/batch",
        content=chunks(),
        headers={
            "X-Prosum-Threshold": api.identity.threshold(meter),
            "Content-Type": "application/json",
        },
    )
    assert refusal(response) == (413, "request_too_large")


def test_too_many_readings(api: Api, meter: Meter) -> None:
    response = api.post(meter, {"readings": [{}] * (MAX_READINGS + 1)}, path="/v1/readings/batch")
    assert refusal(response) == (413, "too_many_readings")


# -- batches and CSV: each bad item reported by position, the good ones kept -------------------


def test_a_batch_keeps_the_good_readings_and_reports_each_bad_one(api: Api, meter: Meter) -> None:
    good = [meter.reading(T + k * INTERVAL, 10 * k, 100 * k) for k in range(4)]
    body = {
        "readings": [
            good[0],
            {"device_id": "meter-1"},
            good[1] | {"import_wh": 10.0},
            "not a reading",
            good[1],
            good[2] | {"signature": good[3]["signature"]},
            good[2],
            good[3],
        ]
    }
    response = api.post(meter, body, path="/v1/readings/batch")
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (4, 0, 4)
    assert result["intervals_measured"] == 3
    statuses = {r["index"]: (r["status"], r.get("reason")) for r in result["results"]}
    assert statuses == {
        0: ("accepted", None),
        1: ("rejected", "malformed"),
        2: ("rejected", "malformed"),
        3: ("rejected", "malformed"),
        4: ("accepted", None),
        5: ("rejected", "signature_invalid"),
        6: ("accepted", None),
        7: ("accepted", None),
    }


def test_csv_back_fill_reports_bad_rows_by_line_and_keeps_the_rest(api: Api, meter: Meter) -> None:
    rows = [meter.reading(T + k * INTERVAL, 10 * k, 100 * k) for k in range(5)]

    def line(r: dict[str, Any], **change: Any) -> str:
        r = r | change
        return ",".join(
            str(r[c])
            for c in (
                "device_id",
                "metering_point",
                "interval_end",
                "import_wh",
                "export_wh",
                "signature",
            )
        )

    text = "\r\n".join(
        [
            "metering_point,device_id,interval_end,import_wh,export_wh,signature".replace(
                "metering_point,device_id", "device_id,metering_point"
            ),
            line(rows[0]),  # 2
            line(rows[1], import_wh="10.5"),  # 3: not an integer
            "meter-1,MP-1,only-three",  # 4: wrong number of fields
            "",  # 5: blank, skipped
            line(rows[1]),  # 6
            line(rows[2], interval_end=utc(T + 2 * INTERVAL + 300)),  # 7: off the grid
            line(rows[2]),  # 8
            line(rows[3], export_wh=999),  # 9: the signature does not match
            line(rows[4]),  # 10
        ]
    )
    response = api.csv(meter, text + "\r\n")
    assert response.status_code == 200, response.text
    result = response.json()
    rejected = {r["line"]: r["reason"] for r in result["results"] if r["status"] == "rejected"}
    assert rejected == {3: "malformed", 4: "malformed", 7: "off_grid", 9: "signature_invalid"}
    assert [r["line"] for r in result["results"] if r["status"] == "accepted"] == [2, 6, 8, 10]
    assert result["intervals_measured"] == 2  # 0-1, 1-2; 3 is missing: 2-4 is a gap


def test_csv_without_the_header_or_not_utf8_is_refused_whole(api: Api, meter: Meter) -> None:
    assert refusal(api.csv(meter, "a,b,c\n1,2,3\n")) == (400, "malformed_csv")
    response = api.client.post(
        "/v1/readings/csv",
        content=b"device_id\xff",
        headers={"X-Prosum-Threshold": api.identity.threshold(meter), "Content-Type": "text/csv"},
    )
    assert refusal(response) == (400, "malformed_csv")


def test_csv_with_too_many_rows(api: Api, meter: Meter) -> None:
    header = "device_id,metering_point,interval_end,import_wh,export_wh,signature\n"
    row = f"meter-1,MP-1,{utc(T)},1,1,{'A' * 86}\n"
    assert refusal(api.csv(meter, header + row * (MAX_READINGS + 1))) == (413, "too_many_readings")


# -- data by hash: owner, ops and counterparties only -------------------------------------------


def test_readings_and_evidence_are_served_only_to_those_entitled(api: Api, meter: Meter) -> None:
    buyer = Meter("meter-b", "MP-B", "buyer-1")
    stranger = Meter("meter-s", "MP-S", "stranger-1")
    late_buyer = Meter("meter-l", "MP-L", "buyer-2")
    for m in (buyer, stranger, late_buyer):
        api.deliver(*onboarding(m, role="consumer"))
    batch = {
        "readings": [
            meter.reading(T, 0, 0),
            meter.reading(T + INTERVAL, 10, 900),
            meter.reading(T + 2 * INTERVAL, 20, 1_500),
        ]
    }
    results = api.post(meter, batch, path="/v1/readings/batch").json()["results"]
    first, second, third = (r["reading_hash"] for r in results)
    api.deliver(trade("t-1", "seller-1", "buyer-1", T, T + INTERVAL))
    api.deliver(trade("t-2", "seller-1", "buyer-2", T + 5 * INTERVAL, T + 6 * INTERVAL))

    def get(path: str, **headers: str) -> Any:
        return api.client.get(path, headers=headers)

    i = api.identity
    owner_th = {"X-Prosum-Threshold": i.threshold(meter, actions=("read_data",))}
    owner_app = {"Authorization": f"Bearer {i.participant_token('seller-1')}"}
    ops = {"Authorization": f"Bearer {i.ops_token()}"}
    counterparty = {"X-Prosum-Threshold": i.threshold(buyer, actions=("read_data",))}
    other_buyer = {"Authorization": f"Bearer {i.participant_token('buyer-2')}"}
    outsider = {"X-Prosum-Threshold": i.threshold(stranger, actions=("read_data",))}
    partner = {"Authorization": f"Bearer {i.signer.access_token('retailer', ['partner'], 600)}"}

    for headers, why in (
        (owner_th, "owner"),
        (owner_app, "owner"),
        (ops, "ops"),
        (counterparty, "counterparty"),
    ):
        response = get(f"/v1/readings/{second}", **headers)
        assert response.status_code == 200, (why, response.text)
        assert (response.json()["access"], response.json()["export_wh"]) == (why, 900)
    # The trade covers [T, T+15m): the buyer may read the readings at T and T+15m, not T+30m.
    assert get(f"/v1/readings/{first}", **counterparty).status_code == 200
    assert refusal(get(f"/v1/readings/{third}", **counterparty)) == (403, "not_entitled")
    assert refusal(get(f"/v1/readings/{second}", **other_buyer)) == (403, "not_entitled")
    assert refusal(get(f"/v1/readings/{second}", **outsider)) == (403, "not_entitled")
    assert refusal(get(f"/v1/readings/{second}", **partner)) == (403, "insufficient_scope")
    assert refusal(get(f"/v1/readings/{second}")) == (401, "credential_missing")
    assert refusal(get(f"/v1/readings/{'0' * 64}", **ops)) == (404, "unknown_reading")

    evidence = hashlib.sha256(b"\x02" + bytes.fromhex(first) + bytes.fromhex(second)).hexdigest()
    served = get(f"/v1/evidence/{evidence}", **counterparty)
    assert served.status_code == 200
    assert [r["reading_hash"] for r in served.json()["readings"]] == [first, second]
    assert served.json()["surplus_wh"] == 890
    assert refusal(get(f"/v1/evidence/{evidence}", **outsider)) == (403, "not_entitled")

    window = f"/v1/intervals?metering_point=MP-1&from={utc(T)}&to={utc(T + 4 * INTERVAL)}"
    assert len(get(window, **owner_app).json()["intervals"]) == 2
    only_traded = get(window, **counterparty).json()
    assert [x["interval_start"] for x in only_traded["intervals"]] == [utc(T)]
    assert refusal(get(window, **outsider)) == (403, "not_entitled")


def test_a_proof_is_public_once_the_batch_is_sealed(api: Api, meter: Meter) -> None:
    accepted = api.post(meter, meter.reading(T, 100, 0)).json()["reading_hash"]
    assert refusal(api.client.get(f"/v1/readings/{accepted}/proof")) == (409, "not_sealed")
    [batch_id] = BatchService(unit_of_work(api.platform.store), time.time).seal_pending()
    proof = api.client.get(f"/v1/readings/{accepted}/proof").json()
    assert (proof["batch_id"], proof["leaf_count"], proof["path"]) == (batch_id, 1, [])
    assert proof["root"] == accepted
    assert proof["anchor"]["status"] == "pending"
    batch = api.client.get(f"/v1/batches/{batch_id}").json()
    assert batch["root"] == accepted
    retry = api.client.post(
        f"/v1/batches/{batch_id}/anchor",
        headers={"Authorization": f"Bearer {api.identity.ops_token()}"},
    )
    assert refusal(retry) == (409, "anchor_in_progress")


def test_the_openapi_document_defines_the_signed_reading(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    post = spec["paths"]["/v1/readings"]["post"]
    assert "prosum-reading-v1" in post["description"]
    assert "SHA-256(0x00" in post["description"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {
        "device_id",
        "metering_point",
        "interval_end",
        "import_wh",
        "export_wh",
        "signature",
    }
    assert "text/csv" in spec["paths"]["/v1/readings/csv"]["post"]["requestBody"]["content"]
    assert "/v1/readings/{reading_hash}/proof" in spec["paths"]

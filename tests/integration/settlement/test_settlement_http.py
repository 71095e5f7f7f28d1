"""Settlement's HTTP API as ops and participants use it: top-ups and payouts (the paper's
request_ecoin_issue, schedule_ecoin_issue, issue_ecoin), reconciliation, and every refusal."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from prosum_platform.eventstore.schema import outbox
from prosum_platform.runtime.tansu import TansuBroker
from prosum_platform.service import build_platform, create_app
from prosum_platform.service.migrations import upgrade
from prosum_platform.settings import ServiceSettings
from prosum_settlement.adapters.store import unit_of_work
from prosum_settlement.application import services
from prosum_settlement.bootstrap import DEFINITION
from tests.support.identity_keys import IdentityStandIn

pytestmark = [pytest.mark.kafka]


@pytest.fixture
def identity() -> IdentityStandIn:
    return IdentityStandIn()


@pytest.fixture
def app(
    tmp_path: Path, tansu: TansuBroker, monkeypatch: pytest.MonkeyPatch, identity: IdentityStandIn
) -> Iterator[tuple[TestClient, object]]:
    url = f"sqlite:///{tmp_path / 'settlement.db'}"
    monkeypatch.setenv("PROSUM_DB_URL", url)
    monkeypatch.setenv("PROSUM_KAFKA_BOOTSTRAP_SERVERS", tansu.bootstrap)
    monkeypatch.setenv("PROSUM_SETTLEMENT_MAX_REQUEST_AMOUNT", "1000000")
    upgrade("prosum_settlement", url)
    platform = build_platform(DEFINITION, ServiceSettings("settlement"))
    identity.apply(
        platform.store,
        [
            *identity.events_for_keys(),
            identity.status_event("alice", "activated"),
            identity.status_event("bob", "suspended"),
        ],
    )
    with TestClient(
        create_app(DEFINITION, platform, run_consumers=False, run_relay=False)
    ) as client:
        yield client, platform


def sent(platform: object) -> list[dict[str, object]]:
    with platform.engine.connect() as conn:  # type: ignore[attr-defined]
        return [
            orjson.loads(r[0])
            for r in conn.execute(sa.select(outbox.c.payload).order_by(outbox.c.id))
        ]


def test_a_top_up_is_requested_approved_and_minted(
    app: tuple[TestClient, object], identity: IdentityStandIn
) -> None:
    client, platform = app
    body = {"amount": 50_000, "reference": "KB-2026-11-21-0042"}
    created = client.post("/topups", json=body, headers=identity.participant("alice"))
    assert created.status_code == 201, created.text
    request_id = created.json()["request_id"]
    assert created.json()["status"] == "requested"
    again = client.post("/topups", json=body, headers=identity.participant("alice"))
    assert (again.status_code, again.json()["request_id"]) == (200, request_id), (
        "a replayed request is the same request"
    )
    listing = client.get("/topups", params={"status": "requested"}, headers=identity.ops())
    assert [t["request_id"] for t in listing.json()] == [request_id]
    approved = client.post(f"/topups/{request_id}/approve", headers=identity.ops())
    assert approved.json()["status"] == "approved"
    mint = [m for m in sent(platform) if m["type"] == "ledger.mint_ecoin"]
    assert [m["data"] for m in mint] == [
        {
            "command_id": f"topup-{request_id}",
            "participant_id": "alice",
            "amount": 50_000,
            "reference": "KB-2026-11-21-0042",
        }
    ]
    with unit_of_work(platform.store)() as store:  # type: ignore[attr-defined]
        services.apply_funds_outcome(
            store,
            "ledger.command_confirmed",
            {"command_id": f"topup-{request_id}", "tx_id": "0xfeed", "block": 12},
        )
    done = client.get(f"/topups/{request_id}", headers=identity.participant("alice")).json()
    assert (done["status"], done["tx_id"]) == ("completed", "0xfeed")
    twice = client.post(f"/topups/{request_id}/approve", headers=identity.ops())
    assert (twice.status_code, twice.json()["detail"]["reason"]) == (409, "not_open")


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ("none", {"amount": 10, "reference": "r"}, 401, "credential_missing"),
        ("garbage", {"amount": 10, "reference": "r"}, 401, "credential_malformed"),
        ("alice", {"amount": 0, "reference": "r"}, 422, None),
        ("alice", {"amount": 2_000_000, "reference": "r"}, 422, "amount_out_of_range"),
        ("alice", {"amount": 10.5, "reference": "r"}, 422, None),
        ("alice", {"amount": 10}, 422, None),
        (
            "alice",
            {"amount": 10, "reference": "r", "participant_id": "carol"},
            403,
            "not_your_account",
        ),
        ("bob", {"amount": 10, "reference": "r"}, 403, "participant_not_active"),
        ("ops", {"amount": 10, "reference": "r"}, 403, "insufficient_scope"),
    ],
)
def test_bad_top_up_requests_are_refused_and_change_nothing(
    app: tuple[TestClient, object],
    identity: IdentityStandIn,
    headers: str,
    body: dict[str, object],
    status: int,
    reason: str | None,
) -> None:
    client, platform = app
    chosen = {
        "none": {},
        "garbage": {"Authorization": "Bearer not-a-token"},
        "alice": identity.participant("alice"),
        "bob": identity.participant("bob"),
        "ops": identity.ops(),
    }[headers]
    response = client.post("/topups", json=body, headers=chosen)
    assert response.status_code == status, response.text
    if reason:
        assert response.json()["detail"]["reason"] == reason
    assert sent(platform) == []


def test_a_reference_reused_for_another_amount_is_a_conflict(
    app: tuple[TestClient, object], identity: IdentityStandIn
) -> None:
    client, _ = app
    assert (
        client.post(
            "/topups", json={"amount": 10, "reference": "X"}, headers=identity.participant("alice")
        ).status_code
        == 201
    )
    clash = client.post(
        "/topups", json={"amount": 11, "reference": "X"}, headers=identity.participant("alice")
    )
    assert (clash.status_code, clash.json()["detail"]["reason"]) == (409, "reference_reused")


def test_only_ops_approve_and_participants_see_only_their_own(
    app: tuple[TestClient, object], identity: IdentityStandIn
) -> None:
    client, _ = app
    request_id = client.post(
        "/topups", json={"amount": 10, "reference": "Y"}, headers=identity.participant("alice")
    ).json()["request_id"]
    refused = client.post(f"/topups/{request_id}/approve", headers=identity.participant("alice"))
    assert (refused.status_code, refused.json()["detail"]["reason"]) == (403, "insufficient_scope")
    other = client.get(f"/topups/{request_id}", headers=identity.participant("mallory"))
    assert other.status_code == 403
    assert client.get("/topups/nope", headers=identity.ops()).status_code == 404
    no_reason = client.post(
        f"/topups/{request_id}/reject", json={"reason": " "}, headers=identity.ops()
    )
    assert (no_reason.status_code, no_reason.json()["detail"]["reason"]) == (422, "reason_required")
    rejected = client.post(
        f"/topups/{request_id}/reject",
        json={"reason": "no deposit arrived"},
        headers=identity.ops(),
    )
    assert rejected.json()["status"] == "rejected"


def test_a_payout_needs_the_balance_and_is_burned_then_paid(
    app: tuple[TestClient, object], identity: IdentityStandIn
) -> None:
    client, platform = app
    too_much = client.post(
        "/payouts",
        json={"amount": 10, "reference": "IBAN-1"},
        headers=identity.participant("alice"),
    )
    assert (too_much.status_code, too_much.json()["detail"]["reason"]) == (
        409,
        "insufficient_ecoin",
    )
    with unit_of_work(platform.store)() as store:  # type: ignore[attr-defined]
        services.record_balance(
            store, {"participant_id": "alice", "energy_wh": 0, "ecoin": 500, "block": 4}
        )
    created = client.post(
        "/payouts",
        json={"amount": 400, "reference": "IBAN-1"},
        headers=identity.participant("alice"),
    )
    request_id = created.json()["request_id"]
    second = client.post(
        "/payouts",
        json={"amount": 200, "reference": "IBAN-2"},
        headers=identity.participant("alice"),
    )
    assert (second.status_code, second.json()["detail"]["reason"]) == (
        409,
        "insufficient_ecoin",
    ), "400 of the 500 are asked for already"
    assert "400" in second.json()["detail"]["message"]
    client.post(f"/payouts/{request_id}/approve", headers=identity.ops())
    assert not [m for m in sent(platform) if m["type"] == "ledger.burn_ecoin"]
    with unit_of_work(platform.store)() as store:  # type: ignore[attr-defined]
        services.payout_cover_held(
            store, {"request_id": request_id, "participant_id": "alice", "amount": 400}
        )
    assert [m["data"]["amount"] for m in sent(platform) if m["type"] == "ledger.burn_ecoin"] == [
        400
    ]
    early = client.post(
        f"/payouts/{request_id}/paid", json={"bank_reference": "W-1"}, headers=identity.ops()
    )
    assert (early.status_code, early.json()["detail"]["reason"]) == (409, "not_payable")
    with unit_of_work(platform.store)() as store:  # type: ignore[attr-defined]
        services.apply_funds_outcome(
            store,
            "ledger.command_confirmed",
            {"command_id": f"payout-{request_id}", "tx_id": "0x1", "block": 5},
        )
    paid = client.post(
        f"/payouts/{request_id}/paid", json={"bank_reference": "W-1"}, headers=identity.ops()
    )
    assert paid.json()["status"] == "paid"
    assert (
        client.get("/balances/alice", headers=identity.participant("alice")).json()["ecoin"] == 500
    )
    assert client.get("/balances/alice", headers=identity.participant("bob")).status_code == 403


def test_reconciliation_through_the_api(
    app: tuple[TestClient, object], identity: IdentityStandIn
) -> None:
    client, platform = app
    empty = client.post("/reconciliations", headers=identity.ops())
    assert (empty.status_code, empty.json()["detail"]["reason"]) == (409, "nothing_to_reconcile")
    with unit_of_work(platform.store)() as store:  # type: ignore[attr-defined]
        services.record_balance(
            store, {"participant_id": "alice", "energy_wh": 1, "ecoin": 2, "block": 4}
        )
    run = client.post("/reconciliations", headers=identity.ops()).json()["run_id"]
    with unit_of_work(platform.store)() as store:  # type: ignore[attr-defined]
        services.finish_reconciliation(
            store,
            {
                "command_id": f"reconcile-{run}",
                "block": 4,
                "balances": [{"participant_id": "alice", "energy_wh": 1, "ecoin": 2}],
                "total_supply": {"energy_wh": 1, "ecoin": 2},
            },
        )
    result = client.get(f"/reconciliations/{run}", headers=identity.ops()).json()
    assert (result["status"], result["checked"], result["differences"]) == ("clean", 1, [])
    assert client.get("/reconciliations", headers=identity.participant("alice")).status_code == 403


def test_ready_reports_the_fee_account_until_it_is_active(
    app: tuple[TestClient, object], identity: IdentityStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Trades fail on chain while the fee account was never onboarded: /ready says so (without
    failing: ops onboards it once the services are up) and startup logged a warning."""
    client, platform = app
    for _ in range(100):  # the startup check runs beside the app
        if any("at startup" in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.02)
    [warning] = [r for r in caplog.records if "at startup" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "'operator'" in warning.getMessage()
    assert "unknown" in warning.getMessage()
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    fee = ready.json()["checks"]["fee_account"]
    assert (fee["ok"], fee["participant_id"], fee["status"], fee["active"]) == (
        True,
        "operator",
        "unknown",
        False,
    )
    assert "onboards" in fee["warning"]
    identity.apply(platform.store, [identity.status_event("operator", "registered")])  # type: ignore[attr-defined]
    assert client.get("/ready").json()["checks"]["fee_account"]["status"] == "pending"
    identity.apply(platform.store, [identity.status_event("operator", "activated")])  # type: ignore[attr-defined]
    fee = client.get("/ready").json()["checks"]["fee_account"]
    assert fee == {"ok": True, "participant_id": "operator", "status": "active", "active": True}


def test_ops_see_failures_and_batches_and_ready_reports_those_the_ledger_has_not_answered(
    app: tuple[TestClient, object], identity: IdentityStandIn
) -> None:
    client, platform = app
    with unit_of_work(platform.store)() as s:  # type: ignore[attr-defined]
        for n in range(2):
            services.record_trade(
                s,
                {
                    "trade_id": f"t{n}",
                    "market_id": "m-1",
                    "delivery_start": "2026-11-22T10:00:00Z",
                    "seller": "alice",
                    "buyer": "carol",
                    "quantity_wh": 1_000,
                    "value_ecoin": 250,
                    "fee_ecoin": 3,
                },
            )
        batch = services.open_batch(s, services.BatchPolicy(window_s=0.0))
    with unit_of_work(platform.store)() as s:  # type: ignore[attr-defined]
        services.apply_batch_outcome(
            s,
            "ledger.command_failed",
            {
                "command_id": f"settle-{batch}",
                "reason": "insufficient_energy",
                "chain_message": "alice has 0 Wh",
                "trade_id": "t1",
            },
            services.BatchPolicy(),
        )
        batch = services.open_batch(s, services.BatchPolicy(window_s=0.0))  # t0, again
    [failure] = client.get("/failures", headers=identity.ops()).json()
    assert (failure["trade_id"], failure["reason"]) == ("t1", "insufficient_energy")
    assert client.get("/failures", headers=identity.participant("alice")).status_code == 403
    listing = client.get("/batches", params={"status": "submitted"}, headers=identity.ops())
    assert listing.status_code == 200, listing.text
    [found] = listing.json()
    assert (found["batch_id"], found["trade_ids"], found["resends"]) == (batch, ["t0"], 0)
    assert "command" not in found
    assert client.get("/batches", headers=identity.participant("alice")).status_code == 403
    report = client.get("/ready").json()["checks"]["batches"]
    assert (report["ok"], report["awaiting_outcome"], report["overdue"]) == (True, 1, 0)
    assert "warning" not in report

    with platform.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(  # sent two hours ago, and never answered
            sa.text("UPDATE settlement_batches SET created_at = :at"),
            {"at": datetime.now(UTC) - timedelta(hours=2)},
        )
    ready = client.get("/ready")
    assert ready.status_code == 200, "reported, not a reason to take settlement out of service"
    report = ready.json()["checks"]["batches"]
    assert (report["overdue"], report["oldest_s"] > 7000) == (1, True)
    assert batch in report["warning"]

"""Order entry checks every threshold of a group of orders with two queries
(``credential_refusals``); each answer is the one the single check gives (SQLite and
PostgreSQL), and a group with revoked, suspended and good credentials places the good ones."""

from __future__ import annotations

import itertools

from prosum_auth.trust import apply_identity_event
from prosum_contracts import Envelope
from prosum_orderbook.adapters.store import SqlOrderbookStore
from prosum_orderbook.application.entry import NewOrder, OrderRefused
from prosum_orderbook.domain.orders import OrderStatus
from prosum_orderbook.domain.units import parse_price
from tests.integration.orderbook.app import MARKET, App


def _revoke(app: App, kind: str, participant_id: str, credential: str) -> None:
    key = "threshold_id" if kind == "threshold" else "device_id"
    envelope = Envelope(
        f"identity.{kind}_revoked",
        1,
        "identity",
        participant_id,
        {"participant_id": participant_id, key: credential},
    )
    with app.uow() as unit:
        assert isinstance(unit, SqlOrderbookStore)
        apply_identity_event(envelope, unit.tx)


def test_many_credentials_at_once_answer_as_one_by_one(store_url: str) -> None:
    app = App(store_url)
    try:
        for p in ("p1", "p2", "p3"):
            app.fund(p, energy_wh=10_000, ecoin=10_000)
        app.identity("identity.participant_suspended", "p3")
        _revoke(app, "threshold", "p1", "th-bad")
        _revoke(app, "device", "p2", "dev-bad")
        _revoke(app, "threshold", "p2", "th-both")
        _revoke(app, "device", "p2", "dev-both")
        combos = list(
            itertools.product(
                ("th-ok", "th-bad", "th-both"),
                ("dev-ok", "dev-bad", "dev-both"),
                ("p1", "p2", "p3", "p-unknown"),
            )
        )
        with app.uow() as unit:
            together = unit.credential_refusals(combos)
            one_by_one = {c: unit.credential_refusal(*c) for c in combos}
        assert together == one_by_one
        assert together[("th-ok", "dev-ok", "p1")] is None
        assert together[("th-bad", "dev-ok", "p1")] == "threshold_revoked"
        assert together[("th-ok", "dev-bad", "p1")] == "device_revoked"
        assert together[("th-both", "dev-both", "p1")] == "threshold_revoked"
        assert together[("th-ok", "dev-ok", "p3")] == "participant_not_active"
        assert together[("th-ok", "dev-ok", "p-unknown")] == "participant_not_active"
    finally:
        app.close()


def test_a_group_places_the_orders_whose_credentials_stand(store_url: str) -> None:
    app = App(store_url)
    try:
        for p in ("p1", "p2"):
            app.fund(p, energy_wh=10_000, ecoin=10_000)
        _revoke(app, "threshold", "p1", "th-revoked")
        app.identity("identity.participant_suspended", "p2")
        order = NewOrder(MARKET, "sell", parse_price("200"), 100, "gtc")
        results = app.entry.place_many(
            [
                (app.authority("p1"), order),
                (app.authority("p1", threshold="th-revoked"), order),  # type: ignore[arg-type]
                (app.authority("p2"), order),
                (app.authority("p1"), order),
            ]
        )
        assert [getattr(r, "reason", None) for r in results] == [
            None,
            "threshold_revoked",
            "participant_not_active",
            None,
        ]
        assert all(
            r.status == OrderStatus.PENDING for r in results if not isinstance(r, OrderRefused)
        )
    finally:
        app.close()

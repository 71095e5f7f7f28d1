"""Wiring of the settlement service: the one place where its parts meet the platform."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import anyio.to_thread

from prosum_auth import TokenVerifier
from prosum_auth.http import require_scope
from prosum_auth.trust import SqlTrustStore, trust_handlers
from prosum_contracts import Envelope
from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_EVENTS, ORDERBOOK_EVENTS
from prosum_platform.eventstore import Transaction, retry_on_conflict
from prosum_platform.faults import crash_point
from prosum_platform.messaging import Subscription
from prosum_platform.service import ConsumerSpec, Platform, ServiceDefinition, ServiceParts
from prosum_settlement.adapters import queries
from prosum_settlement.adapters.settings import SettlementSettings
from prosum_settlement.adapters.store import SqlSettlementStore, tables, unit_of_work
from prosum_settlement.application import services
from prosum_settlement.entrypoints.http import build_router

log = logging.getLogger(__name__)

BATCHER_LEASE = "settlement-batcher"


def build(platform: Platform) -> ServiceParts:
    settings = SettlementSettings()
    policy = services.BatchPolicy(
        max_trades=settings.batch_max_trades,
        window_s=settings.batch_window_ms / 1000,
        max_in_flight=settings.batches_in_flight,
        max_attempts=settings.max_attempts,
        fee_account=settings.fee_account,
        resend_after_s=settings.batch_resend_s,
    )
    trust = SqlTrustStore(platform.engine)
    verifier = TokenVerifier(trust.keys, trust)
    uow = unit_of_work(platform.store)
    fee_watch = services.FeeAccountWatch(settings.fee_account)

    def on_trade(envelope: Envelope, tx: Transaction) -> None:
        services.record_trade(SqlSettlementStore(tx), envelope.data)

    def on_trades(envelopes: Sequence[Envelope], tx: Transaction) -> None:
        services.record_trades(SqlSettlementStore(tx), [e.data for e in envelopes])

    def on_payout_cover(envelope: Envelope, tx: Transaction) -> None:
        store = SqlSettlementStore(tx)
        if envelope.type == "orderbook.payout_cover_held":
            services.payout_cover_held(store, envelope.data)
        else:
            services.payout_cover_refused(store, envelope.data)

    def on_balances(envelopes: Sequence[Envelope], tx: Transaction) -> None:
        services.record_balances(SqlSettlementStore(tx), [e.data for e in envelopes])

    def on_ledger(envelope: Envelope, tx: Transaction) -> None:
        store = SqlSettlementStore(tx)
        data = envelope.data
        if envelope.type == "ledger.balance_changed":
            services.record_balance(store, data)
        elif envelope.type == "ledger.balances_reported":
            services.finish_reconciliation(store, data)
        elif data["command_id"].startswith(services.SETTLE_PREFIX):
            services.apply_batch_outcome(store, envelope.type, data, policy)
        elif data["command_id"].startswith(("topup-", "payout-")):
            services.apply_funds_outcome(store, envelope.type, data)

    ledger_handlers = dict.fromkeys(
        (
            "ledger.command_confirmed",
            "ledger.command_failed",
            "ledger.balance_changed",
            "ledger.balances_reported",
        ),
        on_ledger,
    )

    async def batcher() -> None:
        holder = f"{socket.gethostname()}:{os.getpid()}"
        # Overdue batches are looked for a few times per resend period, at most once a second.
        resend_every = max(1.0, policy.resend_after_s / 4)
        last_resend = time.monotonic()
        while True:
            try:
                if await anyio.to_thread.run_sync(
                    platform.store.acquire_lease, BATCHER_LEASE, holder, timedelta(seconds=15)
                ):
                    if time.monotonic() - last_resend >= resend_every:
                        last_resend = time.monotonic()
                        await anyio.to_thread.run_sync(lambda: retry_on_conflict(resend))
                    batch = await anyio.to_thread.run_sync(lambda: retry_on_conflict(open_one))
                    if batch is not None:
                        crash_point("settlement.after_batch")
                        continue
            except Exception as exc:
                log.warning("settlement: batcher round failed (%s)", exc)
            await asyncio.sleep(min(policy.window_s / 4, 0.05))

    def open_one() -> str | None:
        with uow() as store:
            return services.open_batch(store, policy, fee_watch)

    def resend() -> list[str]:
        with uow() as store:
            return services.resend_overdue(store, policy) + services.resend_overdue_funds(
                store, policy
            )

    async def fee_account_at_startup() -> None:
        try:
            status = await anyio.to_thread.run_sync(trust.participant_status, settings.fee_account)
        except Exception as exc:
            log.warning("settlement: cannot read the fee account's status (%s)", exc)
            return
        fee_watch.observe(status, "at startup")

    async def fee_account_ready() -> tuple[bool, dict[str, Any]]:
        # Reported, not required: ops onboards the fee account through identity once the
        # services are up, and `prosum up` waits for every /ready first.
        try:
            status = await anyio.to_thread.run_sync(trust.participant_status, settings.fee_account)
        except Exception as exc:
            return True, {"participant_id": settings.fee_account, "error": str(exc)}
        return True, services.fee_account_report(settings.fee_account, status)

    async def batches_ready() -> tuple[bool, dict[str, Any]]:
        # Reported, not required: a batch overdue is the ledger's trouble, and it is sent again.
        report = await anyio.to_thread.run_sync(
            queries.batch_health, platform.engine, policy.resend_after_s
        )
        return True, report

    async def reconciler() -> None:
        if settings.reconcile_every_s == 0:
            return
        last = time.monotonic()
        while True:
            await asyncio.sleep(5)
            if time.monotonic() - last < settings.reconcile_every_s:
                continue
            last = time.monotonic()
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(start_reconciliation)

    def start_reconciliation() -> None:
        with uow() as store:
            services.start_reconciliation(store)

    router = build_router(
        platform,
        settings.max_request_amount,
        require_scope(verifier, "ops", "partner", "participant"),
        require_scope(verifier, "ops"),
        trust.participant_status,
    )
    return ServiceParts(
        routers=[router],
        consumers=[
            ConsumerSpec(
                "settlement-trades",
                Subscription(
                    (ORDERBOOK_EVENTS,),
                    {
                        "orderbook.trade_executed": on_trade,
                        "orderbook.payout_cover_held": on_payout_cover,
                        "orderbook.payout_cover_refused": on_payout_cover,
                    },
                    # A fetch's run of trades becomes instructions with one lookup and one
                    # bulk write.
                    {"orderbook.trade_executed": on_trades},
                ),
            ),
            ConsumerSpec(
                "settlement-ledger",
                Subscription(
                    (LEDGER_EVENTS,), ledger_handlers, {"ledger.balance_changed": on_balances}
                ),
            ),
            ConsumerSpec("settlement-identity", Subscription((IDENTITY_EVENTS,), trust_handlers())),
        ],
        readiness={"fee_account": fee_account_ready, "batches": batches_ready},
        background=[fee_account_at_startup, batcher, reconciler],
        info={"fee_account": settings.fee_account},
    )


DEFINITION = ServiceDefinition(
    name="settlement",
    package="prosum_settlement",
    title="prosum settlement",
    description=(
        "Settlement instructions and their life cycle, ecoin top-ups and payouts, fees, "
        "reconciliation with the chain."
    ),
    default_port=8104,
    build=build,
    tables=tables,
)

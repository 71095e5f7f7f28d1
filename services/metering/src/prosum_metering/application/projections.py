"""What metering keeps of other services' events, and what it does when they arrive.

- identity: participants (role), devices (key, metering point, rating, revoked or not); when
  a participant becomes active, the mints held back for it are requested;
- order book: trades, whose counterparties may read each other's readings of the interval;
- ledger: the outcome of metering's own mint and anchor commands.

Each handler runs in the consumer's transaction, exactly once per event.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from prosum_contracts import parse_timestamp
from prosum_metering.application.batches import apply_anchor_outcome
from prosum_metering.application.ingest import MINT_ENERGY
from prosum_metering.application.ports import Device, MeteringStore
from prosum_metering.domain.minting import mint_command_id, mint_decision
from prosum_metering.domain.model import (
    DeferredMintsReleased,
    MintConfirmed,
    MintFailed,
    MintOutcome,
    MintStatus,
)
from prosum_metering.domain.readings import format_utc


def participant_registered(store: MeteringStore, data: dict[str, Any]) -> None:
    store.upsert_participant(data["participant_id"], data["role"], data["metering_point"])


def device_registered(store: MeteringStore, data: dict[str, Any]) -> None:
    store.upsert_device(
        Device(
            device_id=data["device_id"],
            participant_id=data["participant_id"],
            public_key=base64.urlsafe_b64decode(data["public_key"] + "="),
            metering_point=data["metering_point"],
            rating_w=int(data["rating_w"]),
            active=True,
        ),
        data["kind"],
    )


def device_revoked(store: MeteringStore, data: dict[str, Any]) -> None:
    store.revoke_device(data["device_id"])


def trade_executed(store: MeteringStore, data: dict[str, Any]) -> None:
    store.add_trade(
        data["trade_id"],
        data["seller"],
        data["buyer"],
        int(parse_timestamp(data["delivery_start"]).timestamp()),
        int(parse_timestamp(data["delivery_end"]).timestamp()),
    )


def release_deferred_mints(store: MeteringStore, participant_id: str, cause_id: str) -> int:
    """Request the mints held back while the participant was not active; how many."""
    deferred = store.deferred_mints(participant_id)
    if not deferred:
        return 0
    participant = store.participants([participant_id]).get(participant_id)
    role = participant.role if participant else None
    status = participant.status if participant else None
    decisions: dict[tuple[str, int], tuple[MintStatus, str | None]] = {}
    issued: list[str] = []
    for record in deferred:
        decision = mint_decision(record.mint_wh, role, status)
        if decision is MintStatus.DEFERRED:
            continue
        command_id = record.mint_command_id or mint_command_id(
            record.metering_point, record.interval_start
        )
        decisions[(record.metering_point, record.interval_start)] = (decision, command_id)
        if decision is MintStatus.ISSUED:
            issued.append(command_id)
            store.publish(
                MINT_ENERGY,
                participant_id,
                {
                    "command_id": command_id,
                    "participant_id": participant_id,
                    "amount_wh": record.mint_wh,
                    "evidence_hash": record.mint_evidence_hash or record.evidence_hash,
                    "metering_point": record.metering_point,
                    "interval_start": format_utc(record.interval_start),
                },
            )
    if decisions:
        store.release_mints(
            cause_id,
            DeferredMintsReleased(
                participant_id=participant_id,
                command_ids=tuple(issued),
                released_at=datetime.now(UTC),
            ),
            decisions,
        )
    return len(issued)


def ledger_outcome(store: MeteringStore, confirmed: bool, data: dict[str, Any]) -> None:
    command_id = str(data["command_id"])
    if command_id.startswith("anchor:"):
        apply_anchor_outcome(store, confirmed, data)
    elif command_id.startswith("mint:"):
        if store.mint_outcome(command_id) is not None:
            return
        if store.interval_by_mint(command_id) is None:
            return  # a mint of another service
        outcome: MintConfirmed | MintFailed = (
            MintConfirmed(command_id=command_id, tx_id=str(data["tx_id"]), block=int(data["block"]))
            if confirmed
            else MintFailed(
                command_id=command_id,
                reason=str(data["reason"]),
                message=str(data.get("chain_message", ""))[:2000],
            )
        )
        store.record_mint_outcome(MintOutcome.record(outcome))

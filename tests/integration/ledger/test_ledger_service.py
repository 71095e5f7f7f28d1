"""The ledger adapter as a process: ledger commands in over Kafka, chain transactions on a real
anvil node, outcome events out; across a crash between submitting and recording; with supply
and balances agreeing between the chain and the events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prosum_contracts import Envelope
from prosum_contracts.topics import LEDGER_COMMANDS, LEDGER_EVENTS
from prosum_ledger.adapters.evm import AnvilNode, EvmBackend, EvmConfig
from prosum_ledger.adapters.evm.backend import trade_key
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker
from tests.support.kafka_io import TopicReader, publish
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
HASH = "e3" * 32


def command(kind: str, source: str, subject: str, **data: Any) -> Envelope:
    return Envelope(
        type=f"ledger.{kind}", schema_version=1, source=source, subject=subject, data=data
    )


class Ledger:
    """One ledger adapter deployment: its database, data folder and chain, restartable."""

    def __init__(self, folder: Path, tansu: TansuBroker, anvil: AnvilNode) -> None:
        self.folder = folder
        self.env = {
            "PROSUM_DATA_DIR": str(folder),
            "PROSUM_DB_URL": f"sqlite:///{folder / 'ledger.db'}",
            "PROSUM_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap,
            "PROSUM_CHAIN_BACKEND": "evm",
            "PROSUM_CHAIN_EVM_RPC_URL": anvil.rpc_url,
            "PROSUM_CHAIN_EVM_CHAIN_ID": str(anvil.chain_id),
        }
        self.anvil = anvil
        self.process: ServiceProcess | None = None

    def start(self, **extra_env: str) -> ServiceProcess:
        self.process = ServiceProcess(
            "prosum_ledger", {**self.env, **extra_env}, self.folder / "ledger.log"
        )
        return self.process

    def chain(self) -> EvmBackend:
        """A reader of the same deployment, with the adapter's own (development) keys."""
        secrets = json.loads((self.folder / "ledger" / "dev-secrets.json").read_text())
        return EvmBackend(
            EvmConfig(
                rpc_url=self.anvil.rpc_url,
                chain_id=self.anvil.chain_id,
                operator_private_key=secrets["evm_operator_key"],
                keystore_path=self.folder / "ledger" / "keys" / "participants.keys",
                keystore_key=secrets["keystore_key"],
            )
        )


@pytest.fixture
def ledger(tmp_path: Path, tansu: TansuBroker, anvil: AnvilNode) -> Iterator[Ledger]:
    deployment = Ledger(tmp_path, tansu, anvil)
    try:
        yield deployment
    finally:
        if deployment.process is not None:
            deployment.process.stop()


def outcome_of(command_id: str) -> Any:
    def match(record: Any) -> bool:
        body = json.loads(record.value)
        return (
            body["type"] in ("ledger.command_confirmed", "ledger.command_failed")
            and body["data"]["command_id"] == command_id
        )

    return match


def balance_events(records: list[Any], participant: str) -> list[dict[str, Any]]:
    bodies = [json.loads(r.value) for r in records]
    return [
        b["data"]
        for b in bodies
        if b["type"] == "ledger.balance_changed" and b["subject"] == participant
    ]


async def onboard(kafka: KafkaConfig, ids: dict[str, str]) -> list[str]:
    commands = []
    for role, participant in ids.items():
        permissions = ["connect", "send", "receive"] + (
            ["energy.issue"] if role == "seller" else []
        )
        commands.append(
            command(
                "grant_permissions",
                "identity",
                participant,
                command_id=f"grant-{participant}",
                participant_id=participant,
                permissions=permissions,
            )
        )
    seller, buyer = ids["seller"], ids["buyer"]
    commands.append(
        command(
            "mint_energy",
            "metering",
            seller,
            command_id=f"mint-{seller}",
            participant_id=seller,
            amount_wh=5_000,
            evidence_hash=HASH,
        )
    )
    commands.append(
        command(
            "mint_ecoin",
            "settlement",
            buyer,
            command_id=f"topup-{buyer}",
            participant_id=buyer,
            amount=50_000,
        )
    )
    await publish(kafka, LEDGER_COMMANDS, commands)
    return [c.data["command_id"] for c in commands]


async def test_commands_settle_on_chain_and_the_outcomes_and_balances_agree(
    ledger: Ledger, kafka: KafkaConfig
) -> None:
    ready = ledger.start().ready()
    assert ready["checks"]["chain"]["backend"] == "evm"
    assert ready["checks"]["chain"]["height"] >= 1
    tag = uuid.uuid4().hex[:6]
    ids = {"seller": f"seller-{tag}", "buyer": f"buyer-{tag}", "operator": f"operator-{tag}"}
    setup = await onboard(kafka, ids)
    settle = command(
        "settle_trades",
        "settlement",
        f"batch-{tag}",
        command_id=f"batch-{tag}",
        fee_account=ids["operator"],
        trades=[
            {
                "trade_id": f"t1-{tag}",
                "seller": ids["seller"],
                "buyer": ids["buyer"],
                "energy_wh": 2_000,
                "ecoin": 480,
                "fee_ecoin": 5,
            },
            {
                "trade_id": f"t2-{tag}",
                "seller": ids["seller"],
                "buyer": ids["buyer"],
                "energy_wh": 3_000,
                "ecoin": 720,
                "fee_ecoin": 5,
            },
        ],
    )
    unaffordable = command(
        "settle_trades",
        "settlement",
        f"bad-{tag}",
        command_id=f"bad-{tag}",
        fee_account=ids["operator"],
        trades=[
            {
                "trade_id": f"t3-{tag}",
                "seller": ids["seller"],
                "buyer": ids["buyer"],
                "energy_wh": 1,
                "ecoin": 1,
                "fee_ecoin": 0,
            }
        ],
    )
    burn = command(
        "burn_ecoin",
        "settlement",
        ids["seller"],
        command_id=f"payout-{tag}",
        participant_id=ids["seller"],
        amount=200,
    )
    async with TopicReader(kafka, LEDGER_EVENTS) as events:
        for command_id in setup:
            [outcome] = await events.wait_for(outcome_of(command_id))
            assert json.loads(outcome.value)["type"] == "ledger.command_confirmed"
        # Kafka orders commands per key only (one partition each), so a command that depends
        # on an earlier one's effect is sent after that one's outcome, as settlement does.
        await publish(kafka, LEDGER_COMMANDS, [settle, settle])
        [confirmed] = await events.wait_for(outcome_of(f"batch-{tag}"))
        await publish(kafka, LEDGER_COMMANDS, [unaffordable, burn])
        [failed] = await events.wait_for(outcome_of(f"bad-{tag}"))
        [paid] = await events.wait_for(outcome_of(f"payout-{tag}"))
        await events.wait_for(lambda r: False, timeout=1.0)  # read on: no second outcome may come
        records = list(events.records)

    envelope = json.loads(confirmed.value)
    assert envelope["type"] == "ledger.command_confirmed", envelope["data"]
    body = envelope["data"]
    assert body["settled_trades"] == [f"t1-{tag}", f"t2-{tag}"]
    assert body["tx_id"].startswith("0x") and body["block"] > 0
    failure = json.loads(failed.value)["data"]
    assert (failure["reason"], failure["trade_id"]) == ("insufficient_energy", f"t3-{tag}")
    assert json.loads(paid.value)["type"] == "ledger.command_confirmed"
    assert len([r for r in records if outcome_of(f"batch-{tag}")(r)]) == 1, (
        "the repeated command ran once"
    )

    chain = ledger.chain()
    seller, buyer, operator = (chain.balances(ids[k]) for k in ("seller", "buyer", "operator"))
    assert (seller.energy_wh, seller.ecoin) == (0, 1_200 - 200)
    assert (buyer.energy_wh, buyer.ecoin) == (5_000, 50_000 - 1_210)
    assert (operator.energy_wh, operator.ecoin) == (0, 10)
    for role, balances in (("seller", seller), ("buyer", buyer), ("operator", operator)):
        last = balance_events(records, ids[role])[-1]
        assert (last["energy_wh"], last["ecoin"]) == (balances.energy_wh, balances.ecoin), role
    supply = chain.total_supply()
    assert (supply.energy_wh, supply.ecoin) == (5_000, 50_000 - 200), "supply = mints - burns"

    # Keys stay in the adapter: never in its log, never in an event, never in plain text on disk.
    secrets = json.loads((ledger.folder / "ledger" / "dev-secrets.json").read_text())
    assert oct((ledger.folder / "ledger" / "dev-secrets.json").stat().st_mode & 0o777) == "0o600"
    log_text = (ledger.folder / "ledger.log").read_text()
    everything_emitted = b"".join(r.value for r in records).decode()
    keystore = (ledger.folder / "ledger" / "keys" / "participants.keys").read_text()
    for secret in secrets.values():
        assert secret not in log_text
        assert secret not in everything_emitted
    lines = [line for line in keystore.splitlines() if line]
    assert len(lines) >= 3
    assert all(line.startswith("gAAAAA") for line in lines), (
        "each participant key is a Fernet token"
    )


async def test_a_crash_between_submit_and_record_ends_with_one_settlement_and_one_outcome(
    ledger: Ledger, kafka: KafkaConfig
) -> None:
    ledger.start().ready()
    tag = uuid.uuid4().hex[:6]
    ids = {"seller": f"seller-{tag}", "buyer": f"buyer-{tag}", "operator": f"operator-{tag}"}
    async with TopicReader(kafka, LEDGER_EVENTS) as events:
        for command_id in await onboard(kafka, ids):
            assert await events.wait_for(outcome_of(command_id))
    assert ledger.process is not None
    ledger.process.stop()

    crashing = ledger.start(PROSUM_FAULTS="ledger.after_submit")
    crashing.ready()
    trade_id = f"t-{tag}"
    await publish(
        kafka,
        LEDGER_COMMANDS,
        [
            command(
                "settle_trades",
                "settlement",
                f"batch-{tag}",
                command_id=f"batch-{tag}",
                fee_account=ids["operator"],
                trades=[
                    {
                        "trade_id": trade_id,
                        "seller": ids["seller"],
                        "buyer": ids["buyer"],
                        "energy_wh": 1_500,
                        "ecoin": 300,
                        "fee_ecoin": 3,
                    }
                ],
            )
        ],
    )
    assert crashing.wait_exit(timeout=60) == 137, crashing.tail()
    assert "fault injected at ledger.after_submit" in crashing.tail()
    chain = ledger.chain()
    assert chain.is_settled(trade_id), "the chain settled it before the crash"

    ledger.start().ready()
    async with TopicReader(kafka, LEDGER_EVENTS) as events:
        [outcome] = await events.wait_for(outcome_of(f"batch-{tag}"))
        await events.wait_for(lambda r: False, timeout=2.0)
        outcomes = [r for r in events.records if outcome_of(f"batch-{tag}")(r)]
    assert len(outcomes) == 1
    assert json.loads(outcome.value)["data"]["settled_trades"] == [trade_id]
    settled_logs = [
        log
        for log in chain.ledger_events()
        if log.event == "Settled"
        and log.args.get("tradeId") in (trade_key(trade_id), "0x" + trade_key(trade_id).hex())
    ]
    assert len(settled_logs) == 1, "exactly one settlement on chain"
    assert chain.balances(ids["seller"]).energy_wh == 5_000 - 1_500

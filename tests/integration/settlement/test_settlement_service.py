"""Settlement and the ledger adapter as processes on the real broker and a real chain: executed
trades settle on chain in batches, each exactly once, also when either service is killed in the
middle of a batch and restarted."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prosum_contracts import Envelope
from prosum_contracts.topics import (
    LEDGER_COMMANDS,
    LEDGER_EVENTS,
    ORDERBOOK_EVENTS,
    SETTLEMENT_EVENTS,
)
from prosum_ledger.adapters.evm import AnvilNode, EvmBackend, EvmConfig
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker
from tests.support.kafka_io import TopicReader, publish
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


class Deployment:
    """Ledger adapter and settlement, each with its own store, on one broker and chain."""

    def __init__(self, folder: Path, tansu: TansuBroker, anvil: AnvilNode) -> None:
        self.folder, self.anvil = folder, anvil
        self.tag = uuid.uuid4().hex[:6]
        self.operator = f"operator-{self.tag}"
        common = {"PROSUM_DATA_DIR": str(folder), "PROSUM_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap}
        self.ledger_env = {
            **common,
            "PROSUM_DB_URL": f"sqlite:///{folder / 'ledger.db'}",
            "PROSUM_CHAIN_BACKEND": "evm",
            "PROSUM_CHAIN_EVM_RPC_URL": anvil.rpc_url,
            "PROSUM_CHAIN_EVM_CHAIN_ID": str(anvil.chain_id),
        }
        self.settlement_env = {
            **common,
            "PROSUM_DB_URL": f"sqlite:///{folder / 'settlement.db'}",
            "PROSUM_SETTLEMENT_FEE_ACCOUNT": self.operator,
            "PROSUM_SETTLEMENT_BATCH_MAX_TRADES": "10",
            "PROSUM_SETTLEMENT_BATCH_WINDOW_MS": "300",
        }
        self.processes: list[ServiceProcess] = []

    def start(self, which: str, **extra: str) -> ServiceProcess:
        env = self.ledger_env if which == "ledger" else self.settlement_env
        package = "prosum_ledger" if which == "ledger" else "prosum_settlement"
        process = ServiceProcess(package, {**env, **extra}, self.folder / f"{which}.log")
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()

    def chain(self) -> EvmBackend:
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
def deployment(tmp_path: Path, tansu: TansuBroker, anvil: AnvilNode) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path, tansu, anvil)
    try:
        yield deployed
    finally:
        deployed.stop_all()


def ledger_command(kind: str, subject: str, **data: Any) -> Envelope:
    return Envelope(f"ledger.{kind}", 1, "identity", subject, data)


async def onboard(kafka: KafkaConfig, deployment: Deployment) -> tuple[list[str], list[str]]:
    tag = deployment.tag
    sellers = [f"seller{i}-{tag}" for i in range(3)]
    buyers = [f"buyer{i}-{tag}" for i in range(3)]
    commands = []
    for p in [*sellers, *buyers, deployment.operator]:
        permissions = ["connect", "send", "receive"] + (
            ["energy.issue"] if p.startswith("seller") else []
        )
        commands.append(
            ledger_command(
                "grant_permissions",
                p,
                command_id=f"g-{p}",
                participant_id=p,
                permissions=permissions,
            )
        )
    for s in sellers:
        commands.append(
            ledger_command(
                "mint_energy",
                s,
                command_id=f"m-{s}",
                participant_id=s,
                amount_wh=100_000,
                evidence_hash="aa" * 32,
            )
        )
    for b in buyers:
        commands.append(
            ledger_command("mint_ecoin", b, command_id=f"e-{b}", participant_id=b, amount=1_000_000)
        )
    async with TopicReader(kafka, LEDGER_EVENTS) as events:
        await publish(kafka, LEDGER_COMMANDS, commands)
        ids = {c.data["command_id"] for c in commands}
        done = await events.wait_for(
            lambda r: (
                json.loads(r.value)["data"].get("command_id") in ids
                and json.loads(r.value)["type"] == "ledger.command_confirmed"
            ),
            count=len(ids),
            timeout=90,
        )
        assert len(done) == len(ids)
    return sellers, buyers


def trades(
    deployment: Deployment, sellers: list[str], buyers: list[str], count: int
) -> list[Envelope]:
    out = []
    for n in range(count):
        trade_id = f"t{n}-{deployment.tag}"
        out.append(
            Envelope(
                "orderbook.trade_executed",
                1,
                "orderbook",
                "m-1",
                {
                    "trade_id": trade_id,
                    "market_id": "m-1",
                    "delivery_start": "2026-11-22T10:00:00Z",
                    "delivery_end": "2026-11-22T10:15:00Z",
                    "seller": sellers[n % 3],
                    "buyer": buyers[(n + 1) % 3],
                    "sell_order_id": f"so{n}",
                    "buy_order_id": f"bo{n}",
                    "quantity_wh": 1_000,
                    "price_per_kwh": "250",
                    "value_ecoin": 250,
                    "fee_ecoin": 2,
                    "mechanism": "continuous",
                    "executed_at": "2026-11-22T09:00:00Z",
                },
            )
        )
    return out


def settled_counts(records: list[Any], tag: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for record in records:
        body = json.loads(record.value)
        if body["type"] == "settlement.trade_settled" and body["data"]["trade_id"].endswith(tag):
            counts[body["data"]["trade_id"]] += 1
    return counts


async def settle_all(
    kafka: KafkaConfig, deployment: Deployment, sent: list[Envelope], timeout: float = 120
) -> Counter[str]:
    async with TopicReader(kafka, SETTLEMENT_EVENTS) as events:
        await events.wait_for(
            lambda r: (
                json.loads(r.value)["type"] == "settlement.trade_settled"
                and json.loads(r.value)["data"]["trade_id"].endswith(deployment.tag)
            ),
            count=len(sent),
            timeout=timeout,
        )
        await events.wait_for(lambda r: False, timeout=2.0)  # and nothing more arrives
        return settled_counts(events.records, deployment.tag)


def assert_on_chain_once(
    deployment: Deployment, sent: list[Envelope], sellers: list[str], buyers: list[str]
) -> None:
    chain = deployment.chain()
    assert all(chain.is_settled(t.data["trade_id"]) for t in sent)
    settled_logs = [log for log in chain.ledger_events() if log.event == "Settled"]
    assert len(settled_logs) >= len(sent)
    sold = sum(100_000 - chain.balances(s).energy_wh for s in sellers)
    bought = sum(chain.balances(b).energy_wh for b in buyers)
    assert sold == bought == 1_000 * len(sent), "each trade moved its energy exactly once"
    assert chain.balances(deployment.operator).ecoin == 2 * len(sent), (
        "fees reached the operator once per trade"
    )


async def test_trades_settle_on_chain_in_batches_exactly_once(
    deployment: Deployment, kafka: KafkaConfig
) -> None:
    deployment.start("ledger").ready()
    deployment.start("settlement").ready()
    sellers, buyers = await onboard(kafka, deployment)
    sent = trades(deployment, sellers, buyers, 25)
    await publish(kafka, ORDERBOOK_EVENTS, sent + sent[:5])  # five delivered twice
    counts = await settle_all(kafka, deployment, sent)
    assert set(counts) == {t.data["trade_id"] for t in sent}
    assert set(counts.values()) == {1}
    assert_on_chain_once(deployment, sent, sellers, buyers)


async def test_killing_settlement_mid_batch_settles_every_trade_once(
    deployment: Deployment, kafka: KafkaConfig
) -> None:
    deployment.start("ledger").ready()
    sellers, buyers = await onboard(kafka, deployment)
    dying = deployment.start("settlement", PROSUM_FAULTS="settlement.after_batch")
    dying.ready()
    sent = trades(deployment, sellers, buyers, 25)
    await publish(kafka, ORDERBOOK_EVENTS, sent)
    assert dying.wait_exit(60) == 137, dying.tail()
    deployment.start("settlement").ready()
    counts = await settle_all(kafka, deployment, sent)
    assert set(counts) == {t.data["trade_id"] for t in sent}
    assert set(counts.values()) == {1}
    assert_on_chain_once(deployment, sent, sellers, buyers)


async def test_killing_the_ledger_adapter_mid_batch_settles_every_trade_once(
    deployment: Deployment, kafka: KafkaConfig
) -> None:
    first = deployment.start("ledger")
    first.ready()
    sellers, buyers = await onboard(kafka, deployment)
    first.stop()
    dying = deployment.start("ledger", PROSUM_FAULTS="ledger.after_submit")
    dying.ready()
    deployment.start("settlement").ready()
    sent = trades(deployment, sellers, buyers, 25)
    await publish(kafka, ORDERBOOK_EVENTS, sent)
    assert dying.wait_exit(60) == 137, dying.tail()
    deployment.start("ledger").ready()
    counts = await settle_all(kafka, deployment, sent)
    assert set(counts) == {t.data["trade_id"] for t in sent}
    assert set(counts.values()) == {1}
    assert_on_chain_once(deployment, sent, sellers, buyers)


async def _skip_to_the_end(kafka: KafkaConfig, group: str, topic: str) -> None:
    """Move a consumer group past everything on ``topic``: what an operator resetting its
    offsets to the latest does, and so a stand-in for outcomes lost to the group."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.subscribe([topic])  # a member of the group: the broker takes its commits
        for _ in range(100):
            await consumer.getmany(timeout_ms=100)
            if consumer.assignment():
                break
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        assert tps, f"never joined {group}"
        ends = await consumer.end_offsets(tps)
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()


async def test_a_batch_whose_outcome_never_reached_settlement_is_sent_again_and_settles_once(
    deployment: Deployment, kafka: KafkaConfig
) -> None:
    """Settlement sends a batch and stops; the ledger settles it and publishes the outcome;
    settlement's consumer group is then moved past it. Restarted, settlement sends the batch
    again and the ledger answers with the outcome it gave: every trade settles, once, and the
    chain moved each once."""
    ledger = deployment.start("ledger")
    ledger.ready()
    sellers, buyers = await onboard(kafka, deployment)
    ledger.stop()
    settlement = deployment.start("settlement")
    settlement.ready()
    sent = trades(deployment, sellers, buyers, 8)  # one batch (at most 10 trades)
    async with TopicReader(kafka, LEDGER_COMMANDS) as commands:
        await publish(kafka, ORDERBOOK_EVENTS, sent)
        [command] = await commands.wait_for(
            lambda r: json.loads(r.value)["type"] == "ledger.settle_trades", timeout=60
        )
    batch_command = json.loads(command.value)["data"]["command_id"]
    settlement.stop()
    async with TopicReader(kafka, LEDGER_EVENTS) as events:
        deployment.start("ledger").ready()
        await events.wait_for(
            lambda r: (
                json.loads(r.value)["type"] == "ledger.command_confirmed"
                and json.loads(r.value)["data"]["command_id"] == batch_command
            ),
            timeout=60,
        )
    await _skip_to_the_end(kafka, "settlement-ledger", LEDGER_EVENTS)

    deployment.start("settlement", PROSUM_SETTLEMENT_BATCH_RESEND_S="2").ready()
    counts = await settle_all(kafka, deployment, sent)
    assert set(counts) == {t.data["trade_id"] for t in sent}
    assert set(counts.values()) == {1}
    assert_on_chain_once(deployment, sent, sellers, buyers)
    async with TopicReader(kafka, LEDGER_EVENTS) as events:
        await events.wait_for(lambda r: False, timeout=1.0)
        outcomes = [
            json.loads(r.value)
            for r in events.records
            if json.loads(r.value)["data"].get("command_id") == batch_command
            and json.loads(r.value)["type"] != "ledger.balance_changed"
        ]
    # The outcome, then the same outcome for each time the batch was sent again (more than once
    # when an answer took longer than the 2 s resend period).
    assert len(outcomes) >= 2
    assert {o["type"] for o in outcomes} == {"ledger.command_confirmed"}
    assert all(o["data"] == outcomes[0]["data"] for o in outcomes)

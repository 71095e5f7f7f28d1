"""Metering as a process on the real broker, beside the real ledger adapter on anvil.

The test plays identity (it publishes the participant, its meter and the signing keys), sends a
producer's day through HTTP (reading by reading, then the rest as a batch), reads the mint
commands back from ``prosum.ledger.commands``, and checks on chain that exactly the day's net
surplus was minted, once, and that the readings' batch roots were anchored. Sending the day
again changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prosum_contracts import Envelope
from prosum_contracts.topics import IDENTITY_EVENTS, LEDGER_COMMANDS, METERING_EVENTS
from prosum_ledger.adapters.evm import AnvilNode, EvmBackend, EvmConfig
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import TansuBroker
from tests.integration.metering.test_batches import fold, leaf_of
from tests.support.kafka_io import TopicReader, publish
from tests.support.service_process import ServiceProcess
from tests.unit.metering.meters import (
    Identity,
    Meter,
    day_readings,
    net_surplus,
    onboarding,
    solar_day,
    utc,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DAY = int(time.time()) // 86_400 * 86_400 - 86_400  # yesterday, 00:00 UTC


class Deployment:
    def __init__(self, folder: Path, tansu: TansuBroker, anvil: AnvilNode) -> None:
        self.folder = folder
        self.anvil = anvil
        self.ledger = ServiceProcess(
            "prosum_ledger",
            {
                "PROSUM_DATA_DIR": str(folder / "ledger-data"),
                "PROSUM_DB_URL": f"sqlite:///{folder / 'ledger.db'}",
                "PROSUM_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap,
                "PROSUM_CHAIN_BACKEND": "evm",
                "PROSUM_CHAIN_EVM_RPC_URL": anvil.rpc_url,
                "PROSUM_CHAIN_EVM_CHAIN_ID": str(anvil.chain_id),
            },
            folder / "ledger.log",
        )
        self.metering = ServiceProcess(
            "prosum_metering",
            {
                "PROSUM_DATA_DIR": str(folder / "metering-data"),
                "PROSUM_DB_URL": f"sqlite:///{folder / 'metering.db'}",
                "PROSUM_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap,
                "PROSUM_METERING_SEAL_INTERVAL_S": "1",
            },
            folder / "metering.log",
        )

    def chain(self) -> EvmBackend:
        data = self.folder / "ledger-data" / "ledger"
        secrets = json.loads((data / "dev-secrets.json").read_text())
        return EvmBackend(
            EvmConfig(
                rpc_url=self.anvil.rpc_url,
                chain_id=self.anvil.chain_id,
                operator_private_key=secrets["evm_operator_key"],
                keystore_path=data / "keys" / "participants.keys",
                keystore_key=secrets["keystore_key"],
            )
        )

    def stop(self) -> None:
        self.metering.stop()
        self.ledger.stop()


@pytest.fixture
def deployment(tmp_path: Path, tansu: TansuBroker, anvil: AnvilNode) -> Iterator[Deployment]:
    running = Deployment(tmp_path, tansu, anvil)
    try:
        running.metering.ready()
        running.ledger.ready()
        yield running
    finally:
        running.stop()


def body(record: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(record.value)
    return parsed


async def wait_until_known(client: httpx.AsyncClient, ops: str, metering_point: str) -> None:
    """Until metering has applied identity's keys and the meter (401, then 404, then 200)."""
    deadline = time.monotonic() + 60
    url = f"/v1/intervals?metering_point={metering_point}&from={utc(DAY)}&to={utc(DAY + 900)}"
    while time.monotonic() < deadline:
        response = await client.get(url, headers={"Authorization": f"Bearer {ops}"})
        if response.status_code == 200:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"metering never learnt of {metering_point}: {response.text}")


async def test_a_producers_day_is_minted_once_on_chain_and_anchored(
    deployment: Deployment, kafka: KafkaConfig
) -> None:
    tag = uuid.uuid4().hex[:8]
    producer = Meter(f"meter-{tag}", f"MP-{tag}", f"producer-{tag}")
    who = Identity()
    await publish(kafka, IDENTITY_EVENTS, [who.keys_changed(), *onboarding(producer)])
    # Identity has the ledger grant the producer its permissions.
    await publish(
        kafka,
        LEDGER_COMMANDS,
        [
            Envelope(
                "ledger.grant_permissions",
                1,
                "identity",
                producer.participant_id,
                {
                    "command_id": f"grant-{producer.participant_id}",
                    "participant_id": producer.participant_id,
                    "permissions": ["connect", "send", "receive", "energy.issue"],
                },
            )
        ],
    )
    day = list(day_readings(producer, DAY))
    expected = net_surplus(solar_day(DAY))
    threshold = {"X-Prosum-Threshold": who.threshold(producer)}
    ops = who.ops_token()

    async with httpx.AsyncClient(base_url=deployment.metering.url, timeout=30) as client:
        await wait_until_known(client, ops, producer.metering_point)
        for reading in day[:48]:
            response = await client.post("/v1/readings", json=reading, headers=threshold)
            assert response.status_code == 201, response.text
        response = await client.post(
            "/v1/readings/batch", json={"readings": day[48:]}, headers=threshold
        )
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 49

        async with TopicReader(kafka, LEDGER_COMMANDS) as commands:

            def ours(record: Any) -> bool:
                data = body(record)
                return (
                    data["type"] == "ledger.mint_energy"
                    and data["data"]["participant_id"] == producer.participant_id
                )

            mints = await commands.wait_for(ours, count=len(expected), timeout=60)
            assert len(mints) == len(expected)

            # The day again, as a batch and reading by reading: all duplicates, nothing new.
            again = await client.post(
                "/v1/readings/batch", json={"readings": day}, headers=threshold
            )
            assert (again.json()["duplicates"], again.json()["accepted"]) == (97, 0)
            for reading in day[:3]:
                repeat = await client.post("/v1/readings", json=reading, headers=threshold)
                assert (repeat.status_code, repeat.json()["status"]) == (200, "duplicate")
            await commands.wait_for(lambda r: False, timeout=3.0)
            mints = [r for r in commands.records if ours(r)]

        minted = [body(r)["data"] for r in mints]
        assert len(minted) == len(expected), "each interval minted once"
        assert {m["command_id"] for m in minted} == {
            f"mint:{producer.metering_point}:{utc(s).replace('-', '').replace(':', '')[:13]}Z"
            for s in expected
        }
        assert sum(m["amount_wh"] for m in minted) == sum(expected.values())
        by_start = {m["interval_start"]: m for m in minted}
        for k in range(96):
            start = DAY + k * 900
            if start in expected:
                evidence = hashlib.sha256(b"\x02" + leaf_of(day[k]) + leaf_of(day[k + 1]))
                mint = by_start[utc(start)]
                assert (mint["amount_wh"], mint["evidence_hash"]) == (
                    expected[start],
                    evidence.hexdigest(),
                )

        # The ledger executes the mints; metering hears back and records each outcome.
        chain = deployment.chain()
        deadline = time.monotonic() + 90
        while chain_energy(chain, producer.participant_id) < sum(expected.values()):
            assert time.monotonic() < deadline, "the mints were not executed on chain"
            await asyncio.sleep(0.5)
        assert chain_energy(chain, producer.participant_id) == sum(expected.values())

        url = f"/v1/intervals?metering_point={producer.metering_point}&from={utc(DAY)}&to={utc(DAY + 86_400)}"
        deadline = time.monotonic() + 30
        while True:
            listed = (await client.get(url, headers={"Authorization": f"Bearer {ops}"})).json()
            statuses = {i["mint"]["status"] for i in listed["intervals"] if i["surplus_wh"]}
            if statuses == {"confirmed"} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert statuses == {"confirmed"}
        assert len(listed["intervals"]) == 96

        # Every reading's batch root is anchored; its proof verifies, a changed reading fails.
        async with TopicReader(kafka, METERING_EVENTS) as events:
            anchored = await events.wait_for(
                lambda r: body(r)["type"] == "metering.batch_anchored", timeout=60
            )
            assert anchored
        owner = {"X-Prosum-Threshold": who.threshold(producer, actions=("read_data",))}
        reading_hash = response.json()["results"][20]["reading_hash"]
        deadline = time.monotonic() + 30
        while True:
            proof = (await client.get(f"/v1/readings/{reading_hash}/proof")).json()
            if proof.get("anchor", {}).get("status") == "confirmed" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert proof["anchor"]["status"] == "confirmed", proof
        assert proof["anchor"]["tx_id"].startswith("0x")
        assert chain.anchored(proof["root"]) is not None, "the root is on chain"
        served = (await client.get(f"/v1/readings/{reading_hash}", headers=owner)).json()
        assert fold(leaf_of(served), proof["path"]) == proof["root"]
        tampered = served | {"import_wh": served["import_wh"] + 1}
        assert fold(leaf_of(tampered), proof["path"]) != proof["root"]


def chain_energy(chain: EvmBackend, participant: str) -> int:
    try:
        return chain.balances(participant).energy_wh
    except Exception:
        return 0

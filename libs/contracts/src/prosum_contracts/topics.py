"""Kafka topics of the integration contract.

Each service publishes its events to its own topic; the ledger adapter also takes commands on
one topic. Every consumer sends what it cannot read to the dead-letter topic.
"""

from __future__ import annotations

IDENTITY_EVENTS = "prosum.identity.events"
METERING_EVENTS = "prosum.metering.events"
ORDERBOOK_EVENTS = "prosum.orderbook.events"
# Orders accepted over HTTP go to the instance that owns their market's partition.
ORDERBOOK_COMMANDS = "prosum.orderbook.commands"
SETTLEMENT_EVENTS = "prosum.settlement.events"
LEDGER_EVENTS = "prosum.ledger.events"
LEDGER_COMMANDS = "prosum.ledger.commands"
PUBLIC_TAPE = "prosum.public.trades"
DEAD_LETTER = "prosum.deadletter"

ALL_TOPICS: tuple[str, ...] = (
    IDENTITY_EVENTS,
    METERING_EVENTS,
    ORDERBOOK_EVENTS,
    ORDERBOOK_COMMANDS,
    SETTLEMENT_EVENTS,
    LEDGER_EVENTS,
    LEDGER_COMMANDS,
    PUBLIC_TAPE,
    DEAD_LETTER,
)

# Partitions per topic in the embedded run; a market or aggregate maps to one partition by key.
DEFAULT_PARTITIONS = 6

"""Fakes of the services' ports, written as classes, for unit tests of application code."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prosum_ledger.application.commands import CONFIRMED, FAILED
from prosum_ledger.domain.commands import LedgerCommand


class FakeCommandLog:
    """Commands and published events in memory, committed only when the unit of work ends
    without an exception (like the real one)."""

    def __init__(self) -> None:
        self.commands: dict[str, LedgerCommand] = {}
        self.order: list[str] = []
        self.published: list[tuple[str, str, dict[str, Any]]] = []

    @contextmanager
    def unit(self) -> Iterator[FakeCommandLog]:
        draft = copy.deepcopy(self)
        yield draft
        self.commands, self.order, self.published = draft.commands, draft.order, draft.published

    def get(self, command_id: str) -> LedgerCommand | None:
        return copy.deepcopy(self.commands.get(command_id))

    def save(self, command: LedgerCommand) -> None:
        if command.id not in self.commands:
            self.order.append(command.id)
        command.mark_persisted()
        self.commands[command.id] = command

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        self.published.append((event_type, subject, data))

    def open_commands(self, limit: int) -> list[str]:
        open_ = [c for c in self.order if not self.commands[c].finished]
        return open_[:limit]

    def outcomes(self, command_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (kind, data)
            for kind, _subject, data in self.published
            if kind in (CONFIRMED, FAILED) and data["command_id"] == command_id
        ]

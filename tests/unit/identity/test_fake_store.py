"""The in-memory store used by the unit tests passes the store contract."""

from __future__ import annotations

import pytest

from prosum_identity.application.ports import UnitOfWork
from tests.unit.identity.fakes import FakeStore
from tests.unit.identity.store_contract import IdentityStoreContract, Outbox


class TestFakeStore(IdentityStoreContract):
    @pytest.fixture
    def fake(self) -> FakeStore:
        return FakeStore()

    @pytest.fixture
    def uow(self, fake: FakeStore) -> UnitOfWork:
        return fake.unit

    @pytest.fixture
    def outbox(self, fake: FakeStore) -> Outbox:
        return lambda: list(fake.published)

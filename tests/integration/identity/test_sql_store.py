"""Identity's SQL store passes the store contract on SQLite and PostgreSQL, keeps private keys
sealed, and lets exactly one of many concurrent answers to a challenge through."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from prosum_identity.adapters.crypto import KeySealer, KeyVaultError
from prosum_identity.adapters.store import unit_of_work
from prosum_identity.adapters.tables import key_vault
from prosum_identity.application.ports import UnitOfWork
from prosum_platform.eventstore import EventStore
from tests.integration.identity.conftest import outbox_rows
from tests.unit.identity.store_contract import IdentityStoreContract, Outbox


class TestSqlStore(IdentityStoreContract):
    @pytest.fixture
    def uow(self, sql_uow: UnitOfWork) -> UnitOfWork:
        return sql_uow

    @pytest.fixture
    def outbox(self, event_store: EventStore) -> Outbox:
        return lambda: [(e["type"], e["subject"], e["data"]) for e in outbox_rows(event_store)]


def test_private_keys_are_sealed_at_rest_and_the_sealing_key_can_rotate(
    event_store: EventStore, sql_uow: UnitOfWork, sealer: KeySealer, kek: str
) -> None:
    secret = bytes(range(32))
    with sql_uow() as store:
        store.put_private_key("k1", secret)
    with event_store.reading() as conn:
        sealed = conn.execute(select(key_vault.c.sealed_private_key)).scalar_one()
    assert secret.hex() not in sealed
    assert sealer.unseal(sealed) == secret

    stranger = unit_of_work(event_store, KeySealer([Fernet.generate_key().decode()]))
    with pytest.raises(KeyVaultError), stranger() as store:
        store.private_key("k1")

    # A new encryption key goes first; the old one still opens what it sealed.
    rotated = KeySealer([Fernet.generate_key().decode(), kek])
    with unit_of_work(event_store, rotated)() as store:
        assert store.private_key("k1") == secret

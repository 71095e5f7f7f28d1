"""Participant chain keys, encrypted at rest.

One file, one line per participant, each line a Fernet token (AES-128-CBC with HMAC-SHA256)
of ``{"participant_id", "address", "key"}``. Lines are appended and fsynced, so registering a
participant costs one small write however many exist, and a crash mid-append can only tear the
last line, which loading then ignores. Nothing here logs or prints a key: ``repr`` shows only
the path and the number of participants.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

log = logging.getLogger(__name__)


class KeyStoreError(Exception):
    """The key store cannot be read (wrong encryption key, corrupted file) or written."""


@dataclass(frozen=True, slots=True)
class _Entry:
    participant_id: str
    address: ChecksumAddress
    key: bytes


def generate_encryption_key() -> str:
    """A fresh key for ``EvmConfig.keystore_key`` (urlsafe base64 of 32 random bytes)."""
    return Fernet.generate_key().decode("ascii")


class KeyStore:
    def __init__(self, path: Path, encryption_key: str | bytes) -> None:
        try:
            self._fernet = Fernet(encryption_key)
        except (ValueError, TypeError) as exc:
            # The message of these errors never contains the key itself.
            raise KeyStoreError(f"invalid key store encryption key: {exc}") from None
        self._path = path
        self._lock = threading.Lock()
        self._by_participant: dict[str, _Entry] = {}
        self._by_address: dict[str, str] = {}
        self._load()

    def __repr__(self) -> str:
        return f"KeyStore(path={str(self._path)!r}, participants={len(self._by_participant)})"

    def __len__(self) -> int:
        return len(self._by_participant)

    @property
    def path(self) -> Path:
        return self._path

    def address(self, participant_id: str) -> ChecksumAddress | None:
        entry = self._by_participant.get(participant_id)
        return entry.address if entry else None

    def participant_of(self, address: str) -> str | None:
        return self._by_address.get(address.lower())

    def account(self, participant_id: str) -> LocalAccount | None:
        """The participant's signer, for transactions a participant signs itself."""
        entry = self._by_participant.get(participant_id)
        return Account.from_key(entry.key) if entry else None

    def create(self, participant_id: str) -> ChecksumAddress:
        """The participant's address, generating and persisting a key the first time."""
        if not participant_id:
            raise ValueError("participant id must not be empty")
        with self._lock:
            existing = self._by_participant.get(participant_id)
            if existing is not None:
                return existing.address
            signer: LocalAccount = Account.create()
            entry = _Entry(participant_id, to_checksum_address(signer.address), bytes(signer.key))
            self._append(entry)
            self._remember(entry)
            return entry.address

    def _remember(self, entry: _Entry) -> None:
        self._by_participant[entry.participant_id] = entry
        self._by_address[entry.address.lower()] = entry.participant_id

    def _append(self, entry: _Entry) -> None:
        plain = json.dumps(
            {
                "participant_id": entry.participant_id,
                "address": entry.address,
                "key": entry.key.hex(),
            }
        ).encode()
        token = self._fernet.encrypt(plain)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self._path.exists()
        # 0o600: the file is encrypted, but there is no reason for others to read it at all.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, token + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            # Make the new directory entry durable too, or a crash could lose the whole file.
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _load(self) -> None:
        if not self._path.exists():
            return
        lines = self._path.read_bytes().split(b"\n")
        # split() leaves an empty last item after the final newline; a missing final newline
        # means the last append was torn.
        complete, last = lines[:-1], lines[-1]
        for number, line in enumerate(complete, start=1):
            if not line:
                continue
            try:
                data = json.loads(self._fernet.decrypt(line))
                entry = _Entry(
                    str(data["participant_id"]),
                    to_checksum_address(data["address"]),
                    bytes.fromhex(data["key"]),
                )
            except InvalidToken:
                raise KeyStoreError(
                    f"{self._path}: line {number} cannot be decrypted "
                    "(wrong encryption key or corrupted file)"
                ) from None
            except (KeyError, ValueError) as exc:
                raise KeyStoreError(f"{self._path}: line {number} is malformed: {exc}") from None
            self._remember(entry)
        if last:
            log.warning(
                "key store %s: ignoring a torn last line (crash during a write)", self._path
            )
            self._truncate_torn_tail(len(last))

    def _truncate_torn_tail(self, torn: int) -> None:
        # Cut the torn bytes so the next append starts on a fresh line.
        with self._path.open("r+b") as handle:
            handle.truncate(self._path.stat().st_size - torn)
            handle.flush()
            os.fsync(handle.fileno())

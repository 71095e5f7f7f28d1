"""Ed25519 verification, in the calling thread and in the pool of processes: same answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prosum_metering.adapters.signatures import InlineVerifier, PooledVerifier, build_verifier


@pytest.fixture(scope="module")
def pool() -> Iterator[PooledVerifier]:
    verifier = PooledVerifier(2, inline_below=8, chunk=16)
    try:
        yield verifier
    finally:
        verifier.close()


def signed(n: int) -> tuple[list[tuple[bytes, bytes, bytes]], list[bool]]:
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    items, truth = [], []
    for i in range(n):
        key = keys[i % 3]
        message = f"reading {i}".encode()
        signature = key.sign(message)
        raw = key.public_key().public_bytes_raw()
        if i % 5 == 1:
            message += b"!"  # altered after signing
        elif i % 5 == 2:
            signature = signature[:63] + bytes([signature[63] ^ 1])
        elif i % 5 == 3:
            raw = keys[(i + 1) % 3].public_key().public_bytes_raw()  # someone else's key
        items.append((raw, message, signature))
        truth.append(i % 5 in (0, 4))
    return items, truth


def test_the_pool_and_the_thread_agree_item_by_item(pool: PooledVerifier) -> None:
    items, truth = signed(200)
    assert pool.verify_many(items) == truth
    assert InlineVerifier().verify_many(items) == truth
    assert pool.verify_many(items[:5]) == truth[:5]  # small batches stay in the thread


def test_a_key_or_signature_of_the_wrong_size_is_refused_not_raised(pool: PooledVerifier) -> None:
    items, _ = signed(1)
    raw, message, signature = items[0]
    assert InlineVerifier().verify_many(
        [(raw[:31], message, signature), (raw, message, signature[:63])]
    ) == [False, False]


def test_the_verifier_is_chosen_by_its_setting() -> None:
    assert isinstance(build_verifier(0), InlineVerifier)
    pooled = build_verifier(1)
    try:
        assert isinstance(pooled, PooledVerifier) and pooled.workers == 1
    finally:
        pooled.close()

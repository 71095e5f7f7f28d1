"""Merkle roots and proofs over reading batches: every leaf proves, nothing else does."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prosum_metering.domain.merkle import (
    evidence_hash,
    fold_proof,
    merkle_proof,
    merkle_root,
    node_hash,
    verify_proof,
)


def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(f"leaf {i}".encode()).digest() for i in range(n)]


def h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def test_the_tree_is_built_as_documented() -> None:
    a, b, c = leaves(3)
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == h(b"\x01", a, b)
    # The odd leaf is carried up, never paired with itself.
    assert merkle_root([a, b, c]) == h(b"\x01", h(b"\x01", a, b), c)
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])


def test_the_evidence_hash_has_its_own_prefix() -> None:
    a, b = leaves(2)
    assert evidence_hash(a.hex(), b.hex()) == h(b"\x02", a, b).hex()
    assert evidence_hash(a.hex(), b.hex()) != node_hash(a, b).hex()


@given(st.integers(min_value=1, max_value=70), st.data())
def test_every_leaf_proves_against_the_root(n: int, data: st.DataObject) -> None:
    items = leaves(n)
    root = merkle_root(items)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle_proof(items, index)
    assert verify_proof(items[index], proof, root)
    assert fold_proof(items[index], proof) == root


@given(st.integers(min_value=2, max_value=40), st.data())
def test_a_proof_fails_for_another_leaf_or_a_changed_step(n: int, data: st.DataObject) -> None:
    items = leaves(n)
    root = merkle_root(items)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle_proof(items, index)
    other = data.draw(st.integers(min_value=0, max_value=n - 1).filter(lambda i: i != index))
    assert not verify_proof(items[other], proof, root)
    assert not verify_proof(hashlib.sha256(b"changed").digest(), proof, root)
    step = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    flipped = list(proof)
    flipped[step] = type(proof[step])(
        "left" if proof[step].side == "right" else "right", proof[step].sibling
    )
    assert not verify_proof(items[index], flipped, root)


def test_an_empty_batch_has_no_root() -> None:
    with pytest.raises(ValueError):
        merkle_root([])
    with pytest.raises(IndexError):
        merkle_proof(leaves(2), 2)

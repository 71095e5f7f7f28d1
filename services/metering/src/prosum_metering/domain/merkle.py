"""Merkle trees over reading batches, their inclusion proofs, and interval evidence hashes.

Hashing (SHA-256 throughout, each kind of input with its own one-byte prefix so that a leaf can
never pass for a node, nor either for an evidence hash):

- leaf     = SHA-256(0x00 || canonical reading bytes || 64-byte signature)  (the reading hash)
- node     = SHA-256(0x01 || left child || right child)
- evidence = SHA-256(0x02 || reading hash at interval start || reading hash at interval end)

Leaves are in the batch's order. Each level pairs nodes left to right; an odd node at the end
of a level is carried up unchanged (never paired with itself, so two different batches cannot
share a root by duplicating a last leaf). The root of a one-leaf batch is the leaf.

A proof lists, from the leaf up, each sibling and the side it sits on; folding it from the
leaf must give the root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

NODE_PREFIX = b"\x01"
EVIDENCE_PREFIX = b"\x02"

Side = Literal["left", "right"]


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def evidence_hash(start_reading_hash: str, end_reading_hash: str) -> str:
    """The hash of the two readings an interval's energy was derived from."""
    return hashlib.sha256(
        EVIDENCE_PREFIX + bytes.fromhex(start_reading_hash) + bytes.fromhex(end_reading_hash)
    ).hexdigest()


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


@dataclass(frozen=True, slots=True)
class ProofStep:
    side: Side
    """Where the sibling sits: ``left`` means node = H(0x01 || sibling || current)."""
    sibling: bytes


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[ProofStep]:
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} outside a batch of {len(leaves)}")
    steps: list[ProofStep] = []
    level = list(leaves)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            steps.append(ProofStep("left" if sibling < position else "right", level[sibling]))
        level = _next_level(level)
        position //= 2
    return steps


def fold_proof(leaf: bytes, steps: Sequence[ProofStep]) -> bytes:
    current = leaf
    for step in steps:
        if step.side == "left":
            current = node_hash(step.sibling, current)
        else:
            current = node_hash(current, step.sibling)
    return current


def verify_proof(leaf: bytes, steps: Sequence[ProofStep], root: bytes) -> bool:
    return fold_proof(leaf, steps) == root

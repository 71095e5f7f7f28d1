"""Ed25519 signature checks with libsodium (PyNaCl), in a pool of processes.

libsodium verifies in about 46 µs here where ``cryptography`` (OpenSSL) takes about 100 µs, and
verification is most of the work of ingesting a reading. Large batches are also split over
worker processes; small ones (a single reading) are verified in the calling thread, where the
round trip to a worker would cost more than it saves. ``begin`` hands a batch to the workers and
returns at once, so ingestion checks the series and prepares its writes while the signatures are
checked on the other core.

libsodium refuses a non-canonical ``S`` (>= the group order) and small-order public keys, so a
valid signature cannot be altered into a second valid encoding.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

log = logging.getLogger(__name__)

Item = tuple[bytes, bytes, bytes]


def verify_all(items: Sequence[Item]) -> list[bool]:
    """Check each (raw public key, message, signature); keys are loaded once per chunk."""
    keys: dict[bytes, VerifyKey | None] = {}
    out: list[bool] = []
    for raw_key, message, signature in items:
        if raw_key not in keys:
            try:
                keys[raw_key] = VerifyKey(raw_key)
            except (ValueError, TypeError, CryptoError):
                keys[raw_key] = None
        key = keys[raw_key]
        if key is None or len(signature) != 64:
            out.append(False)
            continue
        try:
            key.verify(message, signature)
        except (BadSignatureError, CryptoError, ValueError):
            out.append(False)
        else:
            out.append(True)
    return out


def _warm() -> int:
    return os.getpid()


class Done:
    """Outcomes already known (checked in the calling thread, before any transaction)."""

    def __init__(self, outcomes: list[bool]) -> None:
        self._outcomes = outcomes

    def result(self, timeout: float | None = None) -> list[bool]:
        return self._outcomes


class Pending:
    """Outcomes being computed by worker processes, one future per chunk."""

    def __init__(self, futures: list[Future[list[bool]]]) -> None:
        self._futures = futures
        self._outcomes: list[bool] | None = None

    def result(self, timeout: float | None = None) -> list[bool]:
        """The outcomes; raises ``TimeoutError`` if they are not all in within ``timeout``."""
        if self._outcomes is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            outcomes: list[bool] = []
            for future in self._futures:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                outcomes.extend(future.result(left))
            self._outcomes = outcomes
        return self._outcomes


class InlineVerifier:
    """Verifies in the calling thread."""

    def verify_many(self, items: Sequence[Item]) -> list[bool]:
        return verify_all(items)

    def begin(self, items: Sequence[Item]) -> Done:
        return Done(self.verify_many(items))

    def close(self) -> None:
        return None


class PooledVerifier:
    """Verifies large batches in ``workers`` processes, small ones inline."""

    def __init__(self, workers: int, *, inline_below: int = 64, chunk: int = 256) -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.workers = workers
        self._inline_below = inline_below
        self._chunk = chunk
        # spawn, not fork: the service process runs threads (uvicorn, the Kafka clients) and
        # forking a threaded process can deadlock the child.
        self._pool: Executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def warm_up(self) -> None:
        """Start every worker now rather than on the first large request."""
        list(self._pool.map(_warm_sleep, range(self.workers)))

    def verify_many(self, items: Sequence[Item]) -> list[bool]:
        return self.begin(items).result()

    def begin(self, items: Sequence[Item]) -> Done | Pending:
        """Hand the chunks of a large batch to the workers and return at once; a small one
        is checked in the calling thread now (before the caller's transaction)."""
        if len(items) < self._inline_below:
            return Done(verify_all(items))
        size = max(self._chunk, -(-len(items) // (self.workers * 4)))
        return Pending(
            [
                self._pool.submit(verify_all, list(items[i : i + size]))
                for i in range(0, len(items), size)
            ]
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _warm_sleep(_n: int) -> int:
    # Long enough that each call lands on its own worker, so all of them start.
    time.sleep(0.05)
    return _warm()


def default_workers() -> int:
    """One verifying process per CPU but one: the service's own process (parsing, checking
    the series, writing) keeps a core, and verification runs beside it rather than taking
    turns with it. On one CPU, verification stays in the request thread."""
    return max(0, (os.cpu_count() or 1) - 1)


def build_verifier(workers: int | None) -> InlineVerifier | PooledVerifier:
    """``workers``: processes to verify in; None means ``default_workers()``, 0 means inline."""
    count = default_workers() if workers is None else workers
    if count <= 0:
        return InlineVerifier()
    return PooledVerifier(count)

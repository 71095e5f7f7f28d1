"""Nonces for one sending account, correct under concurrent commands.

Signing and handing a transaction to the node happen under one lock, so nonces are used in
order and no gap can open between two threads; waiting for the receipt happens outside it, so
commands still confirm concurrently. The next nonce is kept in memory (asking the node for every
transaction would cost a round trip each) and re-read from the node's pending count whenever a
send fails, since then it is unknown whether the node took the nonce.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class NonceTooLowError(Exception):
    """The node says the nonce was already used: someone else sent from this account."""


class NonceManager:
    def __init__(self, read_pending_nonce: Callable[[], int], *, attempts: int = 8) -> None:
        self._read = read_pending_nonce
        self._attempts = attempts
        self._lock = threading.Lock()
        self._next: int | None = None

    def submit(self, send: Callable[[int], T]) -> T:
        """Runs ``send(nonce)``; the nonce counts as used only when ``send`` returns.

        ``send`` raises NonceTooLowError when the node refuses the nonce as used; the nonce is
        then re-read from the node and the send retried, up to ``attempts`` times in all.
        """
        with self._lock:
            for attempt in range(self._attempts):
                if attempt:
                    # Another sender with this key is racing us: back off a little, at random,
                    # so the two stop colliding on the same freshly read nonce.
                    time.sleep(random.uniform(0, 0.002 * attempt))
                if self._next is None:
                    self._next = self._read()
                nonce = self._next
                try:
                    result = send(nonce)
                except NonceTooLowError:
                    self._next = None
                    continue
                except BaseException:
                    self._next = None
                    raise
                self._next = nonce + 1
                return result
        raise NonceTooLowError(f"nonce still refused after {self._attempts} attempts")

    def reset(self) -> None:
        with self._lock:
            self._next = None

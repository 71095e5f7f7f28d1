"""Group commit for order entry: concurrent requests share one transaction.

Every order placed over HTTP is handed to one writer, which takes all the orders waiting at
that moment and places them with ``OrderEntry.place_many`` in a single transaction, then
answers each request with its own outcome. Under load the groups grow by themselves (orders
arriving while a group commits form the next one); a lone order is committed at once. One
writer per process also means the API's threads never queue for SQLite's write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import anyio.to_thread

from prosum_orderbook.application.entry import Authority, NewOrder, OrderRefused
from prosum_orderbook.application.ports import OrderRecord

Request = tuple[Authority, NewOrder]
Outcome = OrderRecord | OrderRefused


class GroupCommit:
    def __init__(
        self,
        place_many: Callable[[Sequence[Request]], list[Outcome]],
        *,
        max_group: int = 500,
    ) -> None:
        self._place_many = place_many
        self._max_group = max_group
        self._waiting: list[tuple[Request, asyncio.Future[Outcome]]] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self.groups = 0
        self.orders = 0

    async def place(self, requests: Sequence[Request]) -> list[Outcome]:
        """Place the orders (with whatever else is waiting); one outcome per request."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outcome]] = []
        for request in requests:
            future: asyncio.Future[Outcome] = loop.create_future()
            self._waiting.append((request, future))
            futures.append(future)
        if self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            self._writer = asyncio.create_task(self._write(), name="order-entry-writer")
        assert self._wakeup is not None
        self._wakeup.set()
        return list(await asyncio.gather(*futures))

    async def _write(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                try:
                    outcomes = await anyio.to_thread.run_sync(
                        self._place_many, [request for request, _ in group]
                    )
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.groups += 1
                self.orders += len(group)
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

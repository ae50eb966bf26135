"""Micro-batching of concurrent requests.

Why: explanation and the durable audit write dominate a decision's cost, and
both are far cheaper per item in a batch (one forward pass per bucket, one
group-committed store round per batch). Requests that arrive together are
collected for at most ``max_wait`` or until ``max_batch`` of them are waiting,
then processed together on one worker thread, which also serialises every use
of the chain writer. A request's result never depends on its neighbours: the
runtime is batch-invariant bit for bit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        executor: concurrent.futures.Executor,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._executor = executor
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, item: T) -> R:
        assert self._queue is not None, "MicroBatcher.start() was not called"
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._max_wait_s
        while len(batch) < self._max_batch:
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining = deadline - asyncio.get_running_loop().time()
            if len(batch) >= self._max_batch or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            if self._on_batch:
                self._on_batch(len(live))
            try:
                results = await loop.run_in_executor(self._executor, self._process, [item for item, _ in live])
            except BaseException as exc:  # the processor decides per-item outcomes; this is a bug path
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)

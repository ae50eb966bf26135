"""Micro-batching of concurrent requests.

Why: explanation and the durable audit write dominate a decision's cost, and
both are far cheaper per item in a batch (one forward pass per bucket, one
group-committed store round per batch). Requests that arrive together are
collected for at most ``max_wait`` or until ``max_batch`` of them are waiting,
then processed together. A request's result never depends on its
neighbours: the runtime is batch-invariant bit for bit.

How long to wait: a batch closes early once it holds as many requests as
were in flight at the busiest moment of the previous batch cycle. A lone
client (or a quiet period) is therefore never held for the window, while
under steady concurrency a batch still waits for its usual company.

Two stages on their own executors, so they overlap: ``process`` (scoring
and explanation: CPU, one thread) for batch k+1 runs while ``finish`` (the
durable audit append: mostly waiting for the disk or S3) for batch k is in
flight. The finish executor may have several threads: the chain writer
serialises the segment writes itself and overlaps one batch's index round
with the next batch's segment, so under load two appends share the disk's
flushes. Results are delivered only after ``finish``; at most
``max_finishing`` batches are between the stages or in ``finish``, so a slow
store pushes back on new batches instead of piling them up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")


class MicroBatcher(Generic[T, P, R]):
    def __init__(
        self,
        process: Callable[[Sequence[T]], P],
        finish: Callable[[P], Sequence[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        executor: concurrent.futures.Executor,
        finish_executor: concurrent.futures.Executor,
        max_finishing: int = 2,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._process = process
        self._finish = finish
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._executor = executor
        self._finish_executor = finish_executor
        self._on_batch = on_batch
        # One entry per submission: a request's item alone, or an infer call's rows together.
        self._queue: asyncio.Queue[list[tuple[T, asyncio.Future[R]]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._finish_slots: asyncio.Semaphore | None = None
        self._max_finishing = max_finishing
        self._held: list[tuple[T, asyncio.Future[R]]] | None = None  # a submission that did not fit the last batch
        self._in_flight = 0  # submitted, not yet answered
        self._peak_in_flight = 0  # the most in flight since the current batch began collecting

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._finish_slots = asyncio.Semaphore(self._max_finishing)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop collecting; batches already computed still finish (their records
        are appended and their callers answered)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        """Items submitted and not yet answered (queued, being scored, or being recorded)."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Submissions waiting for a batch to take them."""
        return (self._queue.qsize() if self._queue is not None else 0) + (self._held is not None)

    async def submit(self, item: T) -> R:
        return (await self.submit_group([item]))[0]

    async def submit_group(self, items: Sequence[T]) -> list[R]:
        """Submit items that must be decided and committed together: they are never split
        across batches unless there are more than ``max_batch`` of them (then each batch
        holds ``max_batch`` of them, in order). Results in the items' order."""
        assert self._queue is not None, "MicroBatcher.start() was not called"
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = [loop.create_future() for _ in items]
        self._in_flight += len(futures)
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            pairs = list(zip(items, futures, strict=True))
            for start in range(0, len(pairs), self._max_batch):
                await self._queue.put(pairs[start : start + self._max_batch])
            return list(await asyncio.gather(*futures))
        finally:
            self._in_flight -= len(futures)

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        """One batch: whole submissions, up to the expected company (never a submission split)."""
        assert self._queue is not None
        first, self._held = self._held, None
        batch = list(first if first is not None else await self._queue.get())
        expected = self._peak_in_flight  # the busiest moment since the previous batch began
        self._peak_in_flight = self._in_flight
        target = max(1, min(self._max_batch, expected))
        deadline = asyncio.get_running_loop().time() + self._max_wait_s
        held: list[tuple[T, asyncio.Future[R]]] | None = None  # a submission too big for this batch
        while len(batch) < target and held is None:
            while len(batch) < target and not self._queue.empty():
                group = self._queue.get_nowait()
                if len(batch) + len(group) > self._max_batch:
                    held = group
                    break
                batch.extend(group)
            remaining = deadline - asyncio.get_running_loop().time()
            if held is not None or len(batch) >= target or remaining <= 0:
                break
            try:
                group = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            if len(batch) + len(group) > self._max_batch:
                held = group
                break
            batch.extend(group)
        self._held = held  # opens the next batch, ahead of the queue
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._finish_slots is not None
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            if self._on_batch:
                self._on_batch(len(live))
            await self._finish_slots.acquire()
            try:
                prepared = await loop.run_in_executor(self._executor, self._process, [item for item, _ in live])
            except BaseException as exc:
                self._finish_slots.release()
                _fail(live, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            task = loop.create_task(self._deliver(live, prepared), name="micro-batch-finish")
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _deliver(self, live: list[tuple[T, asyncio.Future[R]]], prepared: P) -> None:
        assert self._finish_slots is not None
        try:
            # Shielded: a cancelled caller or a stopping batcher must not abandon a
            # batch whose records may already be durable without answering it.
            results = await asyncio.shield(
                asyncio.get_running_loop().run_in_executor(self._finish_executor, self._finish, prepared)
            )
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller (a bug path: the finisher decides per-item outcomes)
            _fail(live, exc)
            return
        finally:
            self._finish_slots.release()
        for (_, fut), result in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(result)


def _fail(live: list, exc: BaseException) -> None:
    for _, fut in live:
        if not fut.done():
            fut.set_exception(exc)

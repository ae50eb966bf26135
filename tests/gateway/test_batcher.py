"""MicroBatcher on a real event loop and real thread pools (no server needed)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading

import pytest


@pytest.fixture
def pools():
    compute = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    finish = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    yield compute, finish
    compute.shutdown()
    finish.shutdown()


def _batcher(pools, sizes: list[int], *, max_batch: int, max_wait_s: float):
    from verdict.gateway.batcher import MicroBatcher

    finished_in: list[str] = []

    def process(items):
        return [item * 2 for item in items]

    def finish(doubled):
        finished_in.append(threading.current_thread().name)
        return doubled

    compute, finisher = pools
    return MicroBatcher(
        process,
        finish,
        max_batch=max_batch,
        max_wait_s=max_wait_s,
        executor=compute,
        finish_executor=finisher,
        on_batch=sizes.append,
    )


def _run(batcher, work):
    """Run ``work(batcher)`` on a fresh event loop with the batcher started, then stop it."""

    async def scenario():
        batcher.start()
        try:
            return await work(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(scenario())


def test_concurrent_requests_share_bounded_batches_and_get_their_own_results(pools):
    sizes: list[int] = []

    async def work(batcher):
        return await asyncio.gather(*(batcher.submit(n) for n in range(20)))

    assert _run(_batcher(pools, sizes, max_batch=8, max_wait_s=0.2), work) == [n * 2 for n in range(20)]
    assert sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) < 20


def test_a_lone_client_is_not_held_for_the_batching_window(pools):
    # The window is far longer than the test allows per request: a batch that
    # already holds every request in flight must close at once.
    sizes: list[int] = []

    async def work(batcher):
        return [await asyncio.wait_for(batcher.submit(n), timeout=5.0) for n in range(5)]

    assert _run(_batcher(pools, sizes, max_batch=64, max_wait_s=30.0), work) == [0, 2, 4, 6, 8]
    assert sizes == [1, 1, 1, 1, 1]


def test_after_a_busy_cycle_the_next_batch_waits_for_company(pools):
    sizes: list[int] = []

    async def work(batcher):
        await asyncio.gather(*(batcher.submit(n) for n in range(6)))  # six in flight at once
        first = asyncio.ensure_future(batcher.submit(100))
        await asyncio.sleep(0.05)  # a second request arrives within the window: it joins the first
        await asyncio.gather(first, batcher.submit(101))

    _run(_batcher(pools, sizes, max_batch=64, max_wait_s=0.3), work)
    assert sizes[-1] == 2


def test_with_two_finish_threads_two_batches_commit_at_once():
    # Each finish waits (bounded) until another finish is running beside it:
    # only possible if the batcher lets two batches be in the finish stage together.
    from verdict.gateway.batcher import MicroBatcher

    both_finishing = threading.Barrier(2, timeout=5.0)
    compute = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    finish_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)

    def finish(items):
        both_finishing.wait()
        return items

    async def work(batcher):
        return await asyncio.gather(batcher.submit(1), batcher.submit(2))

    batcher = MicroBatcher(
        lambda items: list(items),
        finish,
        max_batch=1,
        max_wait_s=0.0,
        executor=compute,
        finish_executor=finish_pool,
        max_finishing=3,
    )
    try:
        assert _run(batcher, work) == [1, 2]
    finally:
        compute.shutdown()
        finish_pool.shutdown()


def test_commit_threads_setting_is_bounded(monkeypatch):
    from verdict.gateway.settings import SettingsError, load_settings

    monkeypatch.setenv("VERDICT_COMMIT_THREADS", "3")
    assert load_settings().commit_threads == 3
    monkeypatch.setenv("VERDICT_COMMIT_THREADS", "0")
    with pytest.raises(SettingsError, match=re.escape("commit_threads must be 1..8")):
        load_settings()


def test_a_group_is_decided_in_one_batch_and_never_split_unless_larger_than_a_batch(pools):
    """An infer call's rows (submit_group) stay together; a group that does not fit the
    batch being collected opens the next one, whole; one larger than max_batch is cut
    into full batches, in order."""
    from verdict.gateway.batcher import MicroBatcher

    batches: list[list[int]] = []

    def process(items):
        batches.append(list(items))
        return [item * 2 for item in items]

    compute, finisher = pools
    batcher = MicroBatcher(
        process, lambda doubled: doubled, max_batch=8, max_wait_s=0.05, executor=compute, finish_executor=finisher
    )

    async def work(b):
        singles = [asyncio.ensure_future(b.submit(n)) for n in range(5)]
        group = asyncio.ensure_future(b.submit_group([100 + n for n in range(6)]))
        large = asyncio.ensure_future(b.submit_group([200 + n for n in range(19)]))
        return await asyncio.gather(*singles), await group, await large

    singles, group, large = _run(batcher, work)
    assert singles == [0, 2, 4, 6, 8]
    assert group == [200 + 2 * n for n in range(6)]
    assert large == [400 + 2 * n for n in range(19)]
    assert sorted(x for batch in batches for x in batch) == [*range(5), *range(100, 106), *range(200, 219)]
    holding = [batch for batch in batches if any(100 <= x < 106 for x in batch)]
    assert len(holding) == 1 and [x for x in holding[0] if x >= 100] == list(range(100, 106)), batches
    assert [[x for x in batch if x >= 200] for batch in batches if any(x >= 200 for x in batch)] == [
        list(range(200, 208)),
        list(range(208, 216)),
        list(range(216, 219)),
    ], batches
    assert all(len(batch) <= 8 for batch in batches), batches

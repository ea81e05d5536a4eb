"""Queues and events behave the same on both backends."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chaski_actors import ClosedResourceError, ConfigError, Event, Queue
from chaski_actors.log import RuntimeFormatter, node_logger
from conftest import Backend


def test_wait_policy_blocks_the_producer_until_there_is_room(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[str], Any]:
        rt = net.runtime("a")
        queue: Queue[int] = Queue(rt, 2)
        log: list[str] = []

        async def producer() -> None:
            for i in range(4):
                await queue.put(i)
                log.append(f"put {i}")

        task = rt.spawn(producer(), name="producer")
        await rt.sleep(0.01)
        log.append("consumer wakes")
        got = [await queue.get() for _ in range(4)]
        await task
        log.append(f"got {got}")
        return log, queue.statistics()

    log, stats = backend.run(main)
    assert log == [
        "put 0",
        "put 1",
        "consumer wakes",
        "put 2",
        "put 3",
        "got [0, 1, 2, 3]",
    ]
    assert (stats.put, stats.got, stats.dropped, stats.size) == (4, 4, 0, 0)


@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop-oldest", [3, 4]), ("drop-newest", [0, 1])]
)
def test_drop_policies_count_what_they_drop(
    backend: Backend, overflow: Any, kept: list[int]
) -> None:
    async def main(net: Any) -> tuple[list[int], int]:
        queue: Queue[int] = Queue(net.runtime("a"), 2, overflow)
        for i in range(5):
            await queue.put(i)
        return queue.drain(), queue.statistics().dropped

    assert backend.run(main) == (kept, 3)


def test_close_lets_consumers_drain_then_stops_them(backend: Backend) -> None:
    async def main(net: Any) -> list[int]:
        queue: Queue[int] = Queue(net.runtime("a"), 10)
        for i in range(3):
            queue.put_nowait(i)
        queue.close()
        with pytest.raises(ClosedResourceError):
            await queue.put(9)
        got = [await queue.get() for _ in range(3)]
        with pytest.raises(ClosedResourceError):
            await queue.get()
        return got

    assert backend.run(main) == [0, 1, 2]


def test_get_batch_takes_what_is_queued_and_makes_room(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[list[int]], list[str], Any]:
        rt = net.runtime("a")
        queue: Queue[int] = Queue(rt, 3)
        log: list[str] = []

        async def producer() -> None:
            for i in range(6):
                await queue.put(i)
                log.append(f"put {i}")

        task = rt.spawn(producer(), name="producer")
        await rt.sleep(0.01)
        batches = [await queue.get_batch(2), await queue.get_batch()]
        await task
        batches.append(await queue.get_batch())
        queue.close()
        with pytest.raises(ClosedResourceError):
            await queue.get_batch()
        with pytest.raises(ConfigError):
            await queue.get_batch(0)
        return batches, log, queue.statistics()

    batches, log, stats = backend.run(main)
    assert batches == [[0, 1], [2], [3, 4, 5]]
    assert log == [f"put {i}" for i in range(6)]
    assert (stats.put, stats.got, stats.size) == (6, 6, 0)


def test_get_batch_waits_for_an_item(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[int], float]:
        rt = net.runtime("a")
        queue: Queue[int] = Queue(rt, 10)
        rt.call_later(0.5, lambda: queue.put_nowait(7))
        started = rt.now()
        batch = await queue.get_batch()
        return batch, rt.now() - started

    batch, waited = backend.run(main)
    assert batch == [7]
    if backend.simulated:
        assert waited == pytest.approx(0.5)


def test_a_cancelled_getter_does_not_swallow_an_item(backend: Backend) -> None:
    async def main(net: Any) -> list[int]:
        rt = net.runtime("a")
        queue: Queue[int] = Queue(rt, 10)
        first = rt.spawn(queue.get(), name="first")
        second = rt.spawn(queue.get(), name="second")
        await rt.sleep(0.01)
        first.cancel()
        queue.put_nowait(7)
        return [await second]

    assert backend.run(main) == [7]


def test_event_wakes_every_waiter(backend: Backend) -> None:
    async def main(net: Any) -> list[str]:
        rt = net.runtime("a")
        event = Event(rt)
        woke: list[str] = []

        async def waiter(name: str) -> None:
            await event.wait()
            woke.append(name)

        tasks = [rt.spawn(waiter(n), name=n) for n in ("x", "y")]
        await rt.sleep(0.01)
        assert woke == []
        event.set()
        for task in tasks:
            await task
        return sorted(woke)

    assert backend.run(main) == ["x", "y"]


def test_bad_queue_arguments_are_config_errors(backend: Backend) -> None:
    async def main(net: Any) -> None:
        with pytest.raises(ConfigError, match="maxsize"):
            Queue(net.runtime("a"), 0)
        with pytest.raises(ConfigError, match="overflow"):
            Queue(net.runtime("a"), 1, "explode")  # type: ignore[arg-type]

    backend.run(main)


def test_log_records_carry_runtime_time_and_node(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def main(net: Any) -> tuple[float, float]:
        rt = net.runtime("a")
        await rt.sleep(0.25)
        before = rt.now()
        node_logger("node", rt, "alpha").info("hello %s", "there")
        return before, rt.now()

    with caplog.at_level(logging.INFO, logger="chaski.node"):
        before, after = backend.run(main)
    record = caplog.records[-1]
    assert record.name == "chaski.node" and record.getMessage() == "hello there"
    assert record.node == "alpha"  # type: ignore[attr-defined]
    assert before <= record.runtime_time <= after  # type: ignore[attr-defined]
    text = RuntimeFormatter().format(record)
    assert text.split()[1:4] == ["alpha", "chaski.node", "INFO"]
    if backend.simulated:
        assert text.startswith("  0.250000 ")


def test_unknown_logger_topics_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown logger"):
        node_logger("everything", None, "x")  # type: ignore[arg-type]

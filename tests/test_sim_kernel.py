"""The simulated kernel: the trampoline, cancellation, timeouts and timers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import networkx as nx
import pytest

from chaski_actors.sim import SimNetwork
from chaski_actors.sim._kernel import Clock
from chaski_actors.sim.harness import SimulationStuckError, run_sim


def one_host() -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_node("h")
    return graph


def test_sleep_advances_virtual_time_exactly() -> None:
    async def main(net: SimNetwork) -> list[float]:
        rt = net.runtime("h")
        times = []
        for delay in (0.5, 1.25, 0.0, 3.0):
            await rt.sleep(delay)
            times.append(rt.now())
        return times

    assert run_sim(main, one_host()) == [0.5, 1.75, 1.75, 4.75]


def test_cancellation_raises_inside_the_coroutine_and_runs_finally() -> None:
    async def main(net: SimNetwork) -> tuple[list[str], bool, float]:
        rt = net.runtime("h")
        seen: list[str] = []

        async def sleeper() -> None:
            try:
                await rt.sleep(10.0)
                seen.append("woke")
            except rt.cancelled_error:
                seen.append(f"cancelled at {rt.now()}")
                raise
            finally:
                seen.append("cleaned up")

        task = rt.spawn(sleeper(), name="sleeper")
        await rt.sleep(2.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen, task.done(), rt.now()

    seen, done, now = run_sim(main, one_host())
    assert seen == ["cancelled at 2.0", "cleaned up"]
    assert done and now == 2.0


def test_a_task_cancelled_before_it_starts_never_runs() -> None:
    async def main(net: SimNetwork) -> list[str]:
        rt = net.runtime("h")
        ran: list[str] = []

        async def body() -> None:
            ran.append("ran")

        task = rt.spawn(body(), name="never")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ran

    assert run_sim(main, one_host()) == []


def test_timeout_fires_at_the_exact_virtual_time() -> None:
    async def main(net: SimNetwork) -> tuple[float, float]:
        rt = net.runtime("h")
        with pytest.raises(TimeoutError):
            async with rt.timeout(1.5):
                await rt.sleep(100.0)
        fired = rt.now()
        # A timeout that does not fire leaves the task cancellable as usual.
        async with rt.timeout(5.0):
            await rt.sleep(1.0)
        return fired, rt.now()

    assert run_sim(main, one_host()) == (1.5, 2.5)


def test_cancelled_timers_do_not_pile_up_in_simpy() -> None:
    async def main(net: SimNetwork) -> tuple[int, int, int]:
        rt = net.runtime("h")
        fired: list[int] = []
        timers = [
            rt.call_later(10.0 + i * 0.001, lambda i=i: fired.append(i))
            for i in range(10_000)
        ]
        for timer in timers[1:]:
            timer.cancel()
        # Thousands of cancelled deadlines, yet the heap was compacted: it
        # holds a few dozen dead entries at most, and one live timer.
        queued = len(net.env._queue)
        live = len(net.kernel.timers)
        await rt.sleep(20.0)
        return queued, live, len(fired)

    queued, live, fired = run_sim(main, one_host())
    assert queued < 200
    assert live == 1
    assert fired == 1


def test_sleeps_of_cancelled_tasks_do_not_pile_up_in_simpy() -> None:
    async def main(net: SimNetwork) -> tuple[int, float]:
        rt = net.runtime("h")
        tasks = [
            rt.spawn(rt.sleep(100.0 + i), name=f"sleeper-{i}") for i in range(1_000)
        ]
        await rt.sleep(1.0)
        for task in tasks:
            task.cancel()
        await rt.sleep(1.0)
        queued = len(net.env._queue)
        # The simulation ends when main does, not when dead sleeps come due.
        return queued, rt.now()

    queued, now = run_sim(main, one_host())
    assert queued < 200
    assert now == 2.0


def test_timers_fire_in_time_order_and_ties_in_creation_order() -> None:
    async def main(net: SimNetwork) -> list[tuple[float, str]]:
        rt = net.runtime("h")
        order: list[tuple[float, str]] = []
        for name, delay in [("c", 2.0), ("a", 1.0), ("b", 1.0), ("d", 0.5)]:
            rt.call_later(delay, lambda n=name: order.append((rt.now(), n)))
        await rt.sleep(3.0)
        return order

    assert run_sim(main, one_host()) == [
        (0.5, "d"),
        (1.0, "a"),
        (1.0, "b"),
        (2.0, "c"),
    ]


def test_a_crashing_task_is_logged_and_its_error_reaches_joiners(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main(net: SimNetwork) -> str:
        rt = net.runtime("h")

        async def broken() -> None:
            await rt.sleep(1.0)
            raise KeyError("lost key")

        task = rt.spawn(broken(), name="broken")
        with pytest.raises(KeyError) as info:
            await task
        return str(info.value)

    with caplog.at_level(logging.ERROR, logger="chaski.runtime"):
        assert run_sim(main, one_host()) == "'lost key'"
    assert "task h/broken crashed" in caplog.text


def test_awaiting_a_foreign_awaitable_is_a_clear_error() -> None:
    class Foreign:
        def __await__(self) -> Any:
            yield "not a simpy event"

    async def main(net: SimNetwork) -> str:
        with pytest.raises(TypeError) as info:
            await Foreign()
        return str(info.value)

    assert "cannot resume" in run_sim(main, one_host())


def test_a_main_that_waits_forever_is_reported_not_hung() -> None:
    async def main(net: SimNetwork) -> None:
        await net.runtime("h").create_future()

    with pytest.raises(SimulationStuckError, match="did not finish"):
        run_sim(main, one_host(), limit=10.0)


def test_futures_deliver_results_and_exceptions() -> None:
    async def main(net: SimNetwork) -> tuple[int, str]:
        rt = net.runtime("h")
        ok, bad = rt.create_future(), rt.create_future()
        rt.call_later(1.0, lambda: ok.set_result(42))
        rt.call_later(2.0, lambda: bad.set_exception(ValueError("nope")))
        value = await ok
        with pytest.raises(ValueError) as info:
            await bad
        assert ok.done() and ok.result() == 42
        return value, str(info.value)

    assert run_sim(main, one_host()) == (42, "nope")


def test_unique_ids_and_random_streams_are_per_host_and_seeded() -> None:
    graph = one_host()
    graph.add_node("g")

    async def main(net: SimNetwork) -> tuple[list[str], float, float]:
        h, g = net.runtime("h"), net.runtime("g")
        ids = [h.unique_id(), h.unique_id(), g.unique_id()]
        return ids, h.random.random(), g.random.random()

    ids, h1, g1 = run_sim(main, graph, seed=5)
    assert len(set(ids)) == 3
    assert h1 != g1
    assert run_sim(main, graph, seed=5) == (ids, h1, g1)
    assert run_sim(main, graph, seed=6)[1] != h1


def test_call_soon_runs_before_time_moves_and_dies_with_its_host() -> None:
    graph = one_host()
    graph.add_node("g")

    async def main(net: SimNetwork) -> tuple[list[str], int]:
        rt, other = net.runtime("h"), net.runtime("g")
        log: list[str] = []
        rt.call_later(0.0, lambda: log.append(f"timer at {rt.now()}"))
        rt.call_soon(lambda: log.append(f"soon at {rt.now()}"))
        rt.call_soon(lambda: log.append("cancelled")).cancel()
        # Queued by a host that crashes before its turn: never runs.
        other.call_soon(lambda: log.append("crashed host"))
        net.crash("g")
        await rt.sleep(1.0)
        return log, len(net.kernel.timers)

    log, timers = run_sim(main, graph)
    # The ready queue goes before the timer heap, even for a timer due now.
    assert log == ["soon at 0.0", "timer at 0.0"]
    assert timers == 0


def test_end_of_turn_callbacks_after_a_failing_one_run_once_each() -> None:
    # Callbacks queued one after another share a ready-queue entry; when one
    # raises, each of those after it must still run exactly once, even if
    # the failing one is also in the list earlier.
    clock = Clock()
    log: list[str] = []

    def twice() -> None:
        log.append("twice")
        if log.count("twice") == 2:
            raise RuntimeError("second call")

    for callback in (twice, lambda: log.append("h"), twice, lambda: log.append("k")):
        clock.at_turn_end(callback, None)
    with pytest.raises(RuntimeError, match="second call"):
        clock.step()
    clock.step()
    assert log == ["twice", "h", "twice", "k"]

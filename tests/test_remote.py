"""Remote objects on both backends: calls, reads, errors, limits and bad input."""

from __future__ import annotations

import datetime as dt
from contextlib import AsyncExitStack
from typing import Any

import numpy as np
import pytest

from chaski_actors import Node, Settings
from chaski_actors.errors import (
    ConfigError,
    LinkLostError,
    MalformedCallError,
    RefusedNameError,
    RemoteBusyError,
    RemoteError,
    RemoteTimeoutError,
    UnknownNameError,
)
from chaski_actors.remote import CALL, CANCEL, Remote
from chaski_actors.testing import eventually
from conftest import Backend

A_B = 0.010  # one-way latency a-b in the test topology


class Limits:
    def __init__(self) -> None:
        self.upper = 10
        self.secret = "nested but exposed through limits"


class Counter:
    """The object under test: sync and async methods, attributes, a secret."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.total = 0
        self.limits = Limits()
        self.hidden = "not exposed"
        self._private = "never"
        self.runs = 0
        self.cancelled = 0
        self.slow_runs = 0

    def add(self, amount: int = 1, *, times: int = 1) -> int:
        self.runs += 1
        self.total += amount * times
        return self.total

    async def slow(self, seconds: float, value: Any = None) -> Any:
        self.slow_runs += 1
        try:
            await self.runtime.sleep(seconds)
        except self.runtime.cancelled_error:
            self.cancelled += 1
            raise
        return value

    def echo(self, value: Any) -> Any:
        return value

    def later(self, seconds: float) -> Any:
        """A plain method that hands back a coroutine for the callee to await."""
        return self.slow(seconds, "later")

    def fail(self) -> None:
        raise ValueError("the counter refuses")

    def give_up(self) -> None:
        """A plain method that raises the cancellation error of its own accord."""
        raise self.runtime.cancelled_error()

    async def give_up_later(self) -> None:
        """A coroutine method that raises the cancellation error of its own accord."""
        await self.runtime.sleep(0.01)
        raise self.runtime.cancelled_error()

    def unencodable(self) -> object:
        return object()


EXPOSE = [
    "add",
    "slow",
    "echo",
    "later",
    "fail",
    "give_up",
    "give_up_later",
    "unencodable",
    "total",
    "limits",
]


async def pair(
    net: Any, stack: AsyncExitStack, settings: Settings | None = None
) -> tuple[Remote, Remote, Counter]:
    a = await stack.enter_async_context(Node(net.runtime("a"), "a"))
    b = await stack.enter_async_context(Node(net.runtime("b"), "b", settings=settings))
    caller, owner = Remote(a), Remote(b)
    counter = Counter(b.runtime)
    owner.register("counter", counter, expose=EXPOSE)
    await a.connect(*b.address)
    await eventually(a.runtime, lambda: "a" in b.links)
    return caller, owner, counter


def test_methods_attributes_and_nested_reads(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[Any], float, str]:
        async with AsyncExitStack() as stack:
            caller, _owner, counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            start = caller.runtime.now()
            first = await proxy.add(2, times=3)
            took = caller.runtime.now() - start
            got = [
                first,
                await proxy.add(),
                await proxy.total,
                await proxy.limits.upper,
                await proxy.slow(0.5, "late"),
                counter.runs,
            ]
            return got, took, repr(proxy)

    got, took, text = backend.run(main)
    assert got == [6, 7, 7, 10, "late", 2]
    assert text.startswith("<Proxy counter on b exposes=['add', 'slow'")
    if backend.simulated:
        assert took == pytest.approx(2 * A_B, abs=1e-12)


def test_values_survive_the_trip(backend: Backend) -> None:
    values: list[Any] = [
        None,
        True,
        -(2**63),
        3.5,
        "text",
        b"\x00\xff",
        [1, [2, {"k": "v"}]],
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        1 + 2j,
    ]

    async def main(net: Any) -> tuple[list[Any], Any, bytes]:
        async with AsyncExitStack() as stack:
            caller, _owner, _counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            echoed = [await proxy.echo(value) for value in values]
            array = await proxy.echo(np.arange(12, dtype=np.float32).reshape(3, 4))
            return echoed, array, await proxy.echo(bytearray(b"abc"))

    echoed, array, as_bytes = backend.run(main)
    assert echoed == values
    assert array.dtype == np.float32 and array.shape == (3, 4)
    assert array.tolist() == np.arange(12).reshape(3, 4).tolist()
    assert as_bytes == b"abc"


def test_concurrent_calls_are_matched_by_id(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[int], float]:
        async with AsyncExitStack() as stack:
            caller, _owner, _counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            runtime = caller.runtime
            # Later calls finish first: answers come back out of order.
            tasks = [
                runtime.spawn(proxy.slow(0.01 * (10 - i), i), name=f"c{i}")
                for i in range(10)
            ]
            start = runtime.now()
            results = [await task for task in tasks]
            return results, runtime.now() - start

    results, took = backend.run(main)
    assert results == list(range(10))
    if backend.simulated:
        assert took == pytest.approx(0.1 + 2 * A_B, abs=1e-9)


def test_errors_are_typed(backend: Backend) -> None:
    async def main(net: Any) -> list[RemoteError]:
        async with AsyncExitStack() as stack:
            caller, _owner, _counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            errors: list[RemoteError] = []
            attempts = [
                proxy.fail(),
                caller.proxy("b", "nothing"),
                proxy.limits.missing,
                proxy.hidden,
                caller.request("b", "get", "counter", ("_private",)),
                caller.request("b", "call", "counter", ("limits", "__class__")),
                proxy.unencodable(),
                proxy.total(),
            ]
            for attempt in attempts:
                try:
                    await attempt
                except RemoteError as exc:
                    errors.append(exc)
            return errors

    errors = backend.run(main)
    assert [type(e) for e in errors] == [
        RemoteError,
        UnknownNameError,
        UnknownNameError,
        RefusedNameError,
        RefusedNameError,
        RefusedNameError,
        RemoteError,
        RemoteError,
    ]
    fail = errors[0]
    assert (fail.code, fail.remote_type, fail.remote_message) == (
        "exception",
        "ValueError",
        "the counter refuses",
    )
    assert "no object named 'nothing'" in str(errors[1])
    assert "counter.hidden is not exposed" in str(errors[3])
    assert "private" in str(errors[4])
    assert errors[6].code == "unencodable"
    assert errors[7].remote_type == "TypeError" and "not callable" in str(errors[7])


def test_private_names_are_refused_locally_too(backend: Backend) -> None:
    async def main(net: Any) -> None:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            with pytest.raises(AttributeError):
                proxy._private  # noqa: B018
            with pytest.raises(ConfigError, match="private"):
                owner.register("other", counter, expose=["_private"])
            with pytest.raises(ConfigError, match="has no"):
                owner.register("other", counter, expose=["missing"])

    backend.run(main)


def test_timeout_cancels_the_call_on_the_callee(backend: Backend) -> None:
    async def main(net: Any) -> tuple[float, int, Any]:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter", timeout=0.2)
            start = caller.runtime.now()
            with pytest.raises(RemoteTimeoutError) as info:
                await proxy.slow(10.0)
            took = caller.runtime.now() - start
            assert isinstance(info.value, TimeoutError)
            await eventually(caller.runtime, lambda: counter.cancelled == 1)
            return took, counter.cancelled, owner.statistics().book

    took, cancelled, book = backend.run(main)
    assert cancelled == 1 and book.cancelled == 1 and book.running == 0
    if backend.simulated:
        assert took == pytest.approx(0.2, abs=1e-12)


def test_cancelling_the_caller_cancels_the_callee(backend: Backend) -> None:
    async def main(net: Any) -> int:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            task = caller.runtime.spawn(proxy.slow(10.0), name="doomed")
            await eventually(caller.runtime, lambda: owner.book.statistics().running)
            task.cancel()
            await eventually(caller.runtime, lambda: counter.cancelled == 1)
            assert caller.statistics().pending_out == 0
            return owner.statistics().book.running

    assert backend.run(main) == 0


def test_a_lost_link_fails_the_calls_in_flight(backend: Backend) -> None:
    async def main(net: Any) -> tuple[str, int]:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            task = caller.runtime.spawn(proxy.slow(10.0), name="in-flight")
            await eventually(caller.runtime, lambda: owner.book.statistics().running)
            await owner.node.stop()
            with pytest.raises(LinkLostError) as info:
                await task
            with pytest.raises(LinkLostError, match="no link"):
                await proxy.add()
            await eventually(caller.runtime, lambda: counter.cancelled == 1)
            return str(info.value), caller.statistics().links_lost

    message, lost = backend.run(main)
    assert "link to b closed during the call" in message and lost == 1


def test_malformed_calls_get_a_clear_error_and_the_link_lives(
    backend: Backend,
) -> None:
    async def main(net: Any) -> tuple[list[str], int, int]:
        async with AsyncExitStack() as stack:
            caller, owner, _counter = await pair(net, stack)
            messages = []
            for op, path in [("explode", ("add",)), ("call", ("not a name",))]:
                with pytest.raises(MalformedCallError) as info:
                    await caller.request("b", op, "counter", path)
                messages.append(str(info.value))
            # Without even a call id, the refusal cannot be matched; it is
            # counted, and the link carries on.
            link = caller.node.links["b"]
            await link.send_frame(CALL, "not a call")
            await link.send_frame(CALL, [1, 2, 3])
            await eventually(
                caller.runtime, lambda: owner.statistics().refused_malformed == 4
            )
            proxy = await caller.proxy("b", "counter")
            total = await proxy.add(5)
            return messages, total, len(caller.node.links)

    messages, total, links = backend.run(main)
    assert "op must be one of call, get, describe" in messages[0]
    assert "Python identifier" in messages[1]
    assert (total, links) == (5, 1)


def test_a_flood_is_refused_and_others_are_served(backend: Backend) -> None:
    settings = Settings().replace(remote_max_calls=8, remote_max_calls_per_peer=4)

    async def main(net: Any) -> tuple[int, int, Any, Any]:
        async with AsyncExitStack() as stack:
            caller, owner, _counter = await pair(net, stack, settings)
            c = await stack.enter_async_context(Node(net.runtime("c"), "c"))
            other = Remote(c)
            await c.connect(*owner.node.address)
            flood = await caller.proxy("b", "counter")
            tasks = [
                caller.runtime.spawn(flood.slow(1.0, i), name=f"f{i}")
                for i in range(50)
            ]
            polite = await other.proxy("b", "counter")
            assert await polite.add(1) == 1
            ok = busy = 0
            for task in tasks:
                try:
                    await task
                    ok += 1
                except RemoteBusyError:
                    busy += 1
            return ok, busy, owner.statistics().book, repr(owner)

    ok, busy, book, text = backend.run(main)
    assert (ok, busy) == (4, 46)
    assert book.refused_busy == 46 and book.running == 0
    assert text == "<Remote b objects=['counter'] pending=0 running=0>"


def test_a_repeated_call_runs_once(backend: Backend) -> None:
    async def main(net: Any) -> tuple[int, Any]:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack)
            link = caller.node.links["b"]
            call = [777, "call", "counter", ["add"], [1], {}]
            for _ in range(3):  # as a link might resend after reconnecting
                await link.send_frame(CALL, call)
            await eventually(
                caller.runtime, lambda: owner.statistics().book.duplicates == 2
            )
            return counter.runs, owner.statistics().book

    runs, book = backend.run(main)
    assert runs == 1
    assert (book.admitted, book.duplicates, book.remembered) == (1, 2, 1)


def test_a_call_survives_a_reset_and_runs_once(backend: Backend) -> None:
    async def main(net: Any) -> tuple[Any, int, int]:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            task = caller.runtime.spawn(proxy.slow(0.3, "answer"), name="call")
            await eventually(caller.runtime, lambda: owner.book.statistics().running)
            stream = owner.node.links["a"].stream
            assert stream is not None
            stream.abort()  # the connection breaks while the call runs
            answer = await task
            return answer, counter.slow_runs, caller.node.statistics().reconnections

    answer, runs, reconnections = backend.run(main)
    assert (answer, runs, reconnections) == ("answer", 1, 1)


def test_a_module_can_be_registered(backend: Backend) -> None:
    import math

    async def main(net: Any) -> tuple[float, float, str]:
        async with AsyncExitStack() as stack:
            caller, owner, _counter = await pair(net, stack)
            owner.register("math", math, expose=["sqrt", "pi"])
            proxy = await caller.proxy("b", "math")
            with pytest.raises(RefusedNameError) as info:
                await proxy.floor(2.5)
            return await proxy.sqrt(16.0), await proxy.pi, str(info.value)

    root, pi, refused = backend.run(main)
    assert (root, pi) == (4.0, pytest.approx(3.141592653589793))
    assert refused == "math.floor is not exposed by b"


def test_unencodable_arguments_fail_on_the_caller(backend: Backend) -> None:
    async def main(net: Any) -> int:
        async with AsyncExitStack() as stack:
            caller, _owner, _counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            with pytest.raises(ConfigError, match="cannot send call to b"):
                await proxy.echo(object())
            return int(await proxy.add(1))

    assert backend.run(main) == 1


def test_a_busy_caller_waits_its_turn_instead_of_being_refused(
    backend: Backend,
) -> None:
    async def main(net: Any) -> tuple[list[int], float, Any]:
        async with AsyncExitStack() as stack:
            caller, owner, _counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            runtime = caller.runtime
            start = runtime.now()
            tasks = [
                runtime.spawn(proxy.slow(0.1, i), name=f"c{i}") for i in range(100)
            ]
            results = [await task for task in tasks]
            return results, runtime.now() - start, owner.statistics().book

    results, took, book = backend.run(main)
    assert results == list(range(100))
    assert book.refused_busy == 0 and book.admitted == 101  # and the describe
    if backend.simulated:
        # 16 calls in flight at a time (remote_max_calls_per_peer): seven
        # waves, each a 0.1 s call plus a 20 ms round trip.
        assert took == pytest.approx(7 * 0.12, abs=1e-9)


def test_plain_methods_run_inline_and_within_the_limits(backend: Backend) -> None:
    settings = Settings().replace(remote_max_calls=8, remote_max_calls_per_peer=2)

    async def main(net: Any) -> tuple[list[Any], int, Any, str]:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack, settings)
            proxy = await caller.proxy("b", "counter")
            link = caller.node.links["b"]
            # Two slow calls hold the peer's two slots, so a plain method
            # from the same peer is refused like any other call.
            for call_id in (10**6 + 1, 10**6 + 2):
                await link.send_frame(
                    CALL, [call_id, "call", "counter", ["slow"], [1.0], {}]
                )
            await eventually(
                caller.runtime, lambda: owner.book.statistics().running == 2
            )
            with pytest.raises(RemoteBusyError):
                await proxy.add(1)
            await eventually(
                caller.runtime, lambda: owner.book.statistics().running == 0
            )
            # A plain method finishes before the reader reads on: the book
            # never holds it, and a later duplicate is answered from the book.
            got = [await proxy.add(1) for _ in range(3)]
            await link.send_frame(CALL, [10**6, "call", "counter", ["add"], [5], {}])
            await link.send_frame(CALL, [10**6, "call", "counter", ["add"], [5], {}])
            await eventually(
                caller.runtime, lambda: owner.book.statistics().duplicates == 1
            )
            # A plain method that returns a coroutine has it awaited in a task,
            # and a timeout cancels it there.
            short = await caller.proxy("b", "counter", timeout=0.2)
            with pytest.raises(RemoteTimeoutError):
                await short.later(10.0)
            await eventually(caller.runtime, lambda: counter.cancelled == 1)
            return got, counter.runs, owner.statistics().book, repr(owner)

    got, runs, book, text = backend.run(main)
    assert got == [1, 2, 3] and runs == 4
    assert book.running == 0 and book.refused_busy == 1 and book.cancelled == 1
    assert text == "<Remote b objects=['counter'] pending=0 running=0>"


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_call_cancelled_before_it_starts_gives_back_its_slot(
    backend: Backend,
) -> None:
    async def main(net: Any) -> tuple[Any, int]:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack)
            link = caller.node.links["b"]
            for call_id in range(10**6, 10**6 + 5):
                # Back to back, so the cancellation may arrive in the same
                # read as its call, before the call's task took a step.
                await link.send_frame(
                    CALL, [call_id, "call", "counter", ["slow"], [5.0], {}]
                )
                await link.send_frame(CANCEL, call_id)
            await eventually(
                caller.runtime, lambda: owner.book.statistics().cancelled == 5
            )
            proxy = await caller.proxy("b", "counter")
            assert await proxy.add(1) == 1
            return owner.statistics().book, counter.slow_runs - counter.cancelled

    book, finished = backend.run(main)
    assert book.running == 0 and book.cancelled == 5 and finished == 0


def test_answers_never_make_the_reader_wait_for_room(backend: Backend) -> None:
    # With room for two unacknowledged frames, most answers must wait for
    # the caller's acknowledgement, which only the callee's reader can read.
    settings = Settings().replace(send_buffer_frames=2)

    async def main(net: Any) -> tuple[list[Any], list[Any], Any]:
        async with AsyncExitStack() as stack:
            caller, owner, _counter = await pair(net, stack, settings)
            proxy = await caller.proxy("b", "counter")
            runtime = caller.runtime
            calls = [runtime.spawn(proxy.echo(i), name=f"c{i}") for i in range(12)]
            reads = [runtime.spawn(_read(proxy), name=f"r{i}") for i in range(12)]
            return (
                [await t for t in calls],
                [await t for t in reads],
                owner.statistics().book,
            )

    echoed, read, book = backend.run(main)
    assert echoed == list(range(12)) and read == [10] * 12
    assert book.running == 0


async def _read(proxy: Any) -> Any:
    return await proxy.limits.upper


def test_each_call_keeps_its_own_deadline(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[float], int, Any]:
        async with AsyncExitStack() as stack:
            caller, owner, counter = await pair(net, stack)
            runtime = caller.runtime
            proxies = [
                await caller.proxy("b", "counter", timeout=seconds)
                for seconds in (0.3, 0.1, 0.2)
            ]

            async def timed(proxy: Any) -> float:
                start = runtime.now()
                with pytest.raises(RemoteTimeoutError):
                    await proxy.slow(10.0)
                return runtime.now() - start

            # The longest deadline arms the sweep first; later, shorter ones
            # must bring it forward, and a quick call meanwhile changes nothing.
            tasks = [
                runtime.spawn(timed(p), name=f"t{i}") for i, p in enumerate(proxies)
            ]
            assert await proxies[0].add(1) == 1
            took = [await task for task in tasks]
            await eventually(runtime, lambda: counter.cancelled == 3)
            return took, caller.statistics().timeouts, owner.statistics().book

    took, timeouts, book = backend.run(main)
    assert timeouts == 3 and book.cancelled == 3 and book.running == 0
    if backend.simulated:
        assert took == [pytest.approx(s, abs=1e-9) for s in (0.3, 0.1, 0.2)]
    else:
        # Never early; how late depends on the machine's load.
        assert all(t >= s - 1e-3 for s, t in zip((0.3, 0.1, 0.2), took, strict=True))


class Blobs:
    def blob(self, size: int) -> bytes:
        return b"x" * size


def test_an_answer_too_large_for_the_link_is_refused_not_lost(
    backend: Backend,
) -> None:
    settings = Settings().replace(max_frame_size=4096)

    async def main(net: Any) -> tuple[list[str], int]:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                Node(net.runtime("a"), "a", settings=settings)
            )
            b = await stack.enter_async_context(
                Node(net.runtime("b"), "b", settings=settings)
            )
            Remote(b).register("blobs", Blobs(), expose=["blob"])
            caller = Remote(a)
            await a.connect(*b.address)
            proxy = await caller.proxy("b", "blobs")
            codes = []
            # The first fits a frame but not a numbered frame's room for
            # one; the second fits nothing. Both come back as errors.
            for size in (4080, 10_000):
                with pytest.raises(RemoteError) as info:
                    await proxy.blob(size)
                codes.append(info.value.code)
            return codes, len(await proxy.blob(100))

    codes, size = backend.run(main)
    assert codes == ["unencodable", "unencodable"] and size == 100


def test_a_plain_method_raising_cancellation_does_not_end_the_link(
    backend: Backend,
) -> None:
    async def main(net: Any) -> tuple[str, int, int]:
        async with AsyncExitStack() as stack:
            caller, owner, _counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            with pytest.raises(RemoteError) as info:
                await proxy.give_up()
            total = await proxy.add(2)
            return info.value.remote_type, total, owner.statistics().book.running

    remote_type, total, running = backend.run(main)
    assert remote_type == "CancelledError" and (total, running) == (2, 0)


def test_a_coroutine_method_raising_cancellation_is_answered_as_a_failure(
    backend: Backend,
) -> None:
    # The callee's task was not cancelled, so the call is over and failed;
    # its caller hears so at once instead of waiting for its deadline.
    async def main(net: Any) -> tuple[str, float, int, int]:
        async with AsyncExitStack() as stack:
            caller, owner, _counter = await pair(net, stack)
            proxy = await caller.proxy("b", "counter")
            started = caller.runtime.now()
            with pytest.raises(RemoteError) as info:
                await proxy.give_up_later()
            waited = caller.runtime.now() - started
            total = await proxy.add(3)
            return (
                info.value.remote_type,
                waited,
                total,
                owner.statistics().book.running,
            )

    remote_type, waited, total, running = backend.run(main)
    assert remote_type == "CancelledError"
    assert waited < Settings().call_timeout_s / 2
    assert (total, running) == (3, 0)


def test_a_caller_whose_send_must_wait_still_keeps_its_deadline(
    backend: Backend,
) -> None:
    # Room for one unacknowledged frame on the caller's side: every call
    # after the first waits in the link's send for the callee's
    # acknowledgement, at least a round trip.
    settings = Settings().replace(send_buffer_frames=1)

    async def main(net: Any) -> tuple[list[Any], int, int]:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                Node(net.runtime("a"), "a", settings=settings)
            )
            b = await stack.enter_async_context(Node(net.runtime("b"), "b"))
            owner = Remote(b)
            owner.register("counter", Counter(b.runtime), expose=EXPOSE)
            caller = Remote(a)
            await a.connect(*b.address)
            proxy = await caller.proxy("b", "counter")
            runtime = caller.runtime
            calls = [runtime.spawn(proxy.echo(i), name=f"c{i}") for i in range(6)]
            await runtime.sleep(0)  # the calls above fill the send buffer
            with pytest.raises(RemoteTimeoutError):
                # Over before any acknowledgement can make room for it.
                await caller.request(
                    "b", "call", "counter", ("echo",), args=("late",), timeout=0.0
                )
            results = [await task for task in calls]
            return (
                results,
                caller.statistics().pending_out,
                caller.statistics().timeouts,
            )

    results, pending, timeouts = backend.run(main)
    assert results == list(range(6)) and pending == 0 and timeouts == 1

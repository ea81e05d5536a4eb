"""Driving ``async def`` code with simpy: the trampoline, futures and timers.

Actors are ordinary coroutines. Under asyncio, an awaited future yields itself
to the event loop, which resumes the coroutine when the future is done. Here
the same happens with simpy in place of the loop:

* every awaitable the simulated runtime hands out yields a ``simpy.Event``;
* a :class:`SimTask` is a trampoline driven by event callbacks: it sends the
  coroutine the value of the event it last yielded (or throws the event's
  failure into it), takes the next event the coroutine yields, and hangs
  itself on that event's callbacks. It starts from an event scheduled like
  simpy's own process initialisation, so tasks start in spawn order;
* cancelling a task unhooks it from the event it waits for and schedules a
  wake-up that throws ``asyncio.CancelledError`` at the coroutine's current
  ``await``, so ``try``/``finally`` and ``async with`` clean up exactly as they
  would under asyncio.

A task is not a ``simpy.Process``. A process costs two more events per life
(its initialisation and its own termination) and a generator frame between
simpy and the coroutine on every step; tasks are spawned for every call and
every acknowledgement, and resumed several times per delivered message, so
those costs were a large share of a simulation's wall-clock time.

A coroutine that awaits something foreign (an asyncio future, say) gets a
``TypeError`` thrown back in, because simpy could never resume it.

Timers. simpy cannot take back a timeout once scheduled, so thousands of
cancelled keep-alive or call deadlines would sit in its event queue until
their time came. :class:`TimerQueue` keeps timers in a heap of its own and
arms at most one simpy timeout, for the earliest live one. Cancelling marks a
timer dead; dead entries are dropped when they reach the head, and the heap is
compacted when they outnumber the living, so cancelled timers cost nothing
later. ``sleep`` is built on the same queue.

Determinism. simpy breaks ties in time by an insertion counter, the timer
heap by a sequence number, so equal inputs give equal schedules.
"""

from __future__ import annotations

import heapq
import logging
from asyncio import CancelledError
from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

import simpy
from simpy.events import URGENT as _URGENT

T = TypeVar("T")

log = logging.getLogger("chaski.runtime")

_PENDING = object()

# _URGENT: task starts and cancellations run before ordinary events of the
# same instant, as simpy's own process starts and interrupts do.


class TimerHandle:
    """One scheduled callback in a :class:`TimerQueue`."""

    __slots__ = ("_callback", "_queue", "when")

    def __init__(
        self, queue: TimerQueue, when: float, callback: Callable[[], None]
    ) -> None:
        self._queue = queue
        self._callback: Callable[[], None] | None = callback
        self.when = when

    def cancel(self) -> None:
        if self._callback is not None:
            self._callback = None
            self._queue._cancelled_one()

    def cancelled(self) -> bool:
        return self._callback is None

    def __lt__(self, other: TimerHandle) -> bool:  # only for heap tie safety
        return self.when < other.when


class TimerQueue:
    """Cancellable timers over simpy, with at most one armed simpy timeout."""

    # Below this many dead entries a compaction costs more than it saves.
    _COMPACT_MIN = 64

    def __init__(self, env: simpy.Environment) -> None:
        self._env = env
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = 0
        self._dead = 0
        self._armed: simpy.Event | None = None
        self._armed_at = float("inf")

    def __len__(self) -> int:
        return len(self._heap) - self._dead

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(self, when, callback)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, handle))
        if when < self._armed_at:
            self._arm(when)
        return handle

    def _arm(self, when: float) -> None:
        # The previously armed timeout, if any, fires later and is ignored.
        event = self._env.timeout(max(0.0, when - self._env.now))
        event.callbacks.append(self._wake)
        self._armed = event
        self._armed_at = when

    def _wake(self, event: simpy.Event) -> None:
        if event is not self._armed:
            return
        self._armed = None
        self._armed_at = float("inf")

        now = self._env.now
        heap = self._heap
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            callback = handle._callback
            if callback is None:
                self._dead -= 1
                continue
            handle._callback = None
            callback()

        self._drop_dead_head()
        if heap:
            self._arm(heap[0][0])

    def _drop_dead_head(self) -> None:
        heap = self._heap
        while heap and heap[0][2]._callback is None:
            heapq.heappop(heap)
            self._dead -= 1

    def _cancelled_one(self) -> None:
        self._dead += 1
        if self._dead > self._COMPACT_MIN and self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2]._callback is not None]
            heapq.heapify(self._heap)
            self._dead = 0


class SimFuture(Generic[T]):
    """A future whose waiters are simpy processes (see the module essay)."""

    __slots__ = ("_cancelled", "_event")

    def __init__(self, env: simpy.Environment) -> None:
        self._event = env.event()
        self._cancelled = False

    def done(self) -> bool:
        return bool(self._event.triggered)

    def cancelled(self) -> bool:
        return self._cancelled

    def result(self) -> T:
        event = self._event
        if not event.triggered:
            raise simpy.SimPyException("result() of a future that is not done")
        value = event.value
        if not event.ok:
            assert isinstance(value, BaseException)
            raise value
        return cast(T, value)

    def set_result(self, result: T, /) -> None:
        if self._event.triggered:
            raise RuntimeError("future already done")
        self._event.succeed(result)

    def set_exception(self, exception: BaseException, /) -> None:
        if self._event.triggered:
            raise RuntimeError("future already done")
        # simpy's annotation says Exception, but it accepts any BaseException,
        # and cancellation needs CancelledError, which is not an Exception.
        self._event.fail(exception)  # type: ignore[arg-type]
        # Nobody may be waiting; simpy would otherwise re-raise it in run().
        self._event.defused = True

    def cancel(self, msg: Any | None = None) -> bool:
        if self._event.triggered:
            return False
        self._cancelled = True
        self.set_exception(CancelledError(msg) if msg else CancelledError())
        return True

    def __await__(self) -> Generator[Any, None, T]:
        return cast(T, (yield self._event))


class SimTask(Generic[T]):
    """A coroutine driven by a simpy process (see the module essay)."""

    __slots__ = (
        "_cancel_requested",
        "_coro",
        "_done",
        "_kernel",
        "_must_throw",
        "_name",
        "_waiting_on",
    )

    def __init__(self, kernel: Kernel, coro: Coroutine[Any, Any, T], name: str) -> None:
        self._kernel = kernel
        self._coro = coro
        self._name = name
        env = kernel.env
        self._done: SimFuture[T] = SimFuture(env)
        self._cancel_requested = False
        self._must_throw = False
        # The event whose callbacks hold this task's next step, if it waits.
        self._waiting_on: simpy.Event | None = None
        start = simpy.Event(env)
        start._ok = True
        start._value = None
        start.callbacks.append(self._resume)
        env.schedule(start, _URGENT)

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<SimTask {self._name} {state}>"

    def get_name(self) -> str:
        return self._name

    def done(self) -> bool:
        return self._done.done()

    def cancelled(self) -> bool:
        return self._done.cancelled()

    def result(self) -> T:
        return self._done.result()

    def cancel(self, msg: Any | None = None) -> bool:
        if self.done():
            return False
        if self._cancel_requested:
            return True
        self._cancel_requested = True
        # A task parked on an event is unhooked from it and woken at once; one
        # that has not started, or is running right now, is thrown the error
        # at its next await instead.
        waiting_on = self._waiting_on
        if waiting_on is not None and self._kernel.current is not self:
            self._waiting_on = None
            waiting_on.callbacks.remove(self._resume)
            wake = simpy.Event(self._kernel.env)
            wake._ok = False
            wake._value = CancelledError(msg) if msg else CancelledError()
            wake._defused = True
            wake.callbacks.append(self._resume)
            self._kernel.env.schedule(wake, _URGENT)
        else:
            self._must_throw = True
        return True

    def uncancel(self) -> None:
        """Forget a cancellation that a timeout scope turned into TimeoutError."""
        self._cancel_requested = False
        self._must_throw = False

    def __await__(self) -> Generator[Any, None, T]:
        return self._done.__await__()

    def _resume(self, event: simpy.Event) -> None:
        """An event this task waited for was processed: take the next step."""
        self._waiting_on = None
        if event._ok:
            self._step(event._value, None)
        else:
            # Handled here, so simpy must not raise it out of run().
            event._defused = True
            self._step(None, event._value)

    def _step(self, value: Any, error: BaseException | None) -> None:
        coro = self._coro
        kernel = self._kernel
        while True:
            if self._must_throw:
                self._must_throw = False
                value, error = None, CancelledError()
            kernel.current = self
            try:
                target = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                self._done.set_result(stop.value)
                return
            except CancelledError:
                self._done.cancel()
                return
            except BaseException as exc:  # the task's own failure, kept for joiners
                self._done.set_exception(exc)
                kernel.report_crash(self, exc)
                return
            finally:
                kernel.current = None

            value, error = None, None
            if not isinstance(target, simpy.Event):
                error = TypeError(
                    f"task {self._name!r} awaited {target!r}, which the simulated "
                    "runtime cannot resume; await only the runtime's awaitables"
                )
                continue
            if self._must_throw:
                continue
            callbacks = target.callbacks
            if callbacks is None:
                # Already processed: its outcome is known, carry on at once,
                # as a simpy process would.
                if target._ok:
                    value = target._value
                else:
                    target._defused = True
                    error = target._value
                continue
            callbacks.append(self._resume)
            self._waiting_on = target
            return


class Kernel:
    """The simpy environment shared by every simulated host, with its timers."""

    def __init__(self, env: simpy.Environment | None = None) -> None:
        self.env = env if env is not None else simpy.Environment()
        self.timers = TimerQueue(self.env)
        self.current: SimTask[Any] | None = None
        self.crashes: list[tuple[str, BaseException]] = []

    def now(self) -> float:
        return float(self.env.now)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> SimTask[T]:
        return SimTask(self, coro, name)

    def future(self) -> SimFuture[Any]:
        return SimFuture(self.env)

    def sleep(self, seconds: float) -> _Sleep:
        return _Sleep(self, seconds)

    def report_crash(self, task: SimTask[Any], exc: BaseException) -> None:
        self.crashes.append((task.get_name(), exc))
        log.error("task %s crashed: %r", task.get_name(), exc, exc_info=exc)


class _Sleep:
    """``await kernel.sleep(s)``: a timer-queue entry that dies with its task."""

    __slots__ = ("_kernel", "_seconds")

    def __init__(self, kernel: Kernel, seconds: float) -> None:
        self._kernel = kernel
        self._seconds = seconds

    def __await__(self) -> Generator[Any, None, None]:
        kernel = self._kernel
        event = kernel.env.event()

        def wake() -> None:
            event.succeed()

        handle = kernel.timers.call_at(kernel.env.now + max(0.0, self._seconds), wake)
        try:
            yield event
        finally:
            handle.cancel()


class SimTimeout:
    """``async with runtime.timeout(s)`` for simulated tasks."""

    def __init__(self, kernel: Kernel, seconds: float) -> None:
        self._kernel = kernel
        self._seconds = seconds
        self._task: SimTask[Any] | None = None
        self._timer: TimerHandle | None = None
        self._fired = False

    async def __aenter__(self) -> None:
        task = self._kernel.current
        if task is None:
            raise RuntimeError("runtime.timeout() used outside a simulated task")
        self._task = task
        self._timer = self._kernel.timers.call_at(
            self._kernel.now() + self._seconds, self._fire
        )

    def _fire(self) -> None:
        assert self._task is not None
        self._fired = True
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._timer is not None and self._task is not None
        self._timer.cancel()
        if not self._fired:
            return
        self._task.uncancel()
        if exc_type is CancelledError:
            raise TimeoutError(f"timed out after {self._seconds} s") from exc

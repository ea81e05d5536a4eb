"""Driving ``async def`` code with simpy: the trampoline, futures and timers.

Actors are ordinary coroutines. Under asyncio, an awaited future yields itself
to the event loop, which resumes the coroutine when the future is done. Here
the same happens with simpy in place of the loop:

* every awaitable the simulated runtime hands out yields a ``simpy.Event``;
* a :class:`SimTask` is a trampoline driven by event callbacks: it sends the
  coroutine the value of the event it last yielded (or throws the event's
  failure into it), takes the next event the coroutine yields, and hangs
  itself on that event's callbacks;
* cancelling a task unhooks it from the event it waits for and wakes it with
  ``asyncio.CancelledError`` thrown at its current ``await``, so
  ``try``/``finally`` and ``async with`` clean up exactly as they would under
  asyncio.

A task is not a ``simpy.Process``. A process costs two more events per life
(its initialisation and its own termination) and a generator frame between
simpy and the coroutine on every step; tasks are spawned for every call and
every acknowledgement, and resumed several times per delivered message, so
those costs were a large share of a simulation's wall-clock time.

A coroutine that awaits something foreign (an asyncio future, say) gets a
``TypeError`` thrown back in, because simpy could never resume it.

The clock. :class:`Clock` is a ``simpy.Environment`` with two changes to
what one step does, both for speed, neither visible to simpy code:

* Work due *now* (a future that was resolved, a task that was spawned or
  cancelled, a ``call_soon`` callback) goes to a ready queue, first in
  first out, not into simpy's time-ordered heap; a step takes from the
  ready queue before it looks at the heap. This is asyncio's order: what
  was made ready runs before time moves on, in the order it was made
  ready. It spares a heap push and pop, and a sequence number, per
  wake-up, of which a delivered message has several. A future settled
  while nobody waits for it is not queued at all.
* End-of-turn callbacks (``at_turn_end``: a link that sent closes its
  batch) registered one after another, with nothing queued between them,
  share one ready-queue entry, a :class:`_TurnEnd`: they would have run
  one after the other anyway, so the order is unchanged.
* Timers and network arrivals sit in the heap itself as small records
  (:class:`TimerHandle`, :class:`_Call`), not as ``simpy.Timeout`` events
  with a callback list, and a sleeping task waits on one plain event placed
  in the heap at its wake-up time.

Timers. simpy cannot take back a scheduled event, so thousands of cancelled
keep-alive or call deadlines would sit in its heap until their time came.
Cancelling a timer (or a sleeping task) marks its heap entry dead and counts
it; when the dead outnumber the living the heap is compacted, so cancelled
timers cost nothing later.

Determinism. The heap breaks ties in time by an insertion counter, the ready
queue is first in first out, so equal inputs give equal schedules.
"""

from __future__ import annotations

import logging
from asyncio import CancelledError
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from heapq import heapify, heappop, heappush
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import NORMAL, PENDING, URGENT

from chaski_actors.runtime import Task

T = TypeVar("T")

log = logging.getLogger("chaski.runtime")


class Life:
    """One life of a simulated host: its timers and streams die with it."""

    __slots__ = ("alive",)

    def __init__(self, alive: bool = True) -> None:
        self.alive = alive


class TimerHandle:
    """One scheduled callback, an entry of the clock's heap.

    A timer bound to a host's :class:`Life` does not fire once that life is
    over (the host crashed, whether or not it has been restarted since).
    """

    __slots__ = ("_callback", "_clock", "_life", "when")

    def __init__(
        self,
        clock: Clock,
        when: float,
        callback: Callable[[], None],
        life: Life | None,
    ) -> None:
        self._clock = clock
        self._callback: Callable[[], None] | None = callback
        self._life = life
        self.when = when

    def cancel(self) -> None:
        if self._callback is not None:
            self._callback = None
            self._clock._timers -= 1
            self._clock._died()

    def cancelled(self) -> bool:
        return self._callback is None


class _Soon:
    """A callback for the end of the turn: a ready-queue entry, cancellable."""

    __slots__ = ("_callback", "_life")

    def __init__(self, callback: Callable[[], None], life: Life | None) -> None:
        self._callback: Callable[[], None] | None = callback
        self._life = life

    def cancel(self) -> None:
        # Served in its turn, it finds nothing to run; nothing to count.
        self._callback = None

    def cancelled(self) -> bool:
        return self._callback is None


class _TurnEnd:
    """Ready-queue entry for end-of-turn callbacks registered one after another.

    Callbacks that ``at_turn_end`` queues with nothing queued between them
    would run one after the other anyway, so they share one entry: a link
    that sent in a turn costs a list entry, not a queue entry of its own.
    Each keeps the life of the host that registered it.
    """

    __slots__ = ("calls",)

    def __init__(self, callback: Callable[[], None], life: Life | None) -> None:
        self.calls: list[tuple[Callable[[], None], Life | None]] = [(callback, life)]


class _Call:
    """``fn(arg)`` at a set time: an arrival that nothing ever cancels."""

    __slots__ = ("arg", "fn")

    def __init__(self, fn: Callable[[Any], None], arg: Any) -> None:
        self.fn = fn
        self.arg = arg


class _Ready:
    """A ready-queue entry that is no simpy event: a task's start or wake-up."""

    __slots__ = ("_defused", "_ok", "_value", "callbacks")

    def __init__(self, callback: Callable[[Any], None], ok: bool, value: Any) -> None:
        self.callbacks: list[Callable[[Any], None]] | None = [callback]
        self._ok = ok
        self._value = value
        self._defused = True


class _Wake(simpy.Event):
    """What a sleeping task waits on: an event already placed in the heap."""

    def __await__(self) -> Generator[Any, None, None]:
        # A wake-up has no value, so a plain iterator of the one event does
        # what a generator would (the task's send(None) ends it; a throw is
        # raised at the await), without a generator per sleep.
        return iter((self,))  # type: ignore[return-value]


class Clock(simpy.Environment):
    """simpy's environment with a ready queue and timers in its heap."""

    # Below this many dead heap entries a compaction costs more than it saves.
    _COMPACT_MIN = 64

    def __init__(self) -> None:
        super().__init__(0.0)
        self._ready: deque[Any] = deque()
        # The last _TurnEnd queued; more callbacks join it while it is still
        # the last entry of the ready queue.
        self._turn_end: _TurnEnd | None = None
        # Live timers, and dead (cancelled) entries still in the heap.
        self._timers = 0
        self._dead = 0
        # Entries served so far (events, timers, arrivals): a statistic.
        self.served = 0

    def step(self) -> None:
        self._serve(once=True)

    def run(self, until: float | simpy.Event | None = None) -> Any:
        """simpy's ``run``, serving events in a loop of its own (see ``_serve``)."""
        if until is not None:
            if not isinstance(until, simpy.Event):
                at = float(until)
                if at <= self._now:
                    raise ValueError(
                        f"until ({at}) must be greater than the current simulation time"
                    )
                # Before every ordinary event of that instant, as simpy does.
                until = simpy.Event(self)
                until._ok = True
                until._value = None
                self.schedule(until, URGENT, at - self._now)
            elif until.callbacks is None:
                return until.value
            until.callbacks.append(StopSimulation.callback)
        try:
            self._serve(once=False)
        except StopSimulation as exc:
            return exc.args[0]
        except EmptySchedule:
            if until is not None:
                raise RuntimeError(
                    f'No scheduled events left but "until" event was not '
                    f"triggered: {until}"
                ) from None
        return None

    def _serve(self, *, once: bool) -> None:
        """Serve the ready queue, then the heap, in order; one entry if ``once``.

        One loop for every step of a run, with what it touches bound to
        locals, as the heap and the ready queue are served several times
        per delivered message.
        """
        ready = self._ready
        queue: list[Any] = self._queue
        event: Any
        # Counted in a local and added up when the loop is left (by
        # StopSimulation, say): an attribute update per entry is noticeable.
        served = 0
        try:
            while True:
                served += 1
                if ready:
                    event = ready.popleft()
                else:
                    try:
                        self._now, _, _, event = heappop(queue)
                    except IndexError:
                        raise EmptySchedule from None
                kind = event.__class__
                if kind is _Call:
                    event.fn(event.arg)
                elif kind is TimerHandle or kind is _Soon:
                    callback = event._callback
                    if callback is not None:
                        event._callback = None
                        if kind is TimerHandle:
                            self._timers -= 1
                        life = event._life
                        if life is None or life.alive:
                            callback()
                    elif kind is TimerHandle:
                        self._dead -= 1
                elif kind is _TurnEnd:
                    self._end_turn(event)
                else:
                    callbacks, event.callbacks = event.callbacks, None
                    try:
                        for callback in callbacks:
                            callback(event)
                    except StopSimulation:
                        # As simpy does: the rest of the callbacks run when
                        # the simulation resumes, before anything else.
                        event.callbacks = callbacks[callbacks.index(callback) + 1 :]
                        ready.appendleft(event)
                        raise
                    if not event._ok and not hasattr(event, "_defused"):
                        exc = type(event._value)(*event._value.args)
                        exc.__cause__ = event._value
                        raise exc
                if once:
                    return
        finally:
            self.served += served

    def _end_turn(self, entry: _TurnEnd) -> None:
        """Run the callbacks of one :class:`_TurnEnd`, in order."""
        if entry is self._turn_end:
            self._turn_end = None
        calls = entry.calls
        done = 0
        try:
            for callback, life in calls:
                done += 1
                if life is None or life.alive:
                    callback()
        except BaseException:
            # The callbacks after the failed one stay first in line, as
            # their own entries would have. (Counted, not looked up: the
            # same callback may be in the list twice.)
            entry.calls = calls[done:]
            if entry.calls:
                self._ready.appendleft(entry)
            raise

    def call_at(
        self, when: float, callback: Callable[[], None], life: Life | None = None
    ) -> TimerHandle:
        handle = TimerHandle(self, when, callback, life)
        now = self._now
        heap: list[Any] = self._queue
        heappush(heap, (when if when > now else now, NORMAL, next(self._eid), handle))
        self._timers += 1
        return handle

    def call_soon(
        self, callback: Callable[[], None], life: Life | None = None
    ) -> _Soon:
        """``callback()`` once what is ready now has run, before time moves."""
        handle = _Soon(callback, life)
        self._ready.append(handle)
        return handle

    def at_turn_end(self, callback: Callable[[], None], life: Life | None) -> None:
        """``call_soon`` without a handle: it cannot be cancelled.

        Exactly the order of ``call_soon``: a callback joins the entry
        queued last only if that entry is end-of-turn callbacks already.
        """
        ready = self._ready
        batch = self._turn_end
        if batch is not None and ready and ready[-1] is batch:
            batch.calls.append((callback, life))
        else:
            batch = self._turn_end = _TurnEnd(callback, life)
            ready.append(batch)

    def call(self, when: float, fn: Callable[[Any], None], arg: Any) -> None:
        now = self._now
        heap: list[Any] = self._queue
        heappush(
            heap, (when if when > now else now, NORMAL, next(self._eid), _Call(fn, arg))
        )

    def wake_at(self, when: float) -> _Wake:
        event = _Wake(self)
        event._ok = True
        event._value = None
        now = self._now
        heappush(
            self._queue, (when if when > now else now, NORMAL, next(self._eid), event)
        )
        return event

    def _died(self) -> None:
        self._dead += 1
        if self._dead > self._COMPACT_MIN and self._dead * 2 > len(self._queue):
            # In place: the serving loop holds the list.
            self._queue[:] = [e for e in self._queue if not _is_dead(e[3])]
            heapify(self._queue)
            self._dead = 0


def _is_dead(entry: object) -> bool:
    kind = entry.__class__
    if kind is TimerHandle:
        return cast(TimerHandle, entry)._callback is None
    # A sleep whose task was cancelled has nobody left to wake.
    return kind is _Wake and not cast(_Wake, entry).callbacks


class TimerQueue:
    """Cancellable timers (kept in the clock's heap; see the module essay)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def __len__(self) -> int:
        return self._clock._timers

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return self._clock.call_at(when, callback)


class SimFuture(simpy.Event, Generic[T]):
    """A future whose waiters are simulated tasks (see the module essay)."""

    _cancelled = False

    def __init__(self, env: Clock) -> None:
        self.env = env
        self.callbacks = []

    @property
    def _event(self) -> SimFuture[T]:
        """The simpy event to wait for (``env.run(until=...)``): the future."""
        return self

    def done(self) -> bool:
        return self._value is not PENDING

    def cancelled(self) -> bool:
        return self._cancelled

    def result(self) -> T:
        value = self._value
        if value is PENDING:
            raise simpy.SimPyException("result() of a future that is not done")
        if not self._ok:
            assert isinstance(value, BaseException)
            raise value
        return cast(T, value)

    def set_result(self, result: T, /) -> None:
        if self._value is not PENDING:
            raise RuntimeError("future already done")
        self._ok = True
        self._value = result
        self._settled()

    def set_exception(self, exception: BaseException, /) -> None:
        if self._value is not PENDING:
            raise RuntimeError("future already done")
        self._ok = False
        self._value = exception
        # Nobody may be waiting; simpy would otherwise re-raise it in run().
        self._defused = True
        self._settled()

    def _settled(self) -> None:
        if self.callbacks:
            # The environment is always a Clock; no cast(), a call per wake-up.
            self.env._ready.append(self)  # type: ignore[attr-defined]
        else:
            # Nobody waits: processed at once, with nothing to run. Whoever
            # awaits it later carries on at once, as with asyncio's futures.
            # (None marks a processed event; simpy's annotation omits it.)
            self.callbacks = None  # type: ignore[assignment]

    def _set_now(self) -> None:
        """``set_result(None)``, running the waiters now rather than at their turn.

        Only for the callback of a heap entry (an arrival) that has nothing
        left to do: the ready queue is then empty, so the waiters would run
        next anyway, and running them here spares the queue a round trip.
        """
        self._ok = True
        self._value = None
        callbacks = self.callbacks
        # Processed, as the serving loop marks it.
        self.callbacks = None  # type: ignore[assignment]
        if not callbacks:
            return
        ready: deque[Any] = self.env._ready  # type: ignore[attr-defined]
        if ready:
            self.callbacks = callbacks
            ready.append(self)
            return
        self.env.served += 1  # type: ignore[attr-defined]
        for callback in callbacks:
            callback(self)

    def _reuse(self) -> bool:
        """Make a future that resolved and whose waiters ran pending again.

        For a future that only its owner hands out, such as a stream's
        reader wake-up, so that waiting again allocates nothing. False,
        and nothing done, if it is pending, failed, or its waiters have
        yet to run.
        """
        if self.callbacks is not None or not self._ok or self._value is PENDING:
            return False
        self._value = PENDING
        self.callbacks = []
        return True

    def cancel(self, msg: Any | None = None) -> bool:
        if self._value is not PENDING:
            return False
        self._cancelled = True
        self.set_exception(CancelledError(msg) if msg else CancelledError())
        return True

    def __await__(self) -> Generator[Any, None, T]:
        # The value is what set_result() was given; no cast(), which is a
        # function call per await.
        return (yield self)  # type: ignore[return-value]


class SimTask(Generic[T]):
    """A coroutine driven by event callbacks (see the module essay)."""

    __slots__ = (
        "_cancel_requested",
        "_coro",
        "_done",
        "_kernel",
        "_must_throw",
        "_name",
        "_registry",
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
        # Where the task is listed while it runs (its host's tasks), if any.
        self._registry: dict[SimTask[Any], None] | None = None
        env._ready.append(_Ready(self._resume, True, None))

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<SimTask {self._name} {state}>"

    def get_name(self) -> str:
        return self._name

    def done(self) -> bool:
        return self._done._value is not PENDING

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
            callbacks = waiting_on.callbacks
            callbacks.remove(self._resume)
            clock = self._kernel.env
            if waiting_on.__class__ is _Wake and not callbacks:
                clock._died()
            error = CancelledError(msg) if msg else CancelledError()
            clock._ready.append(_Ready(self._resume, False, error))
        else:
            self._must_throw = True
        return True

    def cancelling(self) -> int:
        return 1 if self._cancel_requested else 0

    def uncancel(self) -> None:
        """Forget a cancellation that a timeout scope turned into TimeoutError."""
        self._cancel_requested = False
        self._must_throw = False

    def __await__(self) -> Generator[Any, None, T]:
        return self._done.__await__()

    def _ended(self) -> None:
        registry = self._registry
        if registry is not None:
            self._registry = None
            registry.pop(self, None)

    def _resume(self, event: Any) -> None:
        """An event this task waited for was processed: take the next step."""
        self._waiting_on = None
        if event._ok:
            value, error = event._value, None
        else:
            # Handled here, so simpy must not raise it out of run().
            event._defused = True
            value, error = None, event._value
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
                self._ended()
                self._done.set_result(stop.value)
                return
            except CancelledError:
                self._ended()
                self._done.cancel()
                return
            except BaseException as exc:  # the task's own failure, kept for joiners
                self._ended()
                self._done.set_exception(exc)
                kernel.report_crash(self, exc)
                return
            finally:
                kernel.current = None

            value, error = None, None
            kind = target.__class__
            if (
                kind is not SimFuture
                and kind is not _Wake
                and not isinstance(target, simpy.Event)
            ):
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
    """The clock shared by every simulated host, with its timers."""

    def __init__(self) -> None:
        self.env = Clock()
        self.timers = TimerQueue(self.env)
        self.current: SimTask[Any] | None = None
        self.crashes: list[tuple[str, BaseException]] = []

    def now(self) -> float:
        return self.env._now

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> SimTask[T]:
        return SimTask(self, coro, name)

    def future(self) -> SimFuture[Any]:
        return SimFuture(self.env)

    def sleep(self, seconds: float) -> _Sleep:
        return _Sleep(self.env, seconds)

    def report_crash(self, task: Task[Any], exc: BaseException) -> None:
        self.crashes.append((task.get_name(), exc))
        log.error("task %s crashed: %r", task.get_name(), exc, exc_info=exc)


class _Sleep:
    """``await kernel.sleep(s)``: one heap entry, dead if its task is cancelled."""

    __slots__ = ("_clock", "_seconds")

    def __init__(self, clock: Clock, seconds: float) -> None:
        self._clock = clock
        self._seconds = seconds

    def __await__(self) -> Generator[Any, None, None]:
        clock = self._clock
        return clock.wake_at(clock._now + self._seconds).__await__()


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
        self._timer = self._kernel.env.call_at(
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

"""Events and bounded queues built on the runtime's futures.

They are written once, here, on :meth:`Runtime.create_future`, so that a
queue behaves identically on both backends: same wake-up order (first come,
first served), same statistics, same overflow rules.

Every queue is bounded and says what happens when it is full:

``wait``         ``put`` waits until there is room (back-pressure);
``drop-oldest``  the oldest item is discarded to make room;
``drop-newest``  the new item is discarded.

Drops are never silent: they are counted in :meth:`Queue.statistics`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from .errors import ClosedResourceError, ConfigError
from .runtime import Future, Runtime

__all__ = ["Event", "Overflow", "Queue", "QueueStatistics"]

T = TypeVar("T")
Overflow = Literal["wait", "drop-oldest", "drop-newest"]
_OVERFLOWS = ("wait", "drop-oldest", "drop-newest")


class Event:
    """A flag that tasks can wait for; ``clear()`` arms it again."""

    __slots__ = ("_runtime", "_set", "_waiters")

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._set = False
        self._waiters: list[Future[None]] = []

    def __repr__(self) -> str:
        return f"<Event {'set' if self._set else 'clear'} waiters={len(self._waiters)}>"

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter: Future[None] = self._runtime.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """A snapshot of a :class:`Queue`."""

    size: int
    maxsize: int
    overflow: str
    put: int
    got: int
    dropped: int
    waiting_put: int
    waiting_get: int
    closed: bool


class Queue(Generic[T]):
    """A bounded FIFO queue for tasks of one runtime; see the module essay.

    ``close()`` lets consumers drain what is left, after which ``get`` raises
    :class:`ClosedResourceError`; ``put`` raises it at once.
    """

    # Slots: a node's inbox is used for every message (see Session).
    __slots__ = (
        "_closed",
        "_dropped",
        "_getters",
        "_got",
        "_items",
        "_maxsize",
        "_overflow",
        "_put",
        "_putters",
        "_runtime",
    )

    def __init__(
        self, runtime: Runtime, maxsize: int, overflow: Overflow = "wait"
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigError(f"queue maxsize must be an int >= 1, got {maxsize!r}")
        if overflow not in _OVERFLOWS:
            raise ConfigError(
                f"queue overflow must be one of {', '.join(_OVERFLOWS)}, "
                f"got {overflow!r}"
            )
        self._runtime = runtime
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._overflow = overflow
        self._getters: deque[Future[None]] = deque()
        self._putters: deque[Future[None]] = deque()
        self._closed = False
        self._put = self._got = self._dropped = 0

    def __repr__(self) -> str:
        return (
            f"<Queue {len(self._items)}/{self._maxsize} {self._overflow}"
            f"{' closed' if self._closed else ''} dropped={self._dropped}>"
        )

    def __len__(self) -> int:
        return len(self._items)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def closed(self) -> bool:
        return self._closed

    def full(self) -> bool:
        return len(self._items) >= self._maxsize

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            size=len(self._items),
            maxsize=self._maxsize,
            overflow=self._overflow,
            put=self._put,
            got=self._got,
            dropped=self._dropped,
            waiting_put=len(self._putters),
            waiting_get=len(self._getters),
            closed=self._closed,
        )

    def put_nowait(self, item: T) -> bool:
        """Add ``item`` without waiting; returns False if it was dropped.

        With the ``wait`` policy a full queue drops the item too, and counts
        it: a caller that cannot wait has nowhere else to put it.
        """
        if self._closed:
            raise ClosedResourceError("queue is closed")
        if len(self._items) >= self._maxsize:
            if self._overflow == "drop-oldest":
                self._items.popleft()
                self._dropped += 1
            else:
                self._dropped += 1
                return False
        self._items.append(item)
        self._put += 1
        self._wake(self._getters)
        return True

    async def put(self, item: T) -> bool:
        """Add ``item``, waiting for room under the ``wait`` policy."""
        if self._overflow == "wait":
            while len(self._items) >= self._maxsize:
                if self._closed:
                    raise ClosedResourceError("queue is closed")
                await self._park(self._putters)
        return self.put_nowait(item)

    def offer_many(self, items: list[T]) -> bool:
        """Add ``items`` as :meth:`put_many` would, if that needs no wait.

        True if the queue took them all; False, having done nothing, if it
        is closed, full enough to make a ``wait`` queue wait, or not a
        ``wait`` queue. The receive path tries this first: a call and an
        ``await`` fewer per delivered frame when the consumer keeps up.
        """
        count = len(items)
        if (
            self._closed
            or self._overflow != "wait"
            or self._maxsize - len(self._items) < count
        ):
            return False
        self._items.extend(items)
        self._put += count
        getters = self._getters
        for _ in range(min(count, len(getters))):
            self._wake(getters)
        return True

    async def put_many(self, items: list[T]) -> int:
        """Add ``items`` in order, as :meth:`put` would add them one by one.

        Waiting consumers are woken once for the lot rather than once per
        item. Returns how many items the queue took (queued, or dropped and
        counted under a drop policy); fewer than ``len(items)`` only if the
        queue was closed meanwhile, and the caller accounts for the rest.
        """
        if self._overflow != "wait":
            taken = 0
            for item in items:
                if self._closed:
                    break
                self.put_nowait(item)
                taken += 1
            return taken

        taken = 0
        while taken < len(items):
            if self._closed:
                break
            room = self._maxsize - len(self._items)
            if room <= 0:
                await self._park(self._putters)
                continue
            chunk = items[taken : taken + room] if taken or room < len(items) else items
            self._items.extend(chunk)
            taken += len(chunk)
            self._put += len(chunk)
            for _ in range(min(len(chunk), len(self._getters))):
                self._wake(self._getters)
        return taken

    def get_nowait(self) -> T:
        if not self._items:
            if self._closed:
                raise ClosedResourceError("queue is closed and drained")
            raise LookupError("queue is empty")
        item = self._items.popleft()
        self._got += 1
        self._wake(self._putters)
        return item

    async def get(self) -> T:
        items = self._items
        if items:
            # What a busy consumer nearly always finds: written out, as a
            # call to get_nowait is a noticeable share of taking one item.
            self._got += 1
            item = items.popleft()
            if self._putters:
                self._wake(self._putters)
            return item
        while not self._items:
            if self._closed:
                raise ClosedResourceError("queue is closed and drained")
            # _park, written out: a consumer that keeps up parks for every
            # item, and a coroutine fewer per wait is noticeable there.
            waiter: Future[None] = self._runtime.create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                self._unpark(waiter, self._getters)
                raise
        # get_nowait, written out as above: a consumer that keeps up comes
        # this way for every item.
        self._got += 1
        item = items.popleft()
        if self._putters:
            self._wake(self._putters)
        return item

    async def get_batch(self, limit: int | None = None) -> list[T]:
        """The queued items, oldest first, at most ``limit``; waits for one.

        For a consumer of a busy queue: one ``await`` per batch that arrived
        rather than one per item. ClosedResourceError once closed and
        drained, as for :meth:`get`.
        """
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ConfigError(f"a batch limit must be an int >= 1, got {limit!r}")
        items = self._items
        while not items:
            if self._closed:
                raise ClosedResourceError("queue is closed and drained")
            await self._park(self._getters)
        if limit is None or limit >= len(items):
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(limit)]
        self._got += len(batch)
        putters = self._putters
        for _ in range(min(len(batch), len(putters))):
            self._wake(putters)
        return batch

    def drain(self) -> list[T]:
        """Take every queued item at once (for shutdown and inspection)."""
        items = list(self._items)
        self._items.clear()
        self._got += len(items)
        self._wake_all(self._putters)
        return items

    def close(self) -> None:
        self._closed = True
        self._wake_all(self._getters)
        self._wake_all(self._putters)

    async def _park(self, waiters: deque[Future[None]]) -> None:
        waiter: Future[None] = self._runtime.create_future()
        waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            self._unpark(waiter, waiters)
            raise

    def _unpark(self, waiter: Future[None], waiters: deque[Future[None]]) -> None:
        """A parked task was interrupted: take it off ``waiters``."""
        # Cancelled after being woken: pass the wake-up on, or it is lost.
        if waiter.done() and not waiter.cancelled():
            self._wake(waiters)
        elif waiter in waiters:
            waiters.remove(waiter)

    @staticmethod
    def _wake(waiters: deque[Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @staticmethod
    def _wake_all(waiters: deque[Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

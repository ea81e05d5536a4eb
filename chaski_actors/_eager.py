"""Running a coroutine's first step in place, and the rest only if it waits.

Most of the node's sends finish without waiting: the link numbers the frame
and hands it to the connection. Starting a task for one, or entering a
timeout scope around it, costs more than the send itself. So a send is
stepped by hand (as the task awaiting it would step it) and only if it stops
to wait does the rest of it get a task or a scope. This is what asyncio in
Python 3.12 calls an eager task start. The real backend drives a link's
reader the same way, from the callback that receives the bytes.

It is meant for the node's own code, never for the owner's coroutines: code
that asks for its current task would find another one, or none.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Rest", "finish_later", "step"]

T = TypeVar("T")


def step(coro: Coroutine[Any, Any, None]) -> Rest[None] | None:
    """Run ``coro`` until it first waits; None if it finished without waiting.

    Whatever is returned must be awaited: the coroutine holds a place in
    some queue of waiters, and abandoning it would lose that queue's wake-up.
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return Rest(coro, waiting_on)


class Rest(Generic[T]):
    """The rest of a coroutine that was stepped by hand and then waited.

    Awaiting it hands the awaiting task what the coroutine waits on, exactly
    as ``await coro`` would have, passes the outcome back in, and returns
    what the coroutine returns.
    """

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, T], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, T]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                value = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
            else:
                try:
                    waiting_on = coro.send(value)
                except StopIteration as stop:
                    result = stop.value
                    return result

    def close(self) -> None:
        """Abandon the rest (it never ran on; its ``finally`` blocks do now)."""
        self._coro.close()


async def finish_later(rest: Rest[T]) -> T:
    """A coroutine to spawn for the rest of a stepped coroutine."""
    return await rest

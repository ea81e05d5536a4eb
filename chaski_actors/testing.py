"""Helpers for tests of actors, usable on either backend."""

from __future__ import annotations

from collections.abc import Callable

from .runtime import Runtime

__all__ = ["eventually"]


async def eventually(
    runtime: Runtime,
    condition: Callable[[], bool],
    *,
    timeout: float = 5.0,
    interval: float = 0.001,
) -> float:
    """Wait until ``condition()`` is true; return how long it took.

    Raises TimeoutError after ``timeout`` seconds of the runtime's clock.
    Polling, rather than an event, because the condition may be any state
    of any object; under ``sim`` the poll costs no wall time.
    """
    start = runtime.now()
    while not condition():
        if runtime.now() - start >= timeout:
            raise TimeoutError(f"condition still false after {timeout} s")
        await runtime.sleep(interval)
    return runtime.now() - start

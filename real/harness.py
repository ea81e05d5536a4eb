"""Run one coroutine against the real backend, on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from chaski_actors.runtime import derive_seed

from .runtime import RealRuntime

T = TypeVar("T")

__all__ = ["LoopbackNetwork", "run_real"]


class LoopbackNetwork:
    """Hands out one :class:`RealRuntime` per named host, all on 127.0.0.1.

    The mirror of ``SimNetwork.runtime(host)``, so that one test body can be
    given either network.
    """

    kind = "real"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self._runtimes: dict[str, RealRuntime] = {}

    def runtime(self, host: str) -> RealRuntime:
        runtime = self._runtimes.get(host)
        if runtime is None:
            runtime = RealRuntime(seed=derive_seed(self.seed, "app", host))
            self._runtimes[host] = runtime
        return runtime

    def now(self) -> float:
        return asyncio.get_running_loop().time()


def run_real(
    main: Callable[[LoopbackNetwork], Coroutine[Any, Any, T]],
    *,
    seed: int = 0,
    limit: float = 60.0,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run ``main(network)`` in a fresh event loop; TimeoutError after ``limit``.

    ``loop_factory`` makes that loop, for instance ``uvloop.new_event_loop``;
    by default it is asyncio's own.
    """

    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await main(LoopbackNetwork(seed=seed))

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())

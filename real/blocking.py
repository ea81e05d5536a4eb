"""Remote calls from plain, blocking code: scripts, notebooks, a REPL.

The actors are async; a script that only wants to call a few remote methods
should not have to be. A :class:`BlockingNode` runs a real node on an asyncio
loop of its own, in a daemon thread, and every method hands a coroutine to
that loop and waits for its result::

    with BlockingNode("script") as node:
        node.connect("10.0.0.5", 7000)
        greeter = node.proxy("server", "greeter")
        print(greeter.greet("you"))          # a call
        print(greeter.greeted.get())         # an attribute read

Because the loop runs in another thread, this works the same whether or not
the calling thread already runs an event loop (a notebook's does), with no
re-entrant loop patching. Do not call a blocking node from its own loop's
thread, i.e. from inside an object it serves: that would wait for itself,
and it raises instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future as ThreadFuture
from typing import Any, TypeVar

from chaski_actors.errors import BusyResourceError, ClosedResourceError
from chaski_actors.node import Node, PeerInfo
from chaski_actors.remote import Proxy, Remote
from chaski_actors.runtime import Address
from chaski_actors.settings import Settings

from .runtime import RealRuntime

T = TypeVar("T")

__all__ = ["BlockingNode", "BlockingProxy"]


class BlockingNode:
    """A real node with a :class:`Remote`, driven from blocking code."""

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: Settings | None = None,
    ) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"chaski-{name}", daemon=True
        )
        self._closed = False
        self._thread.start()

        async def start() -> tuple[Node, Remote]:
            node = Node(RealRuntime(host=host), name, settings=settings, port=port)
            await node.start()
            return node, Remote(node)

        self.node, self.remote = self._run(start())

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<BlockingNode {self.name} {state} peers={sorted(self.node.links)}>"

    def __enter__(self) -> BlockingNode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def address(self) -> Address:
        return self.node.address

    def connect(self, host: str, port: int) -> PeerInfo:
        return self._run(self.node.connect(host, port))

    def register(self, name: str, obj: object, *, expose: Iterable[str]) -> None:
        """Serve ``obj`` as ``name``; its methods run on this node's thread."""
        names = list(expose)

        async def register() -> None:
            self.remote.register(name, obj, expose=names)

        self._run(register())

    def proxy(
        self, peer: str, name: str, *, timeout: float | None = None
    ) -> BlockingProxy:
        return BlockingProxy(
            self, self._run(self.remote.proxy(peer, name, timeout=timeout))
        )

    def call(self, function: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``function()`` on the node's loop and return its result."""
        return self._run(function())

    def close(self) -> None:
        if self._closed:
            return
        self._run(self.node.stop())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClosedResourceError(f"blocking node {self.name} is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise BusyResourceError(
                f"blocking node {self.name} was called from its own loop; "
                "await the async API there instead"
            )
        future: ThreadFuture[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()


class BlockingProxy:
    """A :class:`~chaski_actors.remote.Proxy` whose calls block for the answer."""

    def __init__(self, owner: BlockingNode, proxy: Proxy) -> None:
        self._owner = owner
        self._proxy = proxy

    def __repr__(self) -> str:
        return f"<Blocking{repr(self._proxy)[1:]}"

    def __getattr__(self, name: str) -> BlockingProxy:
        if name.startswith("_"):
            raise AttributeError(name)
        return BlockingProxy(self._owner, getattr(self._proxy, name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._owner._run(self._proxy(*args, **kwargs))

    def get(self) -> Any:
        """Read the remote attribute at this proxy's path."""

        async def read() -> Any:
            return await self._proxy

        return self._owner._run(read())

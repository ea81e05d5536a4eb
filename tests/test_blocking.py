"""The blocking convenience: remote calls from plain code (real backend only)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chaski_actors import RefusedNameError, RemoteError
from chaski_actors.errors import BusyResourceError, ClosedResourceError
from chaski_actors.real.blocking import BlockingNode


class Greeter:
    def __init__(self) -> None:
        self.greeted = 0
        self.owner: BlockingNode | None = None

    def greet(self, name: str) -> str:
        self.greeted += 1
        return f"hello, {name}"

    async def later(self, value: Any) -> Any:
        await asyncio.sleep(0.001)
        return value

    def reenter(self) -> None:
        assert self.owner is not None
        self.owner.connect("127.0.0.1", 1)


def test_a_script_calls_a_remote_object() -> None:
    greeter = Greeter()
    with BlockingNode("server") as server, BlockingNode("script") as script:
        greeter.owner = server
        server.register(
            "greeter", greeter, expose=["greet", "later", "greeted", "reenter"]
        )
        assert script.connect(*server.address).name == "server"
        proxy = script.proxy("server", "greeter")
        assert proxy.greet("you") == "hello, you"
        assert proxy.later([1, 2]) == [1, 2]
        assert proxy.greeted.get() == 1
        with pytest.raises(RefusedNameError):
            script.call(
                lambda: script.remote.request("server", "get", "greeter", ("owner",))
            )
        # A served object must not block on its own node: refused, not hung.
        with pytest.raises(RemoteError) as info:
            proxy.reenter()
        assert info.value.remote_type == BusyResourceError.__name__
        assert repr(script).startswith("<BlockingNode script running peers=['server']")
        assert repr(proxy).startswith("<BlockingProxy greeter on server")
    with pytest.raises(ClosedResourceError):
        script.connect(*server.address)


def test_it_works_under_a_running_event_loop() -> None:
    # As in a notebook: the calling thread runs a loop of its own.
    async def notebook_cell() -> str:
        with BlockingNode("server") as server, BlockingNode("nb") as nb:
            server.register("greeter", Greeter(), expose=["greet"])
            nb.connect(*server.address)
            result: str = nb.proxy("server", "greeter").greet("notebook")
            return result

    assert asyncio.run(notebook_cell()) == "hello, notebook"

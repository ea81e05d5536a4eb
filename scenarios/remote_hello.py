"""Call methods on an object that lives on another node.

Run it on the simulated network, or on real sockets on this machine::

    python scenarios/remote_hello.py --backend sim
    python scenarios/remote_hello.py --backend real

The actor code below (``main``) is the same for both; only ``run`` differs,
and it is all a user changes to move from simulation to production.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import networkx as nx

from chaski_actors import Node, RefusedNameError, Remote, RemoteError


class Greeter:
    """Lives on the server; only what is exposed can be reached."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.greeted = 0
        self._secret = "never leaves the server"

    def greet(self, name: str) -> str:
        self.greeted += 1
        return f"hello, {name}"

    async def add_slowly(self, a: float, b: float) -> float:
        await self.runtime.sleep(0.1)  # an async method: awaited on the server
        return a + b

    def divide(self, a: float, b: float) -> float:
        return a / b


async def main(network: Any) -> None:
    async with (
        Node(network.runtime("server"), "server") as server,
        Node(network.runtime("client"), "client") as client,
    ):
        Remote(server).register(
            "greeter",
            Greeter(server.runtime),
            expose=["greet", "add_slowly", "divide", "greeted"],
        )
        remote = Remote(client)
        await client.connect(*server.address)

        greeter = await remote.proxy("server", "greeter")
        start = client.runtime.now()
        greeting = await greeter.greet("newcomer")
        took_ms = (client.runtime.now() - start) * 1000
        print(f"{greeting}  (one call, one round trip: {took_ms:.1f} ms)")
        print("2 + 3 =", await greeter.add_slowly(2, 3))
        print("greeted so far:", await greeter.greeted)

        try:
            await greeter.divide(1, 0)
        except RemoteError as exc:
            print(f"a remote error arrives typed: {exc.remote_type}: {exc}")
        try:
            await remote.request("server", "get", "greeter", ("_secret",))
        except RefusedNameError as exc:
            print(f"private names are refused: {exc}")
        print(f"backend: {client.runtime.kind}")
    print("remote_hello: OK")


def run(backend: str) -> None:
    if backend == "sim":
        from chaski_actors.sim.harness import run_sim

        graph: nx.Graph[str] = nx.Graph()
        graph.add_edge("client", "server", latency=0.025)  # seconds, one way
        run_sim(main, graph, seed=1)
    else:
        from chaski_actors.real.harness import run_real

        run_real(main)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sim", "real"], default="sim")
    run(parser.parse_args().backend)
    sys.exit(0)

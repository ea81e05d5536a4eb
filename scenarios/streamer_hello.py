"""Stream messages by topic, send telemetry as datagrams, and send a file.

Run it on the simulated network, or on real sockets on this machine::

    python scenarios/streamer_hello.py --backend sim
    python scenarios/streamer_hello.py --backend real

The actor code below (``main``) is the same for both; only ``run`` differs,
and it is all a user changes to move from simulation to production.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import networkx as nx

from chaski_actors import Files, Node, Streams
from chaski_actors.testing import eventually

READINGS = 5
TELEMETRY = 50


async def main(network: Any, folder: Path) -> None:
    async with (
        Node(network.runtime("sensor"), "sensor") as sensor,
        Node(network.runtime("desk"), "desk") as desk,
    ):
        sensor_streams, desk_streams = Streams(sensor), Streams(desk)
        sensor_files, desk_files = Files(sensor), Files(desk)
        sensor_streams.declare_unreliable("telemetry")
        desk_files.allow(folder / "inbox", max_size=1_000_000)
        await sensor.connect(*desk.address)

        # A small queue: if the desk reads slowly, the sensor's publish waits.
        async with (
            desk_streams.streamer("readings", maxsize=4) as readings,
            desk_streams.streamer("telemetry", maxsize=TELEMETRY) as telemetry,
        ):
            link = sensor.links["desk"]
            await eventually(sensor.runtime, lambda: "telemetry" in link.topics)

            async def produce() -> None:
                for i in range(READINGS):
                    await sensor_streams.publish(
                        "readings", {"n": i, "celsius": 20 + i}
                    )
                for i in range(TELEMETRY):
                    await sensor_streams.publish("telemetry", i)

            producer = sensor.runtime.spawn(produce(), name="produce")
            async for message in readings:
                data = message.data
                print(
                    f"reading {data['n']}: {data['celsius']} C from {message.source}, "
                    f"{message.latency * 1000:.1f} ms after it was sent"
                )
                if data["n"] == READINGS - 1:
                    break
            await producer

            # Datagrams may be lost or reordered; on a real loopback they are not.
            await sensor.runtime.sleep(0.2)
            got = len(telemetry.queue)
            stats = desk_streams.statistics()
            print(
                f"telemetry: {TELEMETRY} sent as datagrams, {got} received, "
                f"{stats.datagrams_missing} counted missing"
            )

        source = folder / "hello.txt"
        source.write_text("hello from the sensor\n" * 1000)
        receipt = await sensor_files.send("desk", source)
        kept = await desk_files.received()
        same = kept.path.read_bytes() == source.read_bytes()
        print(
            f"file: {receipt.name} ({receipt.size} bytes) arrived at {kept.path.name}, "
            f"sha256 {receipt.sha256[:12]}..., identical: {same}"
        )
        print(f"backend: {sensor.runtime.kind}")
    print("streamer_hello: OK")


def run(backend: str) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        (folder / "inbox").mkdir()

        async def actors(network: Any) -> None:
            await main(network, folder)

        if backend == "sim":
            from chaski_actors.sim.harness import run_sim

            graph: nx.Graph[str] = nx.Graph()
            # 20 ms one way, and a lossy link for the datagrams to suffer.
            graph.add_edge("sensor", "desk", latency=0.020, loss=0.1)
            run_sim(actors, graph, seed=1)
        else:
            from chaski_actors.real.harness import run_real

            run_real(actors)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sim", "real"], default="sim")
    run(parser.parse_args().backend)
    sys.exit(0)

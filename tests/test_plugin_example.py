"""Messages survive a link outage, on the simulator and on real sockets."""

import networkx as nx

from chaski_actors import Node
from chaski_actors.testing import assert_delivered, assert_paired_within


def test_nothing_is_lost_across_an_outage(chaski_backend):
    graph = nx.Graph()
    graph.add_edge("a", "b", latency=0.005)
    # The link is down from 0.5 s to 1.5 s after the start.
    outage = [{"at_s": 0.5, "kind": "link_down", "link": ["a", "b"], "duration_s": 1.0}]

    async def main(network):
        async with (
            Node(network.runtime("a"), "a") as a,
            Node(network.runtime("b"), "b") as b,
        ):
            await b.subscribe("news")
            await a.connect(*b.address)
            await assert_paired_within(a, "b", 1.0)
            sent = list(range(20))
            for number in sent:
                await a.publish("news", number)
                await a.runtime.sleep(0.1)
            received = [(await b.receive()).data for _ in sent]
            assert_delivered(sent, received)
            await assert_paired_within(a, "b", 5.0)

    chaski_backend.run(main, graph=graph, faults=outage)

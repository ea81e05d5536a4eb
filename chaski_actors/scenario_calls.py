"""Remote calls as a scenario role: an echo service and the hosts that call it.

A host whose role says ``serve = true`` registers :class:`Echo` under the
name ``scenario`` with :class:`~chaski_actors.remote.Remote`; a role's
``call`` entries make calls to it. Each call runs in its own task, so calls
go out at the stated rate whatever their round trip (an open loop: a slow
server shows as latency, not as a lower rate), and the report sees each as
a message of the topic ``call:<name>`` whose latency is the round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

from .errors import ChaskiError, ConfigError
from .remote import Remote

if TYPE_CHECKING:
    from .node import Node
    from .scenario import CallSpec, Recorder, Scenario

__all__ = ["Echo", "check_calls", "make_calls", "serve"]

# The name the echo service is registered under on serving hosts.
SERVICE = "scenario"


class Echo:
    """Hands back what it is given: the reply is as large as the request."""

    def echo(self, payload: bytes) -> bytes:
        return payload


def check_calls(graph: nx.Graph[str], scenario: Scenario) -> None:
    """Refuse calls to hosts that are not in the graph or do not serve."""
    hosts = set(graph.nodes)
    source = scenario.path or "<scenario>"
    for i, role in enumerate(scenario.roles):
        for call in role.call:
            for target in call.hosts:
                if target not in hosts:
                    raise ConfigError(
                        f"{source}: roles[{i}].call {call.name}: no host {target!r} "
                        "in the topology"
                    )
                if not any(r.serve and r.applies_to(target) for r in scenario.roles):
                    raise ConfigError(
                        f"{source}: roles[{i}].call {call.name}: host {target!r} "
                        "serves nothing; give it a role with serve = true"
                    )


def serve(node: Node, scenario: Scenario) -> Remote | None:
    """The node's :class:`Remote`, if its roles serve or call; else None."""
    roles = [r for r in scenario.roles if r.applies_to(node.name)]
    if not any(r.serve or r.call for r in roles):
        return None
    remote = Remote(node)
    if any(r.serve for r in roles):
        remote.register(SERVICE, Echo(), expose=["echo"])
    return remote


async def make_calls(
    remote: Remote, spec: CallSpec, until: float, recorder: Recorder
) -> None:
    """Call ``echo`` on ``spec.hosts`` in turn, at ``spec.rate_hz``, until then."""
    runtime = remote.runtime
    node = remote.node
    interval = 1.0 / spec.rate_hz
    payload = b"\x00" * spec.size_bytes
    turn = 0
    await runtime.sleep(runtime.random.uniform(0.0, interval))
    while runtime.now() < until:
        linked = [h for h in spec.hosts if h in node.links and h != node.name]
        if linked:
            peer = linked[turn % len(linked)]
            turn += 1
            runtime.spawn(_one_call(remote, peer, spec, payload, recorder), name="call")
        await runtime.sleep(interval)


async def _one_call(
    remote: Remote, peer: str, spec: CallSpec, payload: bytes, recorder: Recorder
) -> None:
    runtime = remote.runtime
    record = recorder.topic(f"call:{spec.name}")
    link = recorder.link(remote.node.name, peer)
    record.sent += 1
    link.sent += 1
    started = runtime.now()
    try:
        await remote.request(peer, "call", SERVICE, ("echo",), args=(payload,))
    except ChaskiError:
        # A failed or timed-out call is what the report counts as lost.
        return
    rtt = runtime.now() - started
    record.delivered += 1
    record.latencies.append(rtt)
    record.times.append(runtime.now() - recorder.start)
    link.delivered += 1
    link.latencies.append(rtt)

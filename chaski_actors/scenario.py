"""Scenario files: a topology, the nodes' roles, and how long to run.

A scenario is a TOML file (read with the standard ``tomllib``)::

    [scenario]
    name = "star"
    description = "one hub, five sensors"
    duration_s = 20.0      # how long publishers run
    drain_s = 2.0          # then how long to let messages arrive
    seed = 1               # default seed; `--seed` overrides it

    [topology]
    generator = "star_graph"         # any name in GENERATORS
    params = { n = 5 }
    # or: file = "edge.graphml"      # GML or GraphML, relative to this file

    [topology.links]                 # defaults for edges that do not say
    latency_ms = 5.0                 # or latency = "lognormal(median=0.005, sigma=0.2)"
    jitter_ms = 0.5
    loss = 0.0
    bandwidth_mbps = 100.0
    latency_per_distance_ms = 0.0    # added per unit of distance between hosts

    [[roles]]
    hosts = ["0"]                    # or "all"
    subscribe = ["telemetry"]

    [[roles]]
    hosts = "all"
    publish = [{ topic = "telemetry", rate_hz = 5.0, size_bytes = 64 }]

    [settings]                       # any Settings field
    keepalive_interval_s = 1.0

Edges. An edge of a topology file may carry its own ``latency_ms``,
``jitter_ms``, ``loss`` and ``bandwidth_mbps`` (or the simulator's raw
``latency`` in seconds or as a distribution string, ``jitter`` in seconds and
``bandwidth`` in bits per second); what an edge does not say comes from
``[topology.links]``. With ``latency_per_distance_ms``, an edge without its
own latency gets ``latency_ms`` plus that many milliseconds per unit of
Euclidean distance between its hosts' positions: the ``pos`` attribute that
``random_geometric_graph`` sets, or ``x`` and ``y`` node attributes in a file.
This is how a wide-area map turns distance into delay.

Links. Every node links to its neighbours in the graph (the host whose name
sorts first dials, again with the backoff of ``Settings.reconnect_*`` until
the first attempt succeeds); discovery may then pair nodes that share a
topic across the graph, and the nodes themselves reconnect broken links. A
watcher samples every edge's link every 50 ms, so a run measures how often
links broke and how long the network took to be whole again.

Faults. A ``[[faults]]`` array lists faults at given times, and a ``[chaos]``
table asks for a random schedule drawn from the run's seed (both described
in :mod:`chaski_actors.faults`). The simulator applies them; a host that
crashes and restarts gets a fresh node on its old port, which dials its
neighbours again and resumes its roles as a new "life". Each payload a
publisher sends is ``[name, life, seq, padding]``, and the recorder keeps
whom each message was meant for and who got it, for the delivery checker
(:mod:`chaski_actors.chaos`).

Remote calls. A role with ``serve = true`` registers an echo service on its
hosts (:mod:`chaski_actors.remote`); a role with
``call = [{ name = "lookup", hosts = ["core"], rate_hz = 5.0, size_bytes = 128 }]``
calls ``echo`` with that many bytes on the listed hosts in turn, at that
rate, each call in its own task. The report lists them as the topic
``call:<name>``, with the round-trip time as the latency and a failed or
timed-out call as lost. A host calls only hosts it is linked to: a
neighbour, or a peer that discovery paired it with.

The actor code that plays the roles (:func:`play`) is backend-neutral: the
simulator and the real backend run the very same coroutine.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import networkx as nx

from ._toml import TomlTable
from .errors import ClosedResourceError, ConfigError, ConnectError
from .faults import ChaosSpec, Fault, parse_chaos, parse_faults
from .metrics import LatencySummary, summarize
from .node import Node
from .remote import Remote
from .runtime import Address, Runtime, Task, derive_seed
from .scenario_calls import check_calls, make_calls, serve
from .settings import Settings
from .testing import eventually

__all__ = [
    "GENERATORS",
    "CallSpec",
    "Cast",
    "EdgeRecord",
    "LinkRecord",
    "Progress",
    "Publication",
    "PublishSpec",
    "Receipt",
    "Recorder",
    "RoleSpec",
    "Scenario",
    "TopologySpec",
    "build_graph",
    "load_scenario",
    "play",
    "position",
]

# networkx generators a scenario may name. Those that take a seed get one
# derived from the scenario's, so the graph is part of the replay.
GENERATORS: dict[str, tuple[Callable[..., Any], bool]] = {
    "star_graph": (nx.star_graph, False),
    "path_graph": (nx.path_graph, False),
    "cycle_graph": (nx.cycle_graph, False),
    "complete_graph": (nx.complete_graph, False),
    "balanced_tree": (nx.balanced_tree, False),
    "grid_2d_graph": (nx.grid_2d_graph, False),
    "random_geometric_graph": (nx.random_geometric_graph, True),
    "barabasi_albert_graph": (nx.barabasi_albert_graph, True),
    "connected_watts_strogatz_graph": (nx.connected_watts_strogatz_graph, True),
    "random_regular_graph": (nx.random_regular_graph, True),
}


@dataclass(frozen=True, slots=True)
class PublishSpec:
    topic: str
    rate_hz: float
    size_bytes: int


@dataclass(frozen=True, slots=True)
class CallSpec:
    """Remote calls a role makes: ``echo`` on the ``hosts``, in turn."""

    name: str
    hosts: tuple[str, ...]
    rate_hz: float
    size_bytes: int


@dataclass(frozen=True, slots=True)
class RoleSpec:
    hosts: tuple[str, ...] | None  # None means every host
    subscribe: tuple[str, ...] = ()
    publish: tuple[PublishSpec, ...] = ()
    # Remote calls: whether these hosts serve the echo service, and the calls
    # they make (see chaski_actors.scenario_calls).
    serve: bool = False
    call: tuple[CallSpec, ...] = ()

    def applies_to(self, host: str) -> bool:
        return self.hosts is None or host in self.hosts


@dataclass(frozen=True, slots=True)
class TopologySpec:
    generator: str | None
    params: Mapping[str, Any]
    file: Path | None
    links: Mapping[str, Any]
    latency_per_distance_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    path: Path | None
    seed: int
    duration_s: float
    drain_s: float
    topology: TopologySpec
    roles: tuple[RoleSpec, ...]
    settings: Settings = field(default_factory=Settings)
    # Faults (see chaski_actors.faults): a fixed timeline and a random one.
    faults: tuple[Fault, ...] = ()
    chaos: ChaosSpec | None = None


# -- loading -----------------------------------------------------------------


_REQUIRED: Any = object()


class _Reader(TomlTable):
    """A scenario table, with the typed getters the scenario format uses."""

    def get(
        self, key: str, types: tuple[type, ...], expected: str, default: Any
    ) -> Any:
        if key not in self.table:
            if default is _REQUIRED:
                raise ConfigError(f"{self.source}: {self.prefix}{key} is missing")
            return default
        value = self.table[key]
        if isinstance(value, bool) and bool not in types:
            raise self.error(key, expected)
        if not isinstance(value, types):
            raise self.error(key, expected)
        return value

    def number(
        self, key: str, default: Any = _REQUIRED, *, positive: bool = True
    ) -> float:
        value = self.get(key, (int, float), "a number", default)
        if value < 0 or (positive and value == 0):
            raise self.error(key, "a positive number" if positive else "a number >= 0")
        return float(value)


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; errors name the file and the key."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_scenario(data, source=str(path), base=path.parent)


def parse_scenario(
    data: Mapping[str, Any], *, source: str = "<scenario>", base: Path | None = None
) -> Scenario:
    top = _Reader(source, data, "")
    top.check_keys({"scenario", "topology", "roles", "settings", "faults", "chaos"})
    head = _Reader(source, top.get("scenario", (dict,), "a table", {}), "scenario.")
    head.check_keys({"name", "description", "duration_s", "drain_s", "seed"})

    topology = _parse_topology(
        _Reader(
            source, top.get("topology", (dict,), "a table", _REQUIRED), "topology."
        ),
        base,
    )
    roles_raw = top.get("roles", (list,), "an array of tables", [])
    roles = tuple(
        _parse_role(_Reader(source, r, f"roles[{i}]."))
        if isinstance(r, dict)
        else _raise(ConfigError(f"{source}: roles[{i}] must be a table"))
        for i, r in enumerate(roles_raw)
    )
    settings = Settings.from_mapping(
        top.get("settings", (dict,), "a table", {}), source=f"{source} [settings]"
    )
    duration_s = head.number("duration_s", 10.0)
    chaos = data.get("chaos")
    return Scenario(
        name=head.get("name", (str,), "a string", Path(source).stem),
        description=head.get("description", (str,), "a string", ""),
        path=Path(source) if base is not None else None,
        seed=head.get("seed", (int,), "an integer", 0),
        duration_s=duration_s,
        drain_s=head.number("drain_s", 2.0, positive=False),
        topology=topology,
        roles=roles,
        settings=settings,
        faults=parse_faults(data.get("faults", []), source),
        chaos=None if chaos is None else parse_chaos(chaos, source, duration_s),
    )


def _raise(exc: Exception) -> Any:
    raise exc


def _parse_topology(t: _Reader, base: Path | None) -> TopologySpec:
    t.check_keys({"generator", "params", "file", "links"})
    generator = t.get("generator", (str,), "a generator name", None)
    file = t.get("file", (str,), "a file path", None)
    if (generator is None) == (file is None):
        raise ConfigError(f"{t.source}: topology needs exactly one of generator, file")
    if generator is not None and generator not in GENERATORS:
        raise t.error("generator", f"one of {', '.join(GENERATORS)}")
    links = _Reader(t.source, t.get("links", (dict,), "a table", {}), "topology.links.")
    links.check_keys(
        {
            "latency_ms",
            "latency",
            "jitter_ms",
            "loss",
            "bandwidth_mbps",
            "latency_per_distance_ms",
        }
    )
    defaults: dict[str, Any] = {}
    per_distance = links.number("latency_per_distance_ms", 0.0, positive=False)
    if "latency_ms" in links.table:
        defaults["latency"] = links.number("latency_ms", positive=False) / 1e3
    if "latency" in links.table:
        defaults["latency"] = links.get("latency", (str, dict), "a distribution", None)
    if "jitter_ms" in links.table:
        defaults["jitter"] = links.number("jitter_ms", positive=False) / 1e3
    if "loss" in links.table:
        loss = links.number("loss", positive=False)
        if loss >= 1:
            raise links.error("loss", "a probability below 1")
        defaults["loss"] = loss
    if "bandwidth_mbps" in links.table:
        defaults["bandwidth"] = links.number("bandwidth_mbps") * 1e6
    return TopologySpec(
        generator=generator,
        params=t.get("params", (dict,), "a table", {}),
        file=(base or Path()) / file if file is not None else None,
        links=defaults,
        latency_per_distance_s=per_distance / 1e3,
    )


def _parse_role(r: _Reader) -> RoleSpec:
    r.check_keys({"hosts", "subscribe", "publish", "serve", "call"})
    hosts = r.get("hosts", (str, list), '"all" or a list of host names', "all")
    if isinstance(hosts, str):
        if hosts != "all":
            raise r.error("hosts", '"all" or a list of host names')
        host_tuple = None
    else:
        host_tuple = tuple(str(h) for h in hosts)
    subscribe = r.get("subscribe", (list,), "a list of topics", [])
    if not all(isinstance(s, str) and s for s in subscribe):
        raise r.error("subscribe", "a list of non-empty topic strings")
    publishes = []
    for i, raw in enumerate(r.get("publish", (list,), "a list of tables", [])):
        if not isinstance(raw, dict):
            raise r.error("publish", "a list of tables")
        p = _Reader(r.source, raw, f"{r.prefix}publish[{i}].")
        p.check_keys({"topic", "rate_hz", "size_bytes"})
        size = p.get("size_bytes", (int,), "an integer number of bytes", 64)
        if size < 0:
            raise p.error("size_bytes", "a size >= 0")
        publishes.append(
            PublishSpec(
                topic=p.get("topic", (str,), "a topic", _REQUIRED),
                rate_hz=p.number("rate_hz", 1.0),
                size_bytes=size,
            )
        )
    calls = []
    for i, raw in enumerate(r.get("call", (list,), "a list of tables", [])):
        if not isinstance(raw, dict):
            raise r.error("call", "a list of tables")
        c = _Reader(r.source, raw, f"{r.prefix}call[{i}].")
        c.check_keys({"name", "hosts", "rate_hz", "size_bytes"})
        targets = c.get("hosts", (list,), "a list of host names", _REQUIRED)
        if not targets or not all(isinstance(t, (str, int)) for t in targets):
            raise c.error("hosts", "a non-empty list of host names")
        size = c.get("size_bytes", (int,), "an integer number of bytes", 64)
        if size < 0:
            raise c.error("size_bytes", "a size >= 0")
        calls.append(
            CallSpec(
                name=c.get("name", (str,), "a name", "echo"),
                hosts=tuple(str(t) for t in targets),
                rate_hz=c.number("rate_hz", 1.0),
                size_bytes=size,
            )
        )
    return RoleSpec(
        host_tuple,
        tuple(subscribe),
        tuple(publishes),
        serve=r.get("serve", (bool,), "true or false", False),
        call=tuple(calls),
    )


# -- the graph ---------------------------------------------------------------


def build_graph(scenario: Scenario) -> nx.Graph[str]:
    """The topology with string host names and every edge's attributes set."""
    spec = scenario.topology
    if spec.file is not None:
        graph = _read_graph_file(spec.file)
    else:
        assert spec.generator is not None
        build, seeded = GENERATORS[spec.generator]
        params = dict(spec.params)
        if seeded:
            params.setdefault("seed", derive_seed(scenario.seed, "topology") % 2**32)
        try:
            graph = build(**params)
        except (TypeError, ValueError, nx.NetworkXError) as exc:
            raise ConfigError(
                f"{scenario.path or '<scenario>'}: topology.generator "
                f"{spec.generator}({params}) failed: {exc}"
            ) from exc
    graph = nx.relabel_nodes(graph, {n: _host_name(n) for n in graph.nodes})
    for u, v, attrs in graph.edges(data=True):
        where = f"{spec.file or scenario.path or '<scenario>'}: edge {u}-{v}"
        _edge_units(attrs, where)
        if spec.latency_per_distance_s and "latency" not in attrs:
            base = spec.links.get("latency", 0.0)
            if not isinstance(base, (int, float)):
                raise ConfigError(
                    f"{where}: latency_per_distance_ms needs a fixed latency_ms"
                )
            distance = _distance(graph, u, v, where)
            attrs["latency"] = base + distance * spec.latency_per_distance_s
        for key, value in spec.links.items():
            attrs.setdefault(key, value)
    return graph


# Edge attributes in the units people write, and the factor to the
# simulator's units (seconds, bits per second).
_EDGE_UNITS = {
    "latency_ms": ("latency", 1e-3),
    "jitter_ms": ("jitter", 1e-3),
    "bandwidth_mbps": ("bandwidth", 1e6),
}


def _edge_units(attrs: dict[str, Any], where: str) -> None:
    for key, (name, factor) in _EDGE_UNITS.items():
        if key not in attrs:
            continue
        value = attrs.pop(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} = {value!r}: expected a number")
        attrs[name] = float(value) * factor


def position(graph: nx.Graph[str], host: str) -> tuple[float, float] | None:
    """A host's position: its ``pos`` attribute, or ``x`` and ``y``."""
    attrs = graph.nodes[host]
    pos = attrs.get("pos")
    if pos is None and "x" in attrs and "y" in attrs:
        pos = (attrs["x"], attrs["y"])
    if pos is None:
        return None
    x, y = (float(c) for c in list(pos)[:2])
    return x, y


def _distance(graph: nx.Graph[str], u: str, v: str, where: str) -> float:
    a, b = position(graph, u), position(graph, v)
    if a is None or b is None:
        raise ConfigError(
            f"{where}: latency_per_distance_ms needs node positions "
            "(a pos attribute, or x and y)"
        )
    return math.dist(a, b)


def _host_name(node: Any) -> str:
    if isinstance(node, tuple):
        return "-".join(map(str, node))
    return str(node)


def _read_graph_file(path: Path) -> nx.Graph[Any]:
    readers: dict[str, Callable[[Path], Any]] = {
        ".gml": nx.read_gml,
        ".graphml": nx.read_graphml,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"{path}: topology files must be .gml or .graphml")
    try:
        graph: nx.Graph[Any] = reader(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such topology file") from None
    except Exception as exc:  # networkx raises many types for bad files
        raise ConfigError(f"{path}: cannot read topology: {exc}") from exc
    return graph


# -- playing the roles -------------------------------------------------------


#: Told how a run is going: (run-clock seconds so far, seconds expected in all).
Progress = Callable[[float, float], None]


class NetworkLike(Protocol):
    """What :func:`play` needs of a network: one runtime per host."""

    def runtime(self, host: str) -> Runtime: ...


@dataclass
class TopicRecord:
    """Messages of one topic; ``times`` pairs with ``latencies``."""

    sent: int = 0
    delivered: int = 0
    latencies: list[float] = field(default_factory=list)
    # When each sample arrived, in seconds since the run started.
    times: list[float] = field(default_factory=list)


@dataclass
class LinkRecord:
    """Messages that crossed one directed link, publisher to subscriber."""

    sent: int = 0
    delivered: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class EdgeRecord:
    """The life of one edge's link, in seconds since the run started."""

    linked_at: list[float] = field(default_factory=list)
    dropped_at: list[float] = field(default_factory=list)
    # Reconnections the dialling node made on this edge's link.
    reconnections: int = 0

    @property
    def up(self) -> bool:
        return len(self.linked_at) > len(self.dropped_at)


@dataclass(frozen=True, slots=True)
class Publication:
    """One message a publisher sent, and the peers it meant it for.

    ``life`` counts the host's restarts: a restarted host starts its
    sequence numbers again, so (source, life, topic, seq) names a message.
    """

    source: str
    life: int
    topic: str
    seq: int
    at: float
    to: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Receipt:
    """One message as a receiver's application got it."""

    receiver: str
    life: int
    source: str
    source_life: int
    topic: str
    seq: int
    at: float


@dataclass
class Recorder:
    """What the actors saw, gathered for the report."""

    topics: dict[str, TopicRecord] = field(default_factory=dict)
    links_seen: dict[tuple[str, str], LinkRecord] = field(default_factory=dict)
    edges: dict[tuple[str, str], EdgeRecord] = field(default_factory=dict)
    connect_failures: int = 0
    links: int = 0
    # The runtime clock when play() began; every time above is relative to it.
    start: float = 0.0
    # Seconds from the start until every edge was linked (None: never).
    converged_s: float | None = None
    # (start, end, what) in seconds since the start, for the report's plots.
    fault_windows: list[tuple[float, float, str]] = field(default_factory=list)
    # Set when the run ends, so that watchers do not take closing for a fault.
    stopping: bool = False
    # Reconnections every node made, on any link (discovered ones included).
    reconnections: int = 0
    # What the delivery checker (chaski_actors.chaos) reads; times are the
    # runtime clock's, like the faults' own.
    publications: list[Publication] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    crashes: dict[str, list[float]] = field(default_factory=dict)
    restarts: dict[str, list[float]] = field(default_factory=dict)
    unpaired: list[tuple[str, str]] = field(default_factory=list)

    def topic(self, name: str) -> TopicRecord:
        record = self.topics.get(name)
        if record is None:
            record = self.topics[name] = TopicRecord()
        return record

    def link(self, source: str, target: str) -> LinkRecord:
        record = self.links_seen.get((source, target))
        if record is None:
            record = self.links_seen[source, target] = LinkRecord()
        return record

    def edge(self, u: str, v: str) -> EdgeRecord:
        key = (u, v) if u < v else (v, u)
        record = self.edges.get(key)
        if record is None:
            record = self.edges[key] = EdgeRecord()
        return record

    def summaries(self) -> dict[str, LatencySummary | None]:
        return {t: summarize(r.latencies) for t, r in sorted(self.topics.items())}


async def play(
    network: NetworkLike,
    graph: nx.Graph[str],
    scenario: Scenario,
    recorder: Recorder,
) -> None:
    """Start a node per host, link neighbours, run the roles, stop everything."""
    await Cast(network, graph, scenario, recorder).play()


class Cast:
    """The nodes that play a scenario's roles, one per host.

    :meth:`play` runs the whole scenario. A fault injector tells the cast
    about crashes (:meth:`crashed`) and restarts (:meth:`restarted`): a
    restarted host gets a fresh node on its old port, which dials its
    neighbours again and resumes its roles with new sequence numbers.
    """

    def __init__(
        self,
        network: NetworkLike,
        graph: nx.Graph[str],
        scenario: Scenario,
        recorder: Recorder,
    ) -> None:
        self.network = network
        self.graph = graph
        self.scenario = scenario
        self.recorder = recorder
        self.hosts: list[str] = list(graph.nodes)
        self.nodes: dict[str, Node] = {}
        self.addresses: dict[str, Address] = {}
        self.lives: dict[str, int] = dict.fromkeys(self.hosts, 0)
        # Hosts that are down now, with when they went down.
        self.down: dict[str, float] = {}
        self.until: float | None = None
        self._tasks: list[Task[None]] = []
        self._watcher: str | None = None
        self.remotes: dict[str, Remote | None] = {}

    def __repr__(self) -> str:
        down = list(self.down)
        return f"<Cast {self.scenario.name} nodes={len(self.nodes)} down={down}>"

    async def play(self) -> None:
        scenario, recorder = self.scenario, self.recorder
        check_calls(self.graph, scenario)
        for host in self.hosts:
            if host not in self.down:
                await self._start_node(host, 0)

        first = self.network.runtime(self.hosts[0])
        recorder.start = first.now()
        self._tasks += _keep_neighbours_linked(
            self.graph, self.nodes, self.addresses, recorder
        )
        self._watch()
        await _await_convergence(first, self.nodes, scenario.settings, recorder)

        self.until = first.now() + scenario.duration_s
        for host in self.hosts:
            if host not in self.down:
                self._run_roles(host)
        await first.sleep(self.until + scenario.drain_s - first.now())
        self._finish()
        for host, node in self.nodes.items():
            if host not in self.down:
                await node.stop()
        for task in self._tasks:
            task.cancel()

    def _finish(self) -> None:
        recorder, nodes = self.recorder, self.nodes
        recorder.unpaired = self.unpaired()
        recorder.links = sum(len(n.links) for n in nodes.values()) // 2
        recorder.reconnections = sum(
            n.statistics().reconnections for n in nodes.values()
        )
        for edge_key, record in recorder.edges.items():
            link = nodes[edge_key[0]].links.get(edge_key[1])
            record.reconnections = link.reconnections if link is not None else 0
        recorder.stopping = True

    def unpaired(self) -> list[tuple[str, str]]:
        """Pairs that should be linked and are not, in a stable order.

        Neighbours in the topology must be linked, both ways, over a live
        connection; and any link a node holds (discovery may add some) must
        have its connection back, not be waiting for one.
        """
        pairs: dict[tuple[str, str], None] = {}
        for u, v in self.graph.edges():
            pairs[(u, v) if u < v else (v, u)] = None
        for host, node in self.nodes.items():
            if host not in self.down:
                for peer in node.links:
                    pairs[(host, peer) if host < peer else (peer, host)] = None
        return [pair for pair in sorted(pairs) if not self._linked(*pair)]

    def _linked(self, u: str, v: str) -> bool:
        if u in self.down or v in self.down:
            return False
        there = self.nodes[u].links.get(v)
        back = self.nodes[v].links.get(u)
        return (
            there is not None
            and back is not None
            and there.connected
            and back.connected
        )

    def _watch(self) -> None:
        """Run the edge watcher on a live host (a crash would silence it)."""
        live = [h for h in self.hosts if h not in self.down and h in self.nodes]
        if not self.recorder.edges or not live:
            self._watcher = None
            return
        self._watcher = live[0]
        runtime = self.network.runtime(live[0])
        watcher = _watch_edges(runtime, self.nodes, self.recorder)
        self._tasks.append(runtime.spawn(watcher, name="watch"))

    # -- faults ----------------------------------------------------------------

    def crashed(self, host: str) -> None:
        """The host died: its node's tasks are gone, its state with them."""
        now = self.network.runtime(host).now()
        self.down[host] = now
        self.recorder.crashes.setdefault(host, []).append(now)
        if host == self._watcher:
            self._watch()

    def restarted(self, host: str) -> None:
        """The host is back, empty: start its node and roles again."""
        self.down.pop(host, None)
        runtime = self.network.runtime(host)
        self.recorder.restarts.setdefault(host, []).append(runtime.now())
        if host in self.addresses:
            runtime.spawn(self._restart(host), name="restart")
        if self._watcher is None and self.recorder.edges:
            self._watch()

    async def _restart(self, host: str) -> None:
        self.lives[host] += 1
        await self._start_node(host, self.addresses[host][1])
        node = self.nodes[host]
        for neighbour in self.graph.neighbors(host):
            dial = _first_link(
                node, neighbour, self.addresses[neighbour], self.recorder
            )
            self._tasks.append(node.runtime.spawn(dial, name=f"link-{neighbour}"))
        if self.until is not None:
            self._run_roles(host)

    async def _start_node(self, host: str, port: int) -> None:
        runtime = self.network.runtime(host)
        node = Node(runtime, host, settings=self.scenario.settings, port=port)
        await node.start()
        for role in self.scenario.roles:
            if role.applies_to(host):
                await node.subscribe(*role.subscribe)
        self.nodes[host] = node
        self.addresses[host] = node.address
        self.remotes[host] = serve(node, self.scenario)

    def _run_roles(self, host: str) -> None:
        node = self.nodes[host]
        spawn = node.runtime.spawn
        life = self.lives[host]
        assert self.until is not None
        self._tasks.append(spawn(_consume(node, life, self.recorder), name="consume"))
        for role in self.scenario.roles:
            if role.applies_to(host):
                for spec in role.publish:
                    publisher = _publish(node, life, spec, self.until, self.recorder)
                    self._tasks.append(spawn(publisher, name="publish"))
                remote = self.remotes[host]
                for call in role.call:
                    # serve() gave every host with calls a Remote.
                    assert remote is not None
                    calling = make_calls(remote, call, self.until, self.recorder)
                    self._tasks.append(spawn(calling, name="calls"))


def _keep_neighbours_linked(
    graph: nx.Graph[str],
    nodes: dict[str, Node],
    addresses: dict[str, Address],
    recorder: Recorder,
) -> list[Task[None]]:
    tasks: list[Task[None]] = []
    for u, v in graph.edges():
        # The smaller name dials, so that each edge gets one link.
        dialer, target = (u, v) if u < v else (v, u)
        recorder.edge(u, v)
        node = nodes[dialer]
        dial = _first_link(node, target, addresses[target], recorder)
        tasks.append(node.runtime.spawn(dial, name=f"link-{target}"))
    return tasks


async def _await_convergence(
    runtime: Runtime, nodes: dict[str, Node], settings: Settings, recorder: Recorder
) -> None:
    """Wait until every edge is linked, or give up after one connect attempt."""
    ends = [(nodes[u], v) for u, v in recorder.edges]
    limit = settings.connect_timeout_s + settings.handshake_timeout_s

    def linked() -> bool:
        return all(
            target in node.links and node.links[target].connected
            for node, target in ends
        )

    try:
        # Polled, because links come up in many tasks; 1 ms is the finest
        # figure the report gives and costs nothing in sim.
        await eventually(runtime, linked, timeout=limit, interval=0.001)
    except TimeoutError:
        return
    recorder.converged_s = runtime.now() - recorder.start


async def _first_link(
    node: Node, target: str, address: Address, recorder: Recorder
) -> None:
    """Dial ``target`` until it answers once; the node keeps the link after."""
    runtime = node.runtime
    settings = node.settings
    backoff = settings.reconnect_initial_s
    while target not in node.links and not recorder.stopping:
        try:
            await node.connect(*address)
        except ClosedResourceError:
            return
        except ConnectError:
            if target in node.links:
                return  # the other side dialled first, or discovery did
            recorder.connect_failures += 1
            await runtime.sleep(backoff * (1 + runtime.random.random() * 0.1))
            backoff = min(
                backoff * settings.reconnect_multiplier, settings.reconnect_max_s
            )


# How often the watcher looks at every edge's link. Convergence times are
# reported to this resolution; 50 ms is well below any keep-alive.
_WATCH_S = 0.05


async def _watch_edges(
    runtime: Runtime, nodes: dict[str, Node], recorder: Recorder
) -> None:
    """Record when each edge's link comes up and goes down.

    Nodes are looked up by name at each sample, so that a restarted host's
    new node is the one watched.
    """
    edges = list(recorder.edges)
    records = [recorder.edges[edge] for edge in edges]
    while not recorder.stopping:
        now = runtime.now() - recorder.start
        for (dialer, target), record in zip(edges, records, strict=True):
            link = nodes[dialer].links.get(target)
            up = link is not None and link.connected
            if up and not record.up:
                record.linked_at.append(now)
            elif record.up and not up:
                record.dropped_at.append(now)
        await runtime.sleep(_WATCH_S)


async def _consume(node: Node, life: int, recorder: Recorder) -> None:
    runtime = node.runtime
    try:
        while True:
            message = await node.receive()
            record = recorder.topic(message.topic)
            record.delivered += 1
            record.latencies.append(message.latency)
            record.times.append(runtime.now() - recorder.start)
            link = recorder.link(message.source, node.name)
            link.delivered += 1
            link.latencies.append(message.latency)
            match message.data:
                case [str() as source, int() as source_life, int() as seq, _]:
                    recorder.receipts.append(
                        Receipt(
                            node.name,
                            life,
                            source,
                            source_life,
                            message.topic,
                            seq,
                            message.received_at,
                        )
                    )
    except ClosedResourceError:
        return


async def _publish(
    node: Node, life: int, spec: PublishSpec, until: float, recorder: Recorder
) -> None:
    runtime = node.runtime
    interval = 1.0 / spec.rate_hz
    padding = b"\x00" * spec.size_bytes
    record = recorder.topic(spec.topic)
    # A random phase, so that publishers do not all fire at the same instant.
    await runtime.sleep(runtime.random.uniform(0.0, interval))
    for seq in itertools.count():
        if runtime.now() >= until:
            return
        # The links publish() will use, taken in the same step, so that the
        # per-link count of sent messages matches what was sent, and the
        # checker knows whom each message was meant for.
        targets = [n for n, link in node.links.items() if spec.topic in link.topics]
        payload = [node.name, life, seq, padding]
        at = runtime.now()
        try:
            record.sent += await node.publish(spec.topic, payload)
        except ClosedResourceError:
            return
        for target in targets:
            recorder.link(node.name, target).sent += 1
        recorder.publications.append(
            Publication(node.name, life, spec.topic, seq, at, tuple(targets))
        )
        await runtime.sleep(interval)

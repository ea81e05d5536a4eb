"""Discovery: how nodes that share a topic find each other over the overlay.

A node joins through any node it knows the address of. From then on it
learns of the rest through announcements flooded over the links that exist:

* ``ANNOUNCE(origin, node_id, host, port, topics, id, ttl)`` says "node
  ``origin`` listens at ``host:port`` and subscribes to ``topics``". Its
  origin sends it to every overlay neighbour when it joins (its first link), when
  its topics change, on a trickle schedule while it has topics (below), and
  in answer to an announcement it cannot act on itself (below).
* A node that receives an announcement for the first time passes it to
  every other overlay link with ``ttl - 1``, unless the ttl is spent. A node that
  shares a topic with the origin passes it on without spending a hop: the
  ttl bounds the flood's reach beyond the topic's members, while members
  far apart on the overlay still hear of each other through the members
  between them (without this, a random 100-node overlay took until the
  periodic announcement, 30 s, to pair its last tenth). Copies that
  arrive by other paths are recognised by ``(origin, id)`` and dropped: the
  node remembers the last ``discovery_memory`` pairs it has seen, and
  forgets the oldest first, so memory stays bounded however long it runs.
* If the announcement shares a topic with the receiver and the two are not
  linked, they pair. To keep both from dialling each other at once (two
  connections, each refused as a duplicate by the other end), only the node
  with the smaller name dials. The larger one announces itself in answer,
  so that the smaller one hears of it even if it joined after the larger
  one's last announcement; these answers are rate-limited to one announcement
  a second, which bounds the floods a burst of newcomers
  can cause.
* When two nodes link, each introduces the other to its peers that share a
  topic with it (an announcement with id 0, one hop, not relayed), and so
  each topic's nodes close triangles without a flood: partners of partners
  pair directly. They do so again whenever the link comes back after a
  reconnection, since what went by flood while it was down (a crashed
  peer's new life, say) never reached the other side.
* A dial that fails is not retried by itself, but news of its origin that
  arrived while it was under way (another announcement or introduction) is
  acted on when it fails: the origin may have been out of reach only when
  the dial began.
* A node dials only while it has fewer than ``max_connections`` links; the
  dialled side refuses beyond its own limit. Pairs kept apart by the limit
  can still exchange messages when ``propagation_ttl`` is set: publishes
  then travel as ``FORWARD`` frames, passed on by every node (subscribed or
  not) up to that many hops, with the same bounded duplicate memory.

Announcements travel only over the overlay: the links a node made or
accepted by joining (``connect``), not the links discovery made between
partners. Partners learn of each other's partners through introductions,
so flooding their links too would repeat what the overlay carries, and on
a 1000-node network it multiplied the frames of a flood by ten.

Topic routes. A flood reaches ``ttl`` hops past a topic's members, so two
members far apart with no member between them would never hear of each
other. Routes bridge such gaps at a cost that does not grow with the
flood's reach. Each node tells each overlay neighbour, for every topic it
knows of, the *smallest-named* member it knows, with that member's address
and its distance in overlay hops (``ROUTES`` frames; a node's own topics
count at distance 0). What a node tells a neighbour leaves out what that
neighbour told it (split horizon), and routes longer than
``discovery_reach`` hops are not passed on, which also bounds how long a
withdrawn route can echo around a cycle of the overlay. Only changes are
sent, a tenth of a second after the first one, batched; the whole table
goes out when a link comes up or reconnects (the frames are unnumbered, and
a reconnection may have lost some).

On a connected overlay every member within ``discovery_reach`` hops of
its topic's smallest member learns of that member. The smaller name dials,
so the larger one sends a ``SEEK(target, topic, ttl, ...)`` frame along the
route, each hop passing it to the neighbour that told it of the target;
the target then dials. Every member is linked to the topic's smallest
member, introductions turn that star into direct links between all of
them, and the topic converges however far apart its members are (up to
``discovery_reach``). A node's routing table holds at most ``memory``
topics per overlay neighbour; routes beyond that are dropped and counted.

Periodic announcements follow a trickle schedule: after an announcement
caused by a change (a new overlay link, a first partner, new topics, an
answer), the next comes ``discovery_interval_s`` later, and each one after
that waits twice as long as the one before, up to eight times the
interval. Any change starts the schedule again. A network at rest thus
announces ever more rarely, while a change is announced at once.

Measured (``python -m bench.bench_links``, sim; a random tree overlay, each
node in one of N / 10 topics, default settings). Every pair sharing a topic
linked after 0.2, 1.9 and 3.2 simulated seconds for N = 10, 100 and 1000,
with 435, 7,281 and 58,235 ANNOUNCE frames (floods and introductions), 18,
914 and 18,189 ROUTES frames and 0, 423 and 9,560 SEEK frames. Before the
routes, N = 100 took 30.4 s (its last pairs waited for the periodic
announcement) and N = 1000 never converged with a ttl of 4; a ttl of 12
converged in 2.0 s at a cost of 9.0 million frames. On the 200-node
heartbeat overlay of ``bench/simulated.py`` the first 30 s now cost 3,805
ANNOUNCE and 9,491 ROUTES frames beside 24,000 deliveries, where there were
44,826 ANNOUNCE frames before.

This module keeps the state and makes the decisions; the node sends the
frames and opens the connections.

Known shortcomings. Routes cost grows with topics times overlay links: a
node learns a route for every topic within reach, even one that no other
node subscribes to (a topic per node, as in the heartbeat overlay above).
Convergence is certain only for members within
``discovery_reach`` overlay hops (32 by default) of their topic's smallest
member; farther ones rely on the floods and meet only if some chain of
members within ``ttl`` hops of each other joins them. A member whose link
to the smallest member closed for good seeks it again at once; but if a
SEEK is lost, or the dial that answers it fails, the member seeks again
only when the route changes, relying until then on the periodic
announcements. A forwarded message whose id has been pushed out of
the bounded memory by ``discovery_memory`` newer ones would be delivered
again if a copy arrived that late.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from .errors import ProtocolError
from .protocol import BOOL, INT, LIST, STR, register_kind

__all__ = [
    "INTRODUCTION",
    "ROUTES",
    "SEEK",
    "Announcement",
    "Discovery",
    "DiscoveryStatistics",
    "Route",
    "Routes",
    "SeenSet",
    "Trickle",
]

# The announcement id of an introduction: a node's announcement of one of
# its peers to another, sent one hop and never relayed nor remembered.
INTRODUCTION: Final = 0

# Frame kinds of the topic routes (see the essay). A route entry is
# [topic, member, node_id, host, port, distance]; distance -1 withdraws it.
ROUTES: Final = 20  # whole table?, [entry, ...]
SEEK: Final = 21  # target, topic, ttl, origin, node_id, host, port
register_kind(ROUTES, "routes", BOOL, LIST)
register_kind(SEEK, "seek", STR, STR, INT, STR, STR, STR, INT)

# Entries per ROUTES frame: keeps a frame far below max_frame_size (an entry
# is well under 200 bytes) whatever the number of topics.
ROUTES_PER_FRAME: Final = 256

# The periodic announcement waits at most this many discovery intervals.
TRICKLE_LIMIT: Final = 8


@dataclass(frozen=True, slots=True)
class Announcement:
    origin: str
    node_id: str
    host: str
    port: int
    topics: tuple[str, ...]
    ident: int
    ttl: int

    def fields(self) -> tuple[object, ...]:
        return (
            self.origin,
            self.node_id,
            self.host,
            self.port,
            list(self.topics),
            self.ident,
            self.ttl,
        )


@dataclass(frozen=True, slots=True)
class DiscoveryStatistics:
    announced: int
    received: int
    duplicates: int
    relayed: int
    dials: int
    remembered: int
    forgotten: int
    routes: int
    routes_dropped: int
    seeks: int


class SeenSet:
    """The last ``capacity`` keys seen, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[tuple[object, ...], None] = OrderedDict()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._keys)

    def first_sight(self, key: tuple[object, ...]) -> bool:
        """Record ``key``; whether it was new."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
            self.forgotten += 1
        return True


class Discovery:
    """The discovery state of one node; see the module essay."""

    def __init__(
        self,
        name: str,
        *,
        memory: int,
        ttl: int,
        reach: int = 32,
        interval: float = 30.0,
    ) -> None:
        self.name = name
        self.ttl = ttl
        self.seen = SeenSet(memory)
        self.routes = Routes(name, reach=reach, capacity=memory)
        self.trickle = Trickle(interval)
        self._ids = itertools.count(1)
        self.announced = self.received = self.duplicates = 0
        self.relayed = self.dials = self.seeks = 0

    def __repr__(self) -> str:
        return (
            f"<Discovery {self.name} announced={self.announced} seen={len(self.seen)}>"
        )

    def announcement(
        self, node_id: str, host: str, port: int, topics: Iterable[str]
    ) -> Announcement:
        """A new announcement of this node, already marked as seen."""
        ident = next(self._ids)
        self.seen.first_sight((self.name, node_id, ident))
        self.announced += 1
        return Announcement(
            self.name, node_id, host, port, tuple(sorted(topics)), ident, self.ttl
        )

    def receive(
        self, announcement: Announcement, topics: Iterable[str] = ()
    ) -> tuple[bool, Announcement | None]:
        """Whether it is new, and the copy to relay onwards (None: relay none).

        ``topics`` are the receiver's own: a node that shares a topic with the
        origin relays without spending a hop, so the ttl bounds how far an
        announcement travels *outside* its topic's members, and members far
        apart on the overlay still hear of each other through members between
        them.
        """
        self.received += 1
        if announcement.ident == INTRODUCTION:
            return True, None
        # The node id is part of the key: a node that crashed and restarted
        # counts its announcements from 1 again, and they are news.
        key = (announcement.origin, announcement.node_id, announcement.ident)
        if not self.seen.first_sight(key):
            self.duplicates += 1
            return False, None
        member = not set(topics).isdisjoint(announcement.topics)
        ttl = announcement.ttl if member else announcement.ttl - 1
        if ttl < 1:
            return True, None
        self.relayed += 1
        return True, Announcement(
            announcement.origin,
            announcement.node_id,
            announcement.host,
            announcement.port,
            announcement.topics,
            announcement.ident,
            ttl,
        )

    def wants(
        self, announcement: Announcement, topics: Iterable[str], linked: bool
    ) -> str | None:
        """What to do about a first-seen announcement: "dial", "answer" or None."""
        if linked or announcement.origin == self.name:
            return None
        if not set(topics).intersection(announcement.topics):
            return None
        return "dial" if self.name < announcement.origin else "answer"

    def statistics(self) -> DiscoveryStatistics:
        return DiscoveryStatistics(
            announced=self.announced,
            received=self.received,
            duplicates=self.duplicates,
            relayed=self.relayed,
            dials=self.dials,
            remembered=len(self.seen),
            forgotten=self.seen.forgotten,
            routes=self.routes.size(),
            routes_dropped=self.routes.dropped,
            seeks=self.seeks,
        )


class Trickle:
    """The periodic announcement's schedule: doubling while nothing changes."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = interval

    def reset(self) -> None:
        self._next = self.interval

    def next_wait(self) -> float:
        """How long until the next periodic announcement; doubles the one after."""
        wait = self._next
        self._next = min(wait * 2, self.interval * TRICKLE_LIMIT)
        return wait


class Route(NamedTuple):
    """The smallest member of a topic one knows of, and how far away it is."""

    member: str
    node_id: str
    host: str
    port: int
    distance: int

    def key(self) -> tuple[str, int]:
        return (self.member, self.distance)


# A route inside the tables: the fields of a Route, in its order, as a plain
# tuple. A node keeps a route per topic per overlay neighbour, which comes to
# millions on a large simulated network; the garbage collector stops tracking
# plain tuples of strings and integers, but not instances of a tuple subclass
# such as Route, and full collections that walked them all took seconds.
Hop = tuple[str, str, str, int, int]


def _key(hop: Hop) -> tuple[str, int]:
    return (hop[0], hop[4])


def parse_routes(entries: list[Any]) -> list[tuple[str, Hop | None]]:
    """The entries of a ROUTES frame, checked: (topic, route or None)."""
    parsed: list[tuple[str, Hop | None]] = []
    for entry in entries:
        if not (
            isinstance(entry, list)
            and len(entry) == 6
            and all(isinstance(field, str) for field in entry[:4])
            and all(type(field) is int for field in entry[4:])
            and entry[0]
        ):
            raise ProtocolError(f"a malformed route entry: {entry!r:.80}")
        topic, member, node_id, host, port, distance = entry
        if distance < 0:
            parsed.append((topic, None))
        elif not member:
            raise ProtocolError("a route entry without a member")
        else:
            parsed.append((topic, (member, node_id, host, port, distance)))
    return parsed


def _pick(top: list[tuple[Hop, str | None]], excluding: str | None) -> Hop | None:
    for route, neighbour in top:
        if neighbour is None or neighbour != excluding:
            return route
    return None


def route_entry(topic: str, route: Hop | None) -> list[object]:
    if route is None:
        return [topic, "", "", "", 0, -1]
    return [topic, *route]


class Routes:
    """Topic routes: per overlay neighbour, what it told us and what we told it.

    See the module essay. The node says which links are overlay neighbours,
    passes on what they send, and sends what :meth:`flush` returns.
    """

    def __init__(self, name: str, *, reach: int, capacity: int) -> None:
        self.name = name
        self.reach = reach
        self.capacity = capacity
        self.own: Route | None = None
        self.topics: dict[str, None] = {}
        self._heard: dict[str, dict[str, Hop]] = {}
        self._told: dict[str, dict[str, Hop]] = {}
        self._dirty: dict[str, None] = {}
        # Neighbours owed the whole table; True: even an empty one, to clear
        # what they may still hold from before a reconnection.
        self._fresh: dict[str, bool] = {}
        self._chosen: dict[str, Hop] = {}
        self.dropped = 0

    def __repr__(self) -> str:
        return (
            f"<Routes {self.name} neighbours={len(self._heard)} routes={self.size()}>"
        )

    def size(self) -> int:
        return sum(len(table) for table in self._heard.values())

    def neighbour(self, name: str) -> bool:
        return name in self._heard

    @property
    def pending(self) -> bool:
        """Whether a flush would have something to look at."""
        return bool(self._dirty or self._fresh)

    def set_own(self, contact: Route | None, topics: Iterable[str]) -> None:
        """This node's address (distance 0) and topics."""
        wanted = dict.fromkeys(sorted(topics))
        for topic in itertools.chain(self.topics, wanted):
            if (topic in self.topics) != (topic in wanted) or contact != self.own:
                self._dirty[topic] = None
        self.own, self.topics = contact, wanted

    def add_neighbour(self, name: str) -> None:
        if name not in self._heard:
            self._heard[name] = {}
            self._told[name] = {}
            self._fresh[name] = False

    def resync(self, name: str) -> None:
        """Send ``name`` the whole table at the next flush (it may have lost some)."""
        if name in self._heard:
            self._told[name] = {}
            self._fresh[name] = True

    def remove_neighbour(self, name: str) -> None:
        heard = self._heard.pop(name, {})
        self._told.pop(name, None)
        self._fresh.pop(name, None)
        self._dirty.update(dict.fromkeys(heard))

    def forget_member(self, member: str) -> None:
        """Our link to ``member`` closed: report it again as news if it is
        still a topic's smallest member at the next flush."""
        for topic, route in list(self._chosen.items()):
            if route[0] == member:
                del self._chosen[topic]
                self._dirty[topic] = None

    def receive(
        self, neighbour: str, whole: bool, entries: list[tuple[str, Hop | None]]
    ) -> None:
        """Take what an overlay neighbour says (``whole``: its entire table)."""
        heard = self._heard.get(neighbour)
        if heard is None:
            return  # not (or no longer) an overlay link: its routes are not ours
        if whole:
            self._dirty.update(dict.fromkeys(heard))
            heard.clear()
        for topic, route in entries:
            if route is None:
                if heard.pop(topic, None) is not None:
                    self._dirty[topic] = None
            elif topic not in heard and len(heard) >= self.capacity:
                self.dropped += 1  # full: bounded memory wins over reach
            elif heard.get(topic) != route:
                heard[topic] = route
                self._dirty[topic] = None

    def best(self, topic: str, excluding: str | None = None) -> Route | None:
        """The smallest member of ``topic`` known, not counting ``excluding``'s word.

        Among equal names the nearest wins; routes past the reach are unknown.
        """
        hop = _pick(self._top_two(topic), excluding)
        return None if hop is None else Route._make(hop)

    def _top_two(self, topic: str) -> list[tuple[Hop, str | None]]:
        """The two best routes for ``topic`` and who told them (None: our own).

        Two suffice: the best one not told by a given neighbour is one of
        them. This keeps a flush linear in the number of neighbours.
        """
        # (member, distance, neighbour, route) of the two best, best first.
        first: tuple[str, int, str, Hop] | None = None
        second: tuple[str, int, str, Hop] | None = None
        for neighbour, heard in self._heard.items():
            route = heard.get(topic)
            if route is None or route[4] >= self.reach:
                continue
            if route[0] == self.name:
                continue  # our own route come back around a cycle
            key = (route[0], route[4], neighbour, route)
            if first is None or key[:2] < first[:2]:
                first, second = key, first
            elif second is None or key[:2] < second[:2]:
                second = key
        top: list[tuple[Hop, str | None]] = []
        if topic in self.topics and self.own is not None:
            top.append((self.own, None))
        for found in (first, second):
            if found is not None and len(top) < 2:
                member, distance, neighbour, route = found
                if top and (member, distance + 1) >= _key(top[0][0]):
                    continue  # our own route is better (and never excluded)
                _, node_id, host, port, _ = route
                top.append(((member, node_id, host, port, distance + 1), neighbour))
        top.sort(key=lambda entry: _key(entry[0]))
        return top

    def via(self, topic: str, member: str) -> str | None:
        """The neighbour whose route for ``topic`` leads nearest to ``member``."""
        found: tuple[int, str] | None = None
        for neighbour, heard in self._heard.items():
            route = heard.get(topic)
            if route is None or route[0] != member:
                continue
            if found is None or route[4] < found[0]:
                found = (route[4], neighbour)
        return None if found is None else found[1]

    def flush(
        self,
    ) -> tuple[list[tuple[str, bool, list[list[object]]]], dict[str, Route]]:
        """What to send to whom, and the new smallest members of our own topics.

        Returns ``[(neighbour, whole table?, entries), ...]`` (a neighbour with
        nothing new is left out) and ``{topic: route}`` for each of this
        node's topics whose smallest known member changed to someone else.
        """
        dirty, self._dirty = self._dirty, {}
        fresh, self._fresh = self._fresh, {}
        everything: dict[str, None] = dict.fromkeys(self.topics)
        if fresh:
            for heard in self._heard.values():
                everything.update(dict.fromkeys(heard))
        out: list[tuple[str, bool, list[list[object]]]] = []
        todo = dict(everything) if fresh else {}
        todo.update(dirty)
        tops = {topic: self._top_two(topic) for topic in todo}
        for neighbour in self._heard:
            told = self._told.setdefault(neighbour, {})
            whole = neighbour in fresh
            entries: list[list[object]] = []
            for topic in everything if whole else dirty:
                route = _pick(tops[topic], neighbour)
                if route is not None and route[4] >= self.reach:
                    route = None  # a hop further would be past the reach
                if route == told.get(topic):
                    continue
                if route is None:
                    told.pop(topic, None)
                    if whole:
                        continue
                else:
                    told[topic] = route
                entries.append(route_entry(topic, route))
            if entries or fresh.get(neighbour):
                out.append((neighbour, whole, entries))
        news: dict[str, Route] = {}
        for topic in self.topics:
            if topic not in dirty and not fresh:
                continue
            route = _pick(tops[topic], None)
            previous = self._chosen.get(topic)
            if route is None or route[0] == self.name:
                self._chosen.pop(topic, None)
                continue
            self._chosen[topic] = route
            if previous is None or previous[:2] != route[:2]:  # member, node_id
                news[topic] = Route._make(route)
        return out, news

"""Discovery: how nodes that share a topic find each other over the overlay.

A node joins through any node it knows the address of. From then on it
learns of the rest through announcements flooded over the links that exist:

* ``ANNOUNCE(origin, node_id, host, port, topics, id, ttl)`` says "node
  ``origin`` listens at ``host:port`` and subscribes to ``topics``". Its
  origin sends it to every linked peer when it joins (its first link), when
  its topics change, every ``discovery_interval_s`` while it has topics, and
  in answer to an announcement it cannot act on itself (below).
* A node that receives an announcement for the first time passes it to
  every other link with ``ttl - 1``, unless the ttl is spent. A node that
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

This module keeps the state and makes the decisions; the node sends the
frames and opens the connections.

Known shortcomings. Two members of a topic that are more than ``ttl`` hops
apart on the overlay, with no other member between them, hear of each other
only at the next periodic announcement (``discovery_interval_s``): on a
random 100-node tree the last 10 % of pairs took 30 s where the first 90 %
took 3.6 s. A trickle-style schedule (announce again at doubling intervals
after each change) would shorten that tail at the cost of more floods; it
is not built. A forwarded message whose id has been pushed out of the
bounded memory by ``discovery_memory`` newer ones would be delivered again
if a copy arrived that late.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "INTRODUCTION",
    "Announcement",
    "Discovery",
    "DiscoveryStatistics",
    "SeenSet",
]

# The announcement id of an introduction: a node's announcement of one of
# its peers to another, sent one hop and never relayed nor remembered.
INTRODUCTION: Final = 0


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

    def __init__(self, name: str, *, memory: int, ttl: int) -> None:
        self.name = name
        self.ttl = ttl
        self.seen = SeenSet(memory)
        self._ids = itertools.count(1)
        self.announced = self.received = self.duplicates = 0
        self.relayed = self.dials = 0

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
        )

"""Applying a fault timeline to a simulated network.

:class:`FaultTimeline` takes :class:`~chaski_actors.faults.Fault` records and
sets a timer for each, at its simulated time; a fault with a duration sets a
second timer that undoes it. Undoing goes back to the topology as it was
built, not to whatever a fault found, so that overlapping faults on one link
still leave it healthy once the last of them is over.

A crash empties the host (see :meth:`SimNetwork.crash`); a restart brings it
back with nothing running. Only the scenario knows what ran there, so the
timeline calls ``on_restart(host)`` after each restart, and the scenario
starts its actors again from that hook. ``on_crash(host)`` lets it note
crashes (a checker may excuse messages that died with a host).

Random schedules come from :func:`chaos_schedule`, which derives its own
random stream from the run's seed: the network's and the applications'
streams are not disturbed, and a seed replays the same faults whichever
command runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from random import Random

from chaski_actors.errors import ConfigError
from chaski_actors.faults import ChaosSpec, Fault, generate_schedule
from chaski_actors.runtime import derive_seed

from ._latency import Latency
from .network import Partition, SimNetwork

__all__ = ["FaultTimeline", "chaos_schedule"]

log = logging.getLogger("chaski.sim")

HostHook = Callable[[str], None]
_Side = tuple[tuple[str, ...], tuple[str, ...] | None, bool]


def chaos_schedule(
    spec: ChaosSpec,
    seed: int,
    hosts: Sequence[str],
    links: Sequence[tuple[str, str]],
) -> tuple[Fault, ...]:
    """The random faults of run ``seed``: the same for every caller."""
    rng = Random(derive_seed(seed, "chaos"))
    return generate_schedule(spec, hosts, links, rng)


class FaultTimeline:
    """Applies faults to ``network`` at their times; see the module essay."""

    def __init__(
        self,
        network: SimNetwork,
        *,
        on_crash: HostHook | None = None,
        on_restart: HostHook | None = None,
    ) -> None:
        self.network = network
        self.on_crash = on_crash
        self.on_restart = on_restart
        #: (time, description) of every fault applied so far, in order.
        self.applied: list[tuple[float, str]] = []
        self._partitions: list[tuple[_Side, Partition]] = []
        self._pending = 0
        self._original: dict[tuple[str, str], tuple[Latency, float, float]] = {}
        for stats in network.link_statistics():
            hop = network.link(stats.source, stats.target)
            self._original[stats.source, stats.target] = (
                hop.latency,
                hop.loss,
                hop.jitter,
            )

    def __repr__(self) -> str:
        return (
            f"<FaultTimeline applied={len(self.applied)} pending={self._pending} "
            f"partitions={len(self._partitions)}>"
        )

    @property
    def pending(self) -> int:
        """Faults (and undos) whose time has not come yet."""
        return self._pending

    def schedule(self, faults: Iterable[Fault]) -> None:
        """Check every fault against the topology, then arm its timers."""
        checked = list(faults)
        for fault in checked:
            self._check(fault)
        for fault in checked:
            self._at(fault.at_s, partial(self.apply, fault))
            heals_at = fault.heals_at
            if heals_at is not None:
                self._at(heals_at, partial(self.undo, fault))

    def _at(self, when: float, action: Callable[[], None]) -> None:
        def fire() -> None:
            self._pending -= 1
            action()

        self._pending += 1
        self.network.kernel.timers.call_at(max(when, self.network.now()), fire)

    def _check(self, fault: Fault) -> None:
        hosts = self.network.hosts
        named = [*fault.hosts, *(fault.others or ())]
        unknown = [h for h in named if h not in hosts]
        if unknown:
            raise ConfigError(f"fault {fault}: no host(s) {unknown} in the topology")
        if fault.link is not None and fault.link not in self._original:
            raise ConfigError(f"fault {fault}: no such link in the topology")

    # -- doing and undoing ---------------------------------------------------

    def apply(self, fault: Fault) -> None:
        """Make ``fault`` happen now."""
        self._note(str(fault))
        kind = fault.kind
        if kind in ("link_down", "link_up"):
            assert fault.link is not None
            self.network.set_link(
                *fault.link, up=kind == "link_up", both_ways=not fault.one_way
            )
        elif kind == "partition":
            handle = self.network.partition(
                fault.hosts, fault.others, one_way=fault.one_way
            )
            self._partitions.append((_side(fault), handle))
        elif kind == "heal":
            self._heal(_side(fault) if fault.hosts else None)
        elif kind == "crash":
            self._crash(fault.hosts[0])
        elif kind == "restart":
            self._restart(fault.hosts[0])
        elif kind == "degrade":
            for u, v in self._links_of(fault):
                self.network.set_link(
                    u,
                    v,
                    both_ways=False,
                    loss=fault.loss,
                    latency=fault.latency_s,
                    jitter=fault.jitter_s,
                )
        else:
            raise ConfigError(f"fault {fault}: unknown kind {kind!r}")

    def undo(self, fault: Fault) -> None:
        """End a fault that had a duration."""
        self._note(f"end of {fault}")
        kind = fault.kind
        if kind == "link_down":
            assert fault.link is not None
            self.network.set_link(*fault.link, up=True, both_ways=not fault.one_way)
        elif kind == "partition":
            self._heal(_side(fault), first_only=True)
        elif kind == "crash":
            self._restart(fault.hosts[0])
        elif kind == "degrade":
            for u, v in self._links_of(fault):
                latency, loss, jitter = self._original[u, v]
                self.network.set_link(
                    u, v, both_ways=False, latency=latency, loss=loss, jitter=jitter
                )

    def _note(self, what: str) -> None:
        now = self.network.now()
        self.applied.append((now, what))
        log.info("fault at %.3f s: %s", now, what)

    def _heal(self, side: _Side | None, *, first_only: bool = False) -> None:
        keep = []
        healed = False
        for entry in self._partitions:
            if (side is None or entry[0] == side) and not (first_only and healed):
                self.network.heal(entry[1])
                healed = True
            else:
                keep.append(entry)
        self._partitions = keep

    def _crash(self, host: str) -> None:
        if not self.network.is_up(host):
            return
        self.network.crash(host)
        if self.on_crash is not None:
            self.on_crash(host)

    def _restart(self, host: str) -> None:
        # A host crashed by two overlapping faults restarts with the first
        # undo; the second finds it up and leaves it alone.
        if self.network.is_up(host):
            return
        self.network.restart(host)
        if self.on_restart is not None:
            self.on_restart(host)

    def _links_of(self, fault: Fault) -> list[tuple[str, str]]:
        if fault.link is None:
            return list(self._original)
        u, v = fault.link
        return [pair for pair in ((u, v), (v, u)) if pair in self._original]


def _side(fault: Fault) -> _Side:
    return (fault.hosts, fault.others, fault.one_way)

"""Faults as data: what goes wrong, when, and random schedules of it.

A :class:`Fault` says what happens to the network at a simulated time: a link
goes down or comes up, a partition splits hosts (both ways or one way), a host
crashes or restarts, a link loses more or gets slower. A fault with a
``duration_s`` undoes itself that much later, so a schedule can promise that
everything has healed by a given time. The simulator applies faults
(``chaski_actors.sim.faults``); this module only describes them, so that the
scenario format and the schedule generator stay backend-neutral.

Scenario files list faults in a ``[[faults]]`` array::

    [[faults]]
    at_s = 5.0
    kind = "partition"            # hosts vs others (default: every other host)
    hosts = ["0"]
    one_way = false               # true: only traffic from hosts to others
    duration_s = 3.0              # optional: heal 3 s later

    [[faults]]
    at_s = 9.0
    kind = "crash"                # "restart" brings it back; or give duration_s
    host = "2"
    duration_s = 1.5

    [[faults]]
    at_s = 12.0
    kind = "degrade"              # no link: every link
    link = ["0", "1"]
    loss = 0.1
    latency_ms = 40.0
    jitter_ms = 5.0
    duration_s = 4.0

and a ``[chaos]`` table asks for a random schedule instead (or as well)::

    [chaos]
    kinds = ["partition", "one_way_partition", "link_down", "crash", "degrade"]
    count = 3                     # faults per run
    start_s = 2.0                 # faults start in [start_s, end_s]
    end_s = 12.0
    heal_by_s = 15.0              # and every one has healed by then
    min_duration_s = 0.5
    max_duration_s = 5.0

:func:`generate_schedule` draws the schedule from a random source that the
caller derives from the run's seed (the simulator uses
``derive_seed(seed, "chaos")``), so one seed always means one schedule,
whichever command runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._toml import TomlTable
from .errors import ConfigError
from .runtime import RandomSource

__all__ = [
    "CHAOS_KINDS",
    "FAULT_KINDS",
    "ChaosSpec",
    "Fault",
    "generate_schedule",
    "parse_chaos",
    "parse_faults",
]

FAULT_KINDS = (
    "link_down",
    "link_up",
    "partition",
    "heal",
    "crash",
    "restart",
    "degrade",
)
# What a random schedule may contain: each undoes itself, so all can heal.
CHAOS_KINDS = ("partition", "one_way_partition", "link_down", "crash", "degrade")


@dataclass(frozen=True, slots=True)
class Fault:
    """One change to the network at ``at_s`` seconds of simulated time.

    ``hosts`` is the crashing or restarting host, or one side of a partition;
    ``others`` the other side (None: every other host). ``link`` names the
    link of ``link_down``, ``link_up`` and ``degrade`` (None for ``degrade``:
    every link). ``heal`` lifts the partitions with the same sides, or every
    partition when it names no hosts.
    """

    at_s: float
    kind: str
    hosts: tuple[str, ...] = ()
    others: tuple[str, ...] | None = None
    link: tuple[str, str] | None = None
    one_way: bool = False
    duration_s: float | None = None
    loss: float | None = None
    latency_s: float | None = None
    jitter_s: float | None = None

    @property
    def heals_at(self) -> float | None:
        return None if self.duration_s is None else self.at_s + self.duration_s

    def __str__(self) -> str:
        return f"at {self.at_s:.3f} s: {self.what}"

    @property
    def what(self) -> str:
        """The fault without its time, e.g. ``crash 2 for 1.500 s``."""
        what = self.kind
        if self.link is not None:
            arrow = "->" if self.one_way else "-"
            what += f" {self.link[0]}{arrow}{self.link[1]}"
        elif self.kind == "degrade":
            what += " every link"
        if self.kind in ("partition", "heal") and self.hosts:
            others = "rest" if self.others is None else ",".join(self.others)
            what += f" {','.join(self.hosts)} {'->' if self.one_way else '|'} {others}"
        elif self.hosts:
            what += f" {','.join(self.hosts)}"
        for name, value, unit in (
            ("loss", self.loss, ""),
            ("latency", _ms(self.latency_s), " ms"),
            ("jitter", _ms(self.jitter_s), " ms"),
        ):
            if value is not None:
                what += f" {name}={value:.3g}{unit}"
        if self.duration_s is not None:
            what += f" for {self.duration_s:.3f} s"
        return what


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


@dataclass(frozen=True, slots=True)
class ChaosSpec:
    """How to draw a random fault schedule; see the module essay."""

    kinds: tuple[str, ...] = CHAOS_KINDS
    count: int = 3
    start_s: float = 1.0
    end_s: float = 10.0
    heal_by_s: float = 15.0
    min_duration_s: float = 0.5
    max_duration_s: float = 5.0
    # Worst loss probability and one-way latency a "degrade" fault draws.
    max_loss: float = 0.2
    max_latency_ms: float = 200.0


# -- reading scenario tables ---------------------------------------------------


class _Table(TomlTable):
    """A fault or chaos table, with the value types those tables use."""

    def number(
        self,
        key: str,
        default: float | None,
        *,
        below: float = 0.0,
        required: bool = False,
    ) -> Any:
        """A number >= 0 (and below ``below`` when that is positive)."""
        if key not in self.table:
            if required:
                raise ConfigError(f"{self.source}: {self.prefix}{key} is missing")
            return default
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, "a number")
        if value < 0 or (below > 0 and value >= below):
            raise self.error(key, f"a number in [0, {below})" if below else ">= 0")
        return float(value)

    def integer(self, key: str, default: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(key, "an integer >= 0")
        return value

    def flag(self, key: str) -> bool:
        value = self.table.get(key, False)
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def names(self, key: str, count: int | None = None) -> tuple[str, ...] | None:
        if key not in self.table:
            return None
        value = self.table[key]
        ok = isinstance(value, list) and all(isinstance(v, (str, int)) for v in value)
        if not ok or (count is not None and len(value) != count):
            size = f"{count} " if count is not None else ""
            raise self.error(key, f"a list of {size}host names")
        return tuple(str(v) for v in value)


_COMMON = ("at_s", "kind", "duration_s")
_KEYS = {
    "link_down": (*_COMMON, "link", "one_way"),
    "link_up": ("at_s", "kind", "link", "one_way"),
    "partition": (*_COMMON, "hosts", "others", "one_way"),
    "heal": ("at_s", "kind", "hosts", "others", "one_way"),
    "crash": (*_COMMON, "host"),
    "restart": ("at_s", "kind", "host"),
    "degrade": (*_COMMON, "link", "loss", "latency_ms", "jitter_ms"),
}


def parse_faults(raw: object, source: str) -> tuple[Fault, ...]:
    """The ``[[faults]]`` array of a scenario, checked, in time order."""
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: faults must be an array of tables")
    faults = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: faults[{i}] must be a table")
        faults.append(_parse_fault(_Table(source, entry, f"faults[{i}].")))
    # A stable sort: faults at the same time apply in the order written.
    return tuple(sorted(faults, key=lambda f: f.at_s))


def _parse_fault(t: _Table) -> Fault:
    kind = t.table.get("kind")
    if kind not in _KEYS:
        raise t.error("kind", f"one of {', '.join(FAULT_KINDS)}")
    t.check_keys(_KEYS[kind])
    at_s = t.number("at_s", None, required=True)
    duration = t.number("duration_s", None)
    if duration == 0:
        raise t.error("duration_s", "a positive number of seconds")
    one_way = t.flag("one_way")

    if kind in ("link_down", "link_up") or (kind == "degrade" and "link" in t.table):
        link = t.names("link", 2)
        if link is None:
            raise ConfigError(f"{t.source}: {t.prefix}link is missing")
        fault = Fault(at_s, kind, link=(link[0], link[1]), one_way=one_way)
    elif kind in ("partition", "heal"):
        hosts = t.names("hosts") or ()
        if kind == "partition" and not hosts:
            raise t.error("hosts", "a non-empty list of host names")
        fault = Fault(at_s, kind, hosts, t.names("others"), one_way=one_way)
    elif kind in ("crash", "restart"):
        host = t.table.get("host")
        if not isinstance(host, (str, int)) or isinstance(host, bool):
            raise t.error("host", "a host name")
        fault = Fault(at_s, kind, (str(host),))
    else:
        fault = Fault(at_s, kind)
    if kind == "degrade":
        fault = _degradation(t, fault)
    return _with(fault, duration_s=duration)


def _degradation(t: _Table, fault: Fault) -> Fault:
    loss = t.number("loss", None, below=1)
    latency = t.number("latency_ms", None)
    jitter = t.number("jitter_ms", None)
    if loss is None and latency is None and jitter is None:
        raise ConfigError(
            f"{t.source}: {t.prefix.rstrip('.')} changes nothing; "
            "give loss, latency_ms or jitter_ms"
        )
    return _with(
        fault,
        loss=loss,
        latency_s=None if latency is None else latency / 1e3,
        jitter_s=None if jitter is None else jitter / 1e3,
    )


def _with(fault: Fault, **changes: Any) -> Fault:
    fields = {name: getattr(fault, name) for name in Fault.__slots__}
    fields.update(changes)
    return Fault(**fields)


def parse_chaos(raw: object, source: str, duration_s: float) -> ChaosSpec:
    """The ``[chaos]`` table of a scenario that runs ``duration_s`` seconds."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: chaos must be a table")
    t = _Table(source, raw, "chaos.")
    t.check_keys(
        (
            "kinds",
            "count",
            "start_s",
            "end_s",
            "heal_by_s",
            "min_duration_s",
            "max_duration_s",
            "max_loss",
            "max_latency_ms",
        )
    )
    kinds = raw.get("kinds", list(CHAOS_KINDS))
    if (
        not isinstance(kinds, list)
        or not kinds
        or not all(k in CHAOS_KINDS for k in kinds)
    ):
        raise t.error("kinds", f"a non-empty list of {', '.join(CHAOS_KINDS)}")
    default = ChaosSpec()
    spec = ChaosSpec(
        kinds=tuple(dict.fromkeys(kinds)),
        count=t.integer("count", default.count),
        start_s=t.number("start_s", default.start_s),
        end_s=t.number("end_s", duration_s * 0.5),
        heal_by_s=t.number("heal_by_s", duration_s * 0.75),
        min_duration_s=t.number("min_duration_s", default.min_duration_s),
        max_duration_s=t.number("max_duration_s", default.max_duration_s),
        max_loss=t.number("max_loss", default.max_loss, below=1),
        max_latency_ms=t.number("max_latency_ms", default.max_latency_ms),
    )
    if not spec.start_s <= spec.end_s < spec.heal_by_s <= duration_s:
        raise ConfigError(
            f"{source}: chaos needs start_s <= end_s < heal_by_s <= "
            f"scenario.duration_s, got {spec.start_s} <= {spec.end_s} < "
            f"{spec.heal_by_s} <= {duration_s}"
        )
    if not 0 < spec.min_duration_s <= spec.max_duration_s:
        raise t.error("min_duration_s", "a positive number <= max_duration_s")
    return spec


# -- random schedules ----------------------------------------------------------


def generate_schedule(
    spec: ChaosSpec,
    hosts: Sequence[str],
    links: Sequence[tuple[str, str]],
    rng: RandomSource,
) -> tuple[Fault, ...]:
    """Draw ``spec.count`` faults that all heal by ``spec.heal_by_s``.

    ``hosts`` and ``links`` must come in a stable order (the topology's), and
    ``rng`` from the run's seed: then the schedule is a function of the seed.
    """
    kinds = [k for k in spec.kinds if k not in ("link_down", "degrade") or links]
    if len(hosts) < 2:
        kinds = [k for k in kinds if k == "crash"]
    faults = []
    for _ in range(spec.count if kinds else 0):
        kind = rng.choice(kinds)
        at_s = rng.uniform(spec.start_s, spec.end_s)
        duration = rng.uniform(spec.min_duration_s, spec.max_duration_s)
        duration = min(duration, spec.heal_by_s - at_s)
        faults.append(
            _draw(kind, at_s, duration, spec=spec, hosts=hosts, links=links, rng=rng)
        )
    return tuple(sorted(faults, key=lambda f: f.at_s))


def _draw(
    kind: str,
    at_s: float,
    duration_s: float,
    *,
    spec: ChaosSpec,
    hosts: Sequence[str],
    links: Sequence[tuple[str, str]],
    rng: RandomSource,
) -> Fault:
    if kind in ("partition", "one_way_partition"):
        # At most half the hosts on the cut-off side: the other side is "rest".
        side = rng.sample(hosts, rng.randint(1, len(hosts) // 2))
        ordered = tuple(h for h in hosts if h in side)
        one_way = kind == "one_way_partition"
        return Fault(at_s, "partition", ordered, one_way=one_way, duration_s=duration_s)
    if kind == "crash":
        return Fault(at_s, "crash", (rng.choice(hosts),), duration_s=duration_s)
    link = rng.choice(links)
    if kind == "link_down":
        return Fault(at_s, "link_down", link=link, duration_s=duration_s)
    latency = rng.uniform(0.0, spec.max_latency_ms) / 1e3
    return Fault(
        at_s,
        "degrade",
        link=link,
        loss=rng.uniform(0.0, spec.max_loss),
        latency_s=latency,
        jitter_s=latency / 10,
        duration_s=duration_s,
    )

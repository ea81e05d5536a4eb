"""Run every benchmark and write ``bench/results.json`` and ``bench/RESULTS.md``.

    python bench/run.py            # the full run, about 8 minutes on 2 cores
    python bench/run.py --quick    # a smoke test, under a minute
    python bench/run.py --only sim,memory

The peers come from the ``bench`` extra (``pip install -e '.[bench]'``),
among them the original Chaski (``chaski-confluent==0.1a5``), the baseline of
the project's performance targets. A peer that is not installed is listed
under "Not measured" instead of failing the run. Each figure is the median of
``rounds`` runs after a warm-up, with min and max; the ratios compare chaski
with peers measured in the same run, which is the only comparison that
survives moving to another machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable, for ``bench.*``.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import memory, pubsub, rpc, simulated
from bench._procs import WorkerError
from bench._stats import Figure, Results, render_markdown

GROUPS = ("pubsub", "rpc", "sim", "memory")
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Profile:
    """How big and how many: one per mode of the command."""

    name: str
    rounds: int
    pubsub_sizes: tuple[int, ...]
    pubsub_fanouts: tuple[int, ...]
    # Messages per round, by payload size and subscribers; sized so that a
    # round of the slowest subject takes a few seconds.
    pubsub_messages: dict[tuple[int, int], int]
    rpc_calls: int
    rpc_flight_calls: int
    sim_hosts: tuple[int, ...]
    sim_rate_hz: float
    # Deliveries aimed at per measured window; the window's simulated length
    # follows from it, so every size takes a similar wall-clock time.
    sim_deliveries: int
    heartbeat_hosts: int
    heartbeat_window_s: float
    memory_sim_hosts: int
    memory_links: int
    deadline_s: float


FULL = Profile(
    name="full",
    rounds=5,
    pubsub_sizes=(64, 4096),
    pubsub_fanouts=(1, 8),
    pubsub_messages={
        (64, 1): 50_000,
        (64, 8): 10_000,
        (4096, 1): 20_000,
        (4096, 8): 4_000,
    },
    rpc_calls=5_000,
    rpc_flight_calls=20_000,
    sim_hosts=(10, 100, 1_000, 10_000),
    sim_rate_hz=10.0,
    sim_deliveries=20_000,
    heartbeat_hosts=1_000,
    heartbeat_window_s=2.0,
    memory_sim_hosts=1_000,
    memory_links=200,
    deadline_s=300.0,
)

QUICK = Profile(
    name="quick",
    rounds=3,
    pubsub_sizes=(64, 4096),
    pubsub_fanouts=(1,),
    pubsub_messages={(64, 1): 20_000, (4096, 1): 5_000},
    rpc_calls=1_000,
    rpc_flight_calls=4_000,
    sim_hosts=(10, 1_000),
    sim_rate_hz=10.0,
    # Fewer and bare simpy's windows last a few milliseconds: too short to
    # time against a busy machine's noise.
    sim_deliveries=20_000,
    # A smoke test: the 1,000-host heartbeat alone would take half a minute.
    heartbeat_hosts=200,
    heartbeat_window_s=1.0,
    memory_sim_hosts=100,
    memory_links=20,
    deadline_s=60.0,
)

# For the test that keeps the harness from rotting: every code path, no timing.
TINY = Profile(
    name="tiny",
    rounds=1,
    pubsub_sizes=(64,),
    pubsub_fanouts=(1,),
    pubsub_messages={(64, 1): 50},
    rpc_calls=10,
    rpc_flight_calls=64,
    sim_hosts=(10,),
    sim_rate_hz=10.0,
    sim_deliveries=100,
    heartbeat_hosts=20,
    heartbeat_window_s=0.5,
    memory_sim_hosts=10,
    memory_links=2,
    deadline_s=60.0,
)

PROFILES = {p.name: p for p in (FULL, QUICK, TINY)}


def run(
    profile: Profile,
    groups: tuple[str, ...] = GROUPS,
    log: Callable[[str], None] = print,
) -> Results:
    """Measure ``groups`` at the sizes of ``profile``; never raises for a case."""
    results = Results(profile.name, _environment())
    plan = {
        "pubsub": _pubsub,
        "rpc": _rpc,
        "sim": _sim,
        "memory": _memory,
    }
    for group in groups:
        for label, measure in plan[group](profile, results):
            started = time.perf_counter()
            try:
                figures = measure()
            except WorkerError as exc:
                results.missing.append(f"{label}: {exc}")
                log(f"{label}: FAILED {exc}")
                continue
            results.add(figures)
            log(f"{label}: {_summary(figures)} ({time.perf_counter() - started:.1f} s)")
    _compare(results)
    return results


Plan = list[tuple[str, Callable[[], list[Figure]]]]


def _pubsub(profile: Profile, results: Results) -> Plan:
    plan: Plan = []
    for subject in ("chaski", "asyncio", "pyzmq", pubsub.ORIGINAL):
        why = pubsub.available(subject)
        if why is not None:
            results.missing.append(why)
            continue
        for size in profile.pubsub_sizes:
            for fanout in profile.pubsub_fanouts:
                case = pubsub.Case(
                    subject,
                    size,
                    fanout,
                    profile.pubsub_messages[size, fanout],
                    profile.rounds,
                    deadline_s=profile.deadline_s,
                )
                plan.append(
                    (f"pubsub {subject} {case.name}", _bind(pubsub.run_case, case))
                )
    return plan


def _rpc(profile: Profile, results: Results) -> Plan:
    plan: Plan = []
    for subject in ("chaski", "asyncio", "pyro5", rpc.ORIGINAL):
        why = rpc.available(subject)
        if why is not None:
            results.missing.append(why)
            continue
        case = rpc.Case(
            subject,
            profile.rpc_calls,
            profile.rpc_flight_calls,
            profile.rounds,
            deadline_s=profile.deadline_s,
        )
        plan.append((f"rpc {subject}", _bind(rpc.run_case, case)))
        if subject == rpc.ORIGINAL:
            results.missing.append(
                f"rpc {subject} {rpc.IN_FLIGHT} in flight: its proxy's calls are "
                "synchronous (each runs to completion on the caller's event "
                "loop), so they cannot overlap"
            )
    return plan


def _sim(profile: Profile, results: Results) -> Plan:
    plan: Plan = []
    for hosts in profile.sim_hosts:
        # A ring delivers two messages per host per publication.
        window = profile.sim_deliveries / (2 * hosts * profile.sim_rate_hz)
        for subject in ("chaski", "streams", "simpy"):
            case = simulated.RateCase(
                subject,
                hosts,
                profile.sim_rate_hz,
                window,
                profile.rounds,
                deadline_s=profile.deadline_s * 2,
            )
            plan.append((f"sim {subject} N={hosts}", _bind(simulated.run_rate, case)))
    heartbeat = simulated.HeartbeatCase(
        profile.heartbeat_hosts,
        profile.heartbeat_window_s,
        profile.rounds,
        deadline_s=profile.deadline_s * 2,
    )
    plan.append(
        (
            f"sim heartbeat N={heartbeat.hosts}",
            _bind(simulated.run_heartbeat, heartbeat),
        )
    )
    return plan


def _memory(profile: Profile, results: Results) -> Plan:
    return [
        (
            f"memory sim N={profile.memory_sim_hosts}",
            _bind(simulated.run_memory, profile.memory_sim_hosts, profile.deadline_s),
        ),
        (
            f"memory real {profile.memory_links} links",
            _bind(memory.run_link_memory, profile.memory_links, profile.deadline_s),
        ),
    ]


def _bind(
    function: Callable[..., list[Figure]], *args: object
) -> Callable[[], list[Figure]]:
    return lambda: function(*args)


def _compare(results: Results) -> None:
    """The ratios the project sets itself targets for, and informative ones."""
    for figure in results.figures:
        if figure.subject != "chaski":
            continue
        group, case, metric = figure.group, figure.case, figure.metric
        if group == "pubsub" and metric == "msg/s":
            results.compare(group, case, metric, "pyzmq", target=1.0)
            results.compare(group, case, metric, "asyncio", target=0.6)
            # The performance issue's target against the original Chaski.
            results.compare(group, case, metric, pubsub.ORIGINAL, target=10.0)
        elif group == "rpc" and metric == "p50":
            results.compare(group, case, metric, "asyncio", target=1.3, sense="at most")
            results.compare(group, case, metric, rpc.ORIGINAL, sense="at most")
        elif group == "rpc" and metric == "calls/s":
            results.compare(group, case, metric, "pyro5", target=2.0)
            results.compare(group, case, metric, "asyncio")
            results.compare(group, case, metric, rpc.ORIGINAL)
        elif group == "sim" and metric == "delivered msg/s":
            target = 0.5 if case == "N=1,000" else None
            results.compare(group, case, metric, "simpy", target=target)
            # What the simulator costs alone, and what the protocol adds.
            results.compare(group, case, metric, "simpy", ours="streams")
            results.compare(group, case, metric, "streams")


def _environment() -> dict[str, object]:
    import msgpack

    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "msgpack": ".".join(map(str, msgpack.version)),
    }


def _summary(figures: list[Figure]) -> str:
    return ", ".join(f"{f.case} {f.metric} {f.median:,.4g}" for f in figures)


def write(results: Results, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps(results.to_json(), indent=1) + "\n"
    )
    (out_dir / "RESULTS.md").write_text(render_markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test, under a minute"
    )
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups of {GROUPS}"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where to write results")
    args = parser.parse_args(argv)

    groups = tuple(g for g in args.only.split(",") if g)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {GROUPS}")
    started = time.perf_counter()
    results = run(QUICK if args.quick else FULL, groups)
    write(results, args.out)
    print(f"wrote {args.out / 'RESULTS.md'} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures for links: discovery, failure detection and resumption, in ``sim``.

Run ``python -m bench.bench_links`` (``--quick`` for small sizes); the
results go to ``bench/results_links.json`` and, as tables, to
``bench/RESULTS_links.md``. Everything runs on the simulated
backend, so the times are simulated seconds, exact and repeatable from the
seed; the wall-clock time each run took is reported beside it.

Discovery convergence. N hosts on a random tree (each host links to a
random earlier one, 5 ms per edge), which is also the overlay: each node
dials its parent at time 0. Each node subscribes to one of N / 10 topics,
so a topic has about ten members wherever N is. Keep-alives are slowed to
one per 5 s, as they are most of the simulated traffic and play no part in
discovery (the announcement rate limit is still one per second).
Convergence is the first time every pair of nodes that share a topic is
linked directly (sampled every 0.1 s). Every discovery setting is the
default unless the row says otherwise. ``frames`` counts every frame sent
(hellos, keep-alives and acknowledgements too); ``announce_frames``,
``route_frames`` and ``seek_frames`` count discovery's own.

Idle cost. The heartbeat network of ``bench/simulated.py`` (a random
4-regular graph, each node publishing to its neighbours once a second on a
topic only that neighbour subscribes to, so each node has a topic of its
own) runs for 30 simulated seconds; the row gives the deliveries and the
discovery frames sent meanwhile. This is where periodic announcements used
to cost more frames than the messages themselves.

Detection and resumption. Two hosts, 10 ms apart with 2 ms of jitter. The
link idles (heartbeats only) for a few seconds, then is cut at a random
phase of the keep-alive cycle; a message is published into the cut. The
detection time runs from the cut to the dialling side declaring the peer
dead; the resume time from the healing of the cut to the message's
arrival. Short partitions heal half a second after detection; long ones
after 30 s, when the reconnection backoff has grown.

Phi accrual against a fixed timeout. Heartbeat arrivals are recorded on a
jittery, lossy simulated link; each detector is given the smallest
setting that raises no false suspicion over the whole trace, and the
silence after which each would then declare the peer dead is compared.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx

from chaski_actors import Node, Settings
from chaski_actors.discovery import ROUTES, SEEK
from chaski_actors.failure import PhiAccrualDetector
from chaski_actors.link import Link
from chaski_actors.protocol import ANNOUNCE
from chaski_actors.sim.harness import run_sim
from chaski_actors.testing import eventually

__all__ = [
    "render_markdown",
    "run_convergence",
    "run_detection",
    "run_idle_cost",
    "run_phi_against_timeout",
]

RESULTS = Path(__file__).with_name("results_links.json")
TABLES = Path(__file__).with_name("RESULTS_links.md")


# -- discovery convergence ----------------------------------------------------


@contextlib.contextmanager
def _counting_kinds() -> Iterator[Counter[int]]:
    """Count the unnumbered frames sent, by kind (discovery's are unnumbered)."""
    kinds: Counter[int] = Counter()
    original = Link.send_frame

    async def counting(link: Link, kind: int, *fields: Any) -> None:
        kinds[kind] += 1
        await original(link, kind, *fields)

    Link.send_frame = counting  # type: ignore[method-assign]
    try:
        yield kinds
    finally:
        Link.send_frame = original  # type: ignore[method-assign]


def _discovery_frames(kinds: Counter[int]) -> dict[str, int]:
    return {
        "announce_frames": kinds[ANNOUNCE],
        "route_frames": kinds[ROUTES],
        "seek_frames": kinds[SEEK],
    }


def _tree(n: int, seed: int) -> tuple[nx.Graph[str], list[tuple[str, str]]]:
    rng = random.Random(seed)
    names = [f"n{i:04d}" for i in range(n)]
    graph: nx.Graph[str] = nx.Graph()
    graph.add_node(names[0])
    dials = []
    for i in range(1, n):
        parent = names[rng.randrange(i)]
        graph.add_edge(names[i], parent, latency=0.005)
        dials.append((names[i], parent))
    return graph, dials


def run_convergence(
    n: int, seed: int = 1, horizon: float = 120.0, ttl: int | None = None
) -> dict[str, Any]:
    graph, dials = _tree(n, seed)
    topics = max(1, n // 10)
    # Heartbeats are most of the simulated traffic of an idle network, and
    # have nothing to do with discovery: slower ones let N = 1000 finish.
    settings = Settings(keepalive_interval_s=5.0, dead_after_s=15.0)
    if ttl is not None:
        settings = settings.replace(discovery_ttl=ttl)
    rng = random.Random(seed + 1)
    subscriptions = {name: f"t{rng.randrange(topics)}" for name in sorted(graph)}
    members: dict[str, list[str]] = {}
    for name, topic in subscriptions.items():
        members.setdefault(topic, []).append(name)
    pairs = [
        (x, y)
        for group in members.values()
        for i, x in enumerate(group)
        for y in group[i + 1 :]
    ]

    async def main(net: Any) -> dict[str, Any]:
        nodes = {h: Node(net.runtime(h), h, settings=settings) for h in sorted(graph)}
        for name, node in nodes.items():
            await node.start()
            await node.subscribe(subscriptions[name])
        for name, parent in dials:
            net.runtime(name).spawn(
                nodes[name].connect(*nodes[parent].address), name="join"
            )
        missing = list(pairs)
        progress: dict[str, float] = {}

        def converged() -> bool:
            nonlocal missing
            missing = [(x, y) for x, y in missing if y not in nodes[x].links]
            done = 1 - len(missing) / max(1, len(pairs))
            for mark in ("0.5", "0.9", "0.99"):
                if done >= float(mark) and mark not in progress:
                    progress[mark] = net.now()
            return not missing

        try:
            await eventually(
                net.runtime("n0000"), converged, timeout=horizon, interval=0.1
            )
            took: float | None = round(net.now(), 3)
        except TimeoutError:
            took = None  # not converged within the horizon: see "unconverged"
        frames = sum(
            link.frames_out for node in nodes.values() for link in node.links.values()
        )
        announcements = sum(node.discovery.announced for node in nodes.values())
        links = sum(len(node.links) for node in nodes.values()) // 2
        return {
            "converged_s": took,
            "horizon_s": horizon,
            "unconverged": len(missing),
            "half_s": progress.get("0.5"),
            "p90_s": progress.get("0.9"),
            "p99_s": progress.get("0.99"),
            "pairs": len(pairs),
            "links": links,
            "announcements": announcements,
            "frames": frames,
        }

    start = time.perf_counter()
    with _counting_kinds() as kinds:
        result: dict[str, Any] = run_sim(main, graph, seed=seed)
    result.update(_discovery_frames(kinds))
    result.update(
        n=n,
        topics=topics,
        ttl=settings.discovery_ttl,
        wall_s=round(time.perf_counter() - start, 2),
    )
    return result


def run_idle_cost(hosts: int = 200, seconds: float = 30.0) -> dict[str, Any]:
    from bench.simulated import _regular, build_chaski

    start = time.perf_counter()
    with _counting_kinds() as kinds:
        network, counting = build_chaski(_regular(hosts), 1.0)
        network.run(until=network.now() + seconds)
    return {
        "hosts": hosts,
        "simulated_s": seconds,
        "delivered": counting.delivered,
        **_discovery_frames(kinds),
        "wall_s": round(time.perf_counter() - start, 2),
    }


# -- detection and resumption ---------------------------------------------------


def _two_hosts(jitter: float = 0.002, loss: float = 0.0) -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.010, jitter=jitter, loss=loss)
    return graph


def run_detection(
    keepalive: float, ratio: float, partition: str, seed: int
) -> dict[str, Any]:
    settings = Settings(keepalive_interval_s=keepalive, dead_after_s=keepalive * ratio)

    async def main(net: Any) -> tuple[float, float]:
        a = Node(net.runtime("a"), "a", settings=settings)
        b = Node(net.runtime("b"), "b", settings=settings)
        await a.start()
        await b.start()
        await b.subscribe("t")
        await a.connect(*b.address)
        phase = random.Random(seed).uniform(0, keepalive)
        await a.runtime.sleep(3 * keepalive + phase)
        cut = net.now()
        net.set_link("a", "b", up=False)
        await a.publish("t", "across the cut")
        await eventually(
            a.runtime,
            lambda: a.statistics().peers_declared_dead > 0,
            timeout=600,
            interval=0.0005,
        )
        detected = net.now() - cut
        await a.runtime.sleep(0.5 if partition == "short" else 30.0)
        net.set_link("a", "b", up=True)
        healed = net.now()
        await b.receive()
        return detected, net.now() - healed

    detected, resumed = run_sim(main, _two_hosts(), seed=seed)
    return {
        "keepalive_interval_s": keepalive,
        "dead_after_s": keepalive * ratio,
        "partition": partition,
        "seed": seed,
        "detected_s": round(detected, 4),
        "resumed_s": round(resumed, 4),
    }


# -- phi accrual against a fixed timeout ----------------------------------------


def _arrivals(seconds: float, keepalive: float, seed: int) -> list[float]:
    """When bytes from b reached a on an idle, jittery, lossy link."""
    settings = Settings(keepalive_interval_s=keepalive, dead_after_s=1000.0)

    async def main(net: Any) -> list[float]:
        a = Node(net.runtime("a"), "a", settings=settings)
        b = Node(net.runtime("b"), "b", settings=settings)
        await a.start()
        await b.start()
        await a.connect(*b.address)
        link = a.links["b"]
        times: list[float] = []
        original = Link.count_in

        # Link has slots, so the hook goes on the class, for this run only,
        # and times what a's link to b reads (b's link to a reads too).
        def counting(counted: Link, data: bytes, frames: int) -> None:
            if counted is link:
                times.append(net.now())
            original(counted, data, frames)

        Link.count_in = counting  # type: ignore[method-assign]
        try:
            await a.runtime.sleep(seconds)
        finally:
            Link.count_in = original  # type: ignore[method-assign]
        return times

    arrivals: list[float] = run_sim(main, _two_hosts(jitter=0.03, loss=0.02), seed=seed)
    return arrivals


def run_phi_against_timeout(
    seconds: float = 600.0, keepalive: float = 0.1
) -> dict[str, Any]:
    arrivals = _arrivals(seconds, keepalive, seed=3)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]

    # The timeout that never fired falsely: just over the longest gap.
    timeout = max(gaps) * 1.0001

    # The phi threshold that never fired falsely: just over the highest
    # phi any arrival found (each judged by the model before it).
    detector = PhiAccrualDetector(threshold=0.0)
    worst = 0.0
    for index, now in enumerate(arrivals):
        if index > 10:
            worst = max(worst, detector.phi(now))
        detector.heartbeat(now)
    detector.threshold = worst * 1.0001
    last = arrivals[-1]
    suspect = detector.suspect_at()
    phi_silence = math.inf if suspect is None else suspect - last
    return {
        "trace_s": seconds,
        "keepalive_interval_s": keepalive,
        "link": {"latency_s": 0.010, "jitter_s": 0.03, "loss": 0.02},
        "arrivals": len(arrivals),
        "mean_gap_s": round(sum(gaps) / len(gaps), 4),
        "max_gap_s": round(max(gaps), 4),
        "timeout_without_false_positive_s": round(timeout, 4),
        "phi_threshold_without_false_positive": round(detector.threshold, 3),
        "phi_detection_silence_s": round(phi_silence, 4),
        "faster": "phi" if phi_silence < timeout else "timeout",
    }


# -- the tables the docs show ----------------------------------------------------


def _seconds(value: float | None) -> str:
    return "not within the horizon" if value is None else f"{value:.2f}"


def render_markdown(results: dict[str, Any]) -> str:
    """The figures of ``results_links.json`` as the tables of RESULTS_links.md."""
    out = [
        "# Link figures",
        "",
        "Made by `python -m bench.bench_links` on the simulated backend: times",
        "are simulated seconds, exact for the seed; how each figure is measured",
        "is written at the top of `bench/bench_links.py`.",
    ]
    if results.get("convergence"):
        out += [
            "",
            "## Discovery convergence against N",
            "",
            "Each node subscribes to one of N / 10 topics and joins through its",
            "parent on a random tree; converged means every pair that shares a",
            "topic is linked directly. Default discovery settings.",
            "",
            "| N | pairs | 50 % (s) | 90 % (s) | 99 % (s) | all (s) "
            "| discovery frames | all frames | wall (s) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["convergence"]:
            discovery = sum(
                row[key] for key in ("announce_frames", "route_frames", "seek_frames")
            )
            out.append(
                f"| {row['n']:,} | {row['pairs']:,} | {_seconds(row['half_s'])} "
                f"| {_seconds(row['p90_s'])} | {_seconds(row['p99_s'])} "
                f"| {_seconds(row['converged_s'])} | {discovery:,} "
                f"| {row['frames']:,} | {row['wall_s']:.1f} |"
            )
    if results.get("detection"):
        out += [
            "",
            "## Detecting a dead peer and resuming after the partition heals",
            "",
            "Median over the seeds, with min and max. A short partition heals",
            "0.5 s after detection, a long one 30 s after, when the",
            "reconnection backoff has grown.",
            "",
            "| keep-alive (s) | dead after (s) | partition | detected (s) "
            "| resumed (s) |",
            "|---:|---:|---|---|---|",
        ]
        groups: dict[tuple[float, float, str], list[dict[str, Any]]] = {}
        for row in results["detection"]:
            key = (
                row["keepalive_interval_s"],
                round(row["dead_after_s"], 6),
                row["partition"],
            )
            groups.setdefault(key, []).append(row)
        for (keepalive, dead_after, partition), rows in groups.items():
            cells = []
            for field in ("detected_s", "resumed_s"):
                values = sorted(r[field] for r in rows)
                median = values[len(values) // 2]
                cells.append(f"{median:.3f} ({values[0]:.3f} to {values[-1]:.3f})")
            out.append(
                f"| {keepalive:g} | {dead_after:g} | {partition} "
                f"| {cells[0]} | {cells[1]} |"
            )
    phi = results.get("phi_against_timeout")
    if phi:
        out += [
            "",
            "## Phi accrual against a fixed timeout",
            "",
            f"A {phi['trace_s']:g} s trace of heartbeats every "
            f"{phi['keepalive_interval_s']:g} s over a link with "
            f"{phi['link']['jitter_s'] * 1000:g} ms of jitter and "
            f"{phi['link']['loss'] * 100:g} % loss. Each detector gets the "
            "smallest setting that raises no false suspicion over the trace.",
            "",
            "| detector | setting | silence before declaring dead (s) |",
            "|---|---:|---:|",
            f"| fixed timeout | {phi['timeout_without_false_positive_s']:g} s "
            f"| {phi['timeout_without_false_positive_s']:.3f} |",
            f"| phi accrual | threshold "
            f"{phi['phi_threshold_without_false_positive']:g} "
            f"| {phi['phi_detection_silence_s']:.3f} |",
        ]
    idle = results.get("idle_cost")
    if idle:
        out += [
            "",
            "## What discovery costs an idle network",
            "",
            f"{idle['hosts']} nodes on a random 4-regular graph, "
            f"{idle['simulated_s']:g} simulated seconds: "
            f"{idle['delivered']:,} messages delivered, "
            f"{idle['announce_frames']:,} announcement, "
            f"{idle['route_frames']:,} route and {idle['seek_frames']:,} seek "
            "frames sent.",
        ]
    return "\n".join(out) + "\n"


def _save(results: dict[str, Any]) -> None:
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    TABLES.write_text(render_markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument(
        "--only",
        choices=("convergence", "idle", "detection"),
        help="run one part, keeping the others' figures from the results file",
    )
    args = parser.parse_args()
    sizes = (10, 100) if args.quick else (10, 100, 1000)
    results: dict[str, Any] = (
        json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    )
    if args.only in (None, "idle"):
        results["idle_cost"] = run_idle_cost()
        print(results["idle_cost"], flush=True)
        _save(results)
    if args.only in (None, "convergence"):
        results["convergence"] = []
        # Largest last, saving after each size: N = 1000 takes a while.
        for n in sizes:
            results["convergence"].append(run_convergence(n))
            print(results["convergence"][-1], flush=True)
            _save(results)
    if args.only not in (None, "detection"):
        return
    results["detection"] = []
    for keepalive in (0.1, 0.25, 0.5, 1.0):
        for ratio in (3.0, 5.0):
            for partition in ("short", "long"):
                for seed in range(3):
                    row = run_detection(keepalive, ratio, partition, seed)
                    results["detection"].append(row)
                    print(row, flush=True)
    results["phi_against_timeout"] = run_phi_against_timeout(
        seconds=120.0 if args.quick else 600.0
    )
    print(results["phi_against_timeout"], flush=True)
    _save(results)


if __name__ == "__main__":
    main()

"""Seed sweeps: one scenario under many seeds, in parallel processes.

One seed is one possible run; the spread across seeds says how much of a
figure is the topology and how much is luck (which packets were lost, which
jitter was drawn). Each seed runs in its own process, because a simulation
is pure Python and holds the interpreter lock the whole time.

What a seed changes: the network's draws (latency, jitter, loss), the
applications' (publishers' phases) and a ``[chaos]`` schedule. The topology
of a seeded generator stays the one drawn from the scenario's own seed, so
that a sweep compares runs over one map rather than over many maps.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from chaski_actors.scenario import Scenario

from .scenario import sim_report, simulate

__all__ = ["print_sweep", "run_seed", "sweep"]


def run_seed(scenario: Scenario, seed: int) -> dict[str, Any]:
    """One seed's report, less the parts a sweep does not summarise."""
    report = sim_report(scenario, simulate(scenario, seed=seed))
    for bulky in ("timeline", "links", "positions"):
        del report[bulky]
    return report


def sweep(
    scenario: Scenario, seeds: Sequence[int], *, workers: int | None = None
) -> list[dict[str, Any]]:
    """Reports for every seed, in the order of ``seeds``."""
    workers = workers or min(len(seeds), os.cpu_count() or 1)
    if workers <= 1:
        return [run_seed(scenario, seed) for seed in seeds]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_seed, [scenario] * len(seeds), seeds))


def _spread(values: Sequence[float]) -> str:
    if not values:
        return f"{'-':>26}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{low:>8.2f}{mid:>9.2f}{high:>9.2f}"


def spread_rows(results: Sequence[dict[str, Any]]) -> list[tuple[str, list[float]]]:
    """(label, one value per seed) for every figure a sweep summarises."""
    rows: list[tuple[str, list[float]]] = []
    topics = sorted({t for r in results for t in r["topics"]})
    for topic in topics:
        data = [r["topics"][topic] for r in results if topic in r["topics"]]
        rows.append((f"{topic} delivered", [float(d["delivered"]) for d in data]))
        rows.append((f"{topic} lost", [float(d["lost"]) for d in data]))
        for key in ("p50_ms", "p99_ms", "max_ms"):
            values = [d["latency_ms"][key] for d in data if d["latency_ms"]]
            rows.append((f"{topic} {key}", values))
    converged = [r["convergence"]["initial_s"] for r in results]
    rows.append(("converged after s", [c for c in converged if c is not None]))
    rows.append(
        ("reconnections", [float(r["convergence"]["reconnections"]) for r in results])
    )
    return rows


def print_sweep(
    scenario: Scenario,
    results: Sequence[dict[str, Any]],
    out: TextIO,
    *,
    out_dir: str | None = None,
) -> None:
    seeds = [r["seed"] for r in results]
    print(
        f"scenario {scenario.name}: {len(seeds)} seeds, {seeds[0]}..{seeds[-1]}",
        file=out,
    )
    print(file=out)
    print(f"{'figure':<28}{'min':>8}{'median':>9}{'max':>9}", file=out)
    print("-" * 54, file=out)
    for label, values in spread_rows(results):
        print(f"{label:<28}{_spread(values)}", file=out)
    digests = {r["backend_stats"]["trace_digest"] for r in results}
    print(file=out)
    print(f"{len(digests)} distinct traces over {len(seeds)} seeds", file=out)
    if out_dir is not None:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "sweep.json").write_text(json.dumps(list(results), indent=1) + "\n")
        print(f"wrote {path / 'sweep.json'}", file=out)

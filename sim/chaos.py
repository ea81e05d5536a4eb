"""The chaos checker's runs: one simulation per seed, in parallel processes.

Each seed is simulated and checked on its own (``chaski_actors.chaos``
explains the checks), so seeds spread over processes as a simulation is pure
Python and holds the interpreter lock the whole time. Results come back in
seed order and do not depend on the number of processes: a seed's run is a
function of the scenario and the seed alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from chaski_actors.chaos import Verdict, check_delivery
from chaski_actors.faults import Fault
from chaski_actors.scenario import Scenario

from .scenario import simulate

__all__ = ["check_seed", "check_seeds"]

# Seeds a worker takes at a time: enough to keep the pipe between processes
# quiet, few enough that results reach the terminal steadily. Arbitrary.
_CHUNK = 4


def check_seed(scenario: Scenario, seed: int) -> tuple[Verdict, tuple[Fault, ...]]:
    """Simulate ``seed`` and check its records; also return its faults."""
    report = simulate(scenario, seed=seed)
    return check_delivery(report.recorder), report.faults


def check_seeds(
    scenario: Scenario, seeds: Sequence[int], *, workers: int | None = None
) -> Iterator[tuple[int, Verdict, tuple[Fault, ...]]]:
    """``(seed, verdict, faults)`` for every seed, in the order of ``seeds``."""
    workers = workers or min(len(seeds), os.cpu_count() or 1)
    if workers <= 1:
        for seed in seeds:
            yield (seed, *check_seed(scenario, seed))
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check_seed, [scenario] * len(seeds), seeds, chunksize=_CHUNK)
        for seed, (verdict, faults) in zip(seeds, results, strict=True):
            yield seed, verdict, faults

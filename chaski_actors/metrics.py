"""Latency samples and their summaries, the same code on both backends.

A simulated report and a real one are comparable only if both are reduced in
the same way, so percentiles are computed here, once, and not by each
backend or each report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["LatencySummary", "percentile", "summarize"]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted values, by linear interpolation."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    weight = position - low
    return sorted_values[low] * (1 - weight) + sorted_values[high] * weight


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of a set of delays, in seconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    def as_ms(self) -> dict[str, float | int]:
        """The same figures in milliseconds, for reports."""
        return {
            "count": self.count,
            "mean_ms": self.mean * 1e3,
            "p50_ms": self.p50 * 1e3,
            "p90_ms": self.p90 * 1e3,
            "p99_ms": self.p99 * 1e3,
            "max_ms": self.max * 1e3,
        }


def summarize(samples: Iterable[float]) -> LatencySummary | None:
    """Summarise delays in seconds; None when there are none."""
    values = sorted(samples)
    if not values:
        return None
    return LatencySummary(
        count=len(values),
        mean=math.fsum(values) / len(values),
        p50=percentile(values, 0.5),
        p90=percentile(values, 0.9),
        p99=percentile(values, 0.99),
        max=values[-1],
    )

"""Latency samples and their summaries, the same code on both backends.

A simulated report and a real one are comparable only if both are reduced in
the same way, so percentiles are computed here, once, and not by each
backend or each report.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["LatencySummary", "RttEstimator", "percentile", "summarize"]


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


class RttEstimator:
    """Round-trip samples to one peer, and their smoothed estimate.

    The estimate follows RFC 6298, section 2 (TCP's retransmission timer):
    the first sample sets ``srtt = r`` and ``rttvar = r / 2``; later ones
    move them by gains of 1/8 and 1/4, which forgets a spike within a few
    samples while staying steady under jitter. ``rto`` is the RFC's
    ``srtt + 4 * rttvar``, without its one-second floor, which exists for
    TCP's coarse clocks. The last ``keep`` samples are kept for percentiles;
    older ones are forgotten (bounded memory on a link that lives for days).
    """

    __slots__ = ("_samples", "count", "rttvar", "srtt")

    ALPHA = 1 / 8
    BETA = 1 / 4

    def __init__(self, keep: int = 1024) -> None:
        self._samples: deque[float] = deque(maxlen=keep)
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.count = 0

    def __repr__(self) -> str:
        srtt = "-" if self.srtt is None else f"{self.srtt * 1e3:.3f}ms"
        return f"<RttEstimator samples={self.count} srtt={srtt}>"

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> float:
        return self._samples[index]

    def append(self, rtt: float) -> None:
        """Add one sample, in seconds (named like ``list.append`` on purpose:
        links once kept a plain list of samples)."""
        if self.srtt is None or self.rttvar is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(
                self.srtt - rtt
            )
            self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * rtt
        self._samples.append(rtt)
        self.count += 1

    @property
    def rto(self) -> float | None:
        if self.srtt is None or self.rttvar is None:
            return None
        return self.srtt + 4 * self.rttvar

    @property
    def last(self) -> float | None:
        return self._samples[-1] if self._samples else None

    def summary(self) -> LatencySummary | None:
        """Percentiles of the samples kept."""
        return summarize(self._samples)

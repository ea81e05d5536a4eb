"""Failure detectors over heartbeat arrivals, without I/O or a clock of their own.

A node declares a peer dead when it has heard nothing for a while. The
question is how long "a while" is. Two answers are modelled here, fed the
same arrival times, so that they can be compared on equal terms:

* :class:`TimeoutDetector` suspects the peer once ``timeout`` seconds have
  passed since the last arrival. It is what the node uses
  (``Settings.dead_after_s``): simple, and its worst case is plain.
* :class:`PhiAccrualDetector` (Hayashibara et al., 2004) keeps the mean and
  spread of recent inter-arrival gaps and turns the current silence into a
  suspicion level ``phi = -log10(P(a gap this long or longer))`` under a
  normal model of the gaps. It suspects the peer when ``phi`` passes a
  threshold, so it adapts: on a steady link a short silence is already
  suspicious, on a jittery one it is not.

``bench/bench_links.py`` feeds both the arrivals recorded on a simulated
link and compares how soon each detects a cut for the same count of false
suspicions; the figures are in the benchmark's results.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["PhiAccrualDetector", "TimeoutDetector"]

# Below this spread the normal model degenerates (a perfectly regular link
# would make any late arrival infinitely suspicious); 1 ms is arbitrary but
# well under any keep-alive interval.
_MIN_STD_S = 0.001

# Largest phi reported: 1 - CDF underflows to 0 for silences far in the tail.
_MAX_PHI = 300.0


class TimeoutDetector:
    """Suspect after ``timeout`` seconds of silence."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.last: float | None = None

    def __repr__(self) -> str:
        return f"<TimeoutDetector timeout={self.timeout}>"

    def heartbeat(self, now: float) -> None:
        self.last = now

    def suspect_at(self) -> float | None:
        """When the current silence becomes a suspicion."""
        return None if self.last is None else self.last + self.timeout


class PhiAccrualDetector:
    """Suspect when phi passes ``threshold``; see the module essay."""

    def __init__(self, threshold: float, window: int = 100) -> None:
        self.threshold = threshold
        self.last: float | None = None
        self._gaps: deque[float] = deque(maxlen=window)

    def __repr__(self) -> str:
        return f"<PhiAccrualDetector threshold={self.threshold} gaps={len(self._gaps)}>"

    def heartbeat(self, now: float) -> None:
        if self.last is not None:
            self._gaps.append(now - self.last)
        self.last = now

    def _model(self) -> tuple[float, float]:
        count = len(self._gaps)
        mean = math.fsum(self._gaps) / count
        variance = math.fsum((g - mean) ** 2 for g in self._gaps) / count
        return mean, max(math.sqrt(variance), _MIN_STD_S)

    def phi(self, now: float) -> float:
        """The suspicion level after silence until ``now``."""
        if self.last is None or not self._gaps:
            return 0.0
        mean, std = self._model()
        tail = 0.5 * math.erfc((now - self.last - mean) / (std * math.sqrt(2)))
        return _MAX_PHI if tail <= 0.0 else min(_MAX_PHI, -math.log10(tail))

    def suspect_at(self) -> float | None:
        """When phi reaches the threshold if nothing more arrives."""
        if self.last is None or not self._gaps:
            return None
        mean, std = self._model()
        # Invert phi: the silence s with P(gap >= s) = 10 ** -threshold.
        tail = 10.0 ** -min(self.threshold, _MAX_PHI)
        return self.last + mean + std * math.sqrt(2) * _erfc_inverse(2 * tail)


def _erfc_inverse(y: float) -> float:
    """The x with erfc(x) = y, for 0 < y < 2, by bisection (no scipy here)."""
    low, high = -10.0, 30.0
    for _ in range(200):
        middle = (low + high) / 2
        if math.erfc(middle) > y:
            low = middle
        else:
            high = middle
    return (low + high) / 2

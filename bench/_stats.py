"""Figures, their spread, and the Markdown table that shows them.

A :class:`Figure` is one measured quantity (say, pub/sub messages per second
for chaski at 64 B to one subscriber) with every sample that went into it.
Only the median is compared; min and max show how noisy the machine was.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Figure:
    """One benchmark figure: what, for whom, in what unit, and its samples."""

    group: str
    case: str
    subject: str
    metric: str
    unit: str
    samples: tuple[float, ...]
    # True when a bigger number is better (rates), False for times and sizes.
    higher_is_better: bool = True
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def low(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def high(self) -> float:
        return max(self.samples) if self.samples else float("nan")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples"] = list(self.samples)
        data.update(median=self.median, min=self.low, max=self.high)
        return data


@dataclass(frozen=True, slots=True)
class Ratio:
    """chaski's median over a peer's, for one case and metric.

    ``subject`` is whose median is on top: chaski, or for the simulator's
    breakdown its bare streams.
    """

    group: str
    case: str
    metric: str
    peer: str
    value: float
    target: float | None = None
    # "at least" for rates, "at most" for latencies.
    sense: str = "at least"
    subject: str = "chaski"

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.sense == "at least":
            return self.value >= self.target
        return self.value <= self.target


@dataclass
class Results:
    """Everything one run measured, plus the settings it ran with."""

    profile: str
    environment: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def add(self, figures: Iterable[Figure]) -> None:
        self.figures.extend(figures)

    def find(self, group: str, case: str, subject: str, metric: str) -> Figure | None:
        for figure in self.figures:
            if (figure.group, figure.case, figure.subject, figure.metric) == (
                group,
                case,
                subject,
                metric,
            ):
                return figure
        return None

    def compare(
        self,
        group: str,
        case: str,
        metric: str,
        peer: str,
        *,
        target: float | None = None,
        sense: str = "at least",
        ours: str = "chaski",
    ) -> None:
        """Record ``ours``' median over ``peer``'s, if both were measured."""
        mine = self.find(group, case, ours, metric)
        theirs = self.find(group, case, peer, metric)
        if mine is None or theirs is None or not theirs.median:
            return
        value = mine.median / theirs.median
        self.ratios.append(
            Ratio(group, case, metric, peer, value, target, sense, subject=ours)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "environment": self.environment,
            "figures": [f.to_json() for f in self.figures],
            "ratios": [{**asdict(r), "met": r.met} for r in self.ratios],
            "missing": self.missing,
        }


def render_markdown(results: Results) -> str:
    """The results as Markdown: one table of figures, one of ratios."""
    env = results.environment
    lines = [
        "# Benchmark results",
        "",
        f"Profile `{results.profile}`, {env.get('when', '')}, Python "
        f"{env.get('python', '?')}, {env.get('cpus', '?')} CPUs. "
        "Each figure is the median of the runs after a warm-up, with min and "
        "max; compare ratios, not absolute numbers, across machines.",
        "",
        "| group | case | subject | metric | median | min | max | unit |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for f in results.figures:
        lines.append(
            f"| {f.group} | {f.case} | {f.subject} | {f.metric} | "
            f"{_number(f.median)} | {_number(f.low)} | {_number(f.high)} | "
            f"{f.unit} |"
        )
    if results.ratios:
        lines += [
            "",
            "## chaski against its peers (same run)",
            "",
            "| group | case | metric | peer | chaski / peer | target | met |",
            "|---|---|---|---|---:|---|---|",
        ]
        for r in results.ratios:
            target = "" if r.target is None else f"{r.sense} {r.target:g}x"
            met = "" if r.met is None else ("yes" if r.met else "**no**")
            # A ratio of another subject than chaski names it in the peer column.
            peer = r.peer if r.subject == "chaski" else f"{r.peer} ({r.subject} / peer)"
            lines.append(
                f"| {r.group} | {r.case} | {r.metric} | {peer} | "
                f"{r.value:.2f}x | {target} | {met} |"
            )
    if results.missing:
        lines += ["", "## Not measured", ""]
        lines += [f"- {reason}" for reason in results.missing]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if math.isnan(value):  # nothing was measured
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]

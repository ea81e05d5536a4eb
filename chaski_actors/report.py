"""Run reports: what a scenario run saw, as JSON, and as a summary to read.

Both backends reduce their :class:`~chaski_actors.scenario.Recorder` through
:func:`build_report`, so a simulated report and a real one have the same
shape and the same percentiles, and can be compared figure by figure.

A report is a JSON object (``report.json``)::

    schema        "chaski-actors/report/1"
    scenario      {name, description, duration_s, drain_s}
    backend       "sim" or "real"
    seed          the seed of the run
    hosts, edges  the size of the topology
    run           {clock_s: seconds on the run's clock, wall_s}
    convergence   {initial_s: seconds until every edge was first linked,
                   after_faults_s: seconds from the end of the last fault
                   window until every edge was linked again (0 when no link
                   broke, null when there was no fault or it never healed),
                   reconnections, connect_failures}
    topics        {topic: {sent, delivered, lost, latency_ms, cdf_ms}}
    links         [{source, target, edge, sent, delivered, lost, reconnections,
                    configured_latency_ms, latency_ms}], one per direction of
                  every topology edge (edge true), then the pairs that
                  discovery linked across the graph (edge false); reconnections
                  are those of the edge's link, made by its dialling node
    faults        [{start_s, end_s, what}]
    timeline      {topic: {bin_s, t_s, p50_ms, p99_ms, count}}
    positions     {host: [x, y]} where the topology has them
    backend_stats backend-specific counters (segments, trace digest, ...)

``latency_ms`` is ``{count, mean_ms, p50_ms, p90_ms, p99_ms, max_ms}`` or
null when nothing arrived. ``cdf_ms`` holds the 0th to 100th percentiles,
101 values, so that a comparison can draw the distribution without the raw
samples. ``lost`` is sent minus delivered: a message still in flight when
the run ended counts as lost, which the scenario's ``drain_s`` is for.
:func:`check_report` checks a report against this shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from .errors import ConfigError
from .metrics import LatencySummary, percentile, summarize
from .scenario import Recorder, Scenario, position

__all__ = [
    "SCHEMA",
    "ReportError",
    "build_report",
    "check_report",
    "format_summary",
    "load_report",
    "write_report",
]

SCHEMA = "chaski-actors/report/1"

# Bins of the latency timeline: enough to see a fault's shape, few enough
# that report.json stays small for long runs.
_TIMELINE_BINS = 120


class ReportError(ConfigError):
    """A report file does not have the documented shape."""


def build_report(
    *,
    scenario: Scenario,
    backend: str,
    seed: int,
    graph: nx.Graph[str],
    recorder: Recorder,
    clock_s: float,
    wall_s: float,
    backend_stats: Mapping[str, Any],
) -> dict[str, Any]:
    """Reduce one run to the report described in the module essay."""
    topics = {
        name: _topic(record.sent, record.delivered, record.latencies)
        for name, record in sorted(recorder.topics.items())
    }
    timeline = {
        name: _timeline(record.times, record.latencies, clock_s)
        for name, record in sorted(recorder.topics.items())
    }
    report = {
        "schema": SCHEMA,
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "duration_s": scenario.duration_s,
            "drain_s": scenario.drain_s,
        },
        "backend": backend,
        "seed": seed,
        "hosts": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "run": {"clock_s": clock_s, "wall_s": wall_s},
        "convergence": _convergence(recorder),
        "topics": topics,
        "links": _links(graph, recorder),
        "faults": [
            {"start_s": start, "end_s": end, "what": what}
            for start, end, what in recorder.fault_windows
        ],
        "timeline": timeline,
        "positions": _positions(graph),
        "backend_stats": dict(backend_stats),
    }
    check_report(report)
    return report


def _latency(summary: LatencySummary | None) -> dict[str, float | int] | None:
    return None if summary is None else summary.as_ms()


def _topic(sent: int, delivered: int, latencies: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    cdf = [percentile(ordered, i / 100) * 1e3 for i in range(101)] if ordered else []
    return {
        "sent": sent,
        "delivered": delivered,
        "lost": max(0, sent - delivered),
        "latency_ms": _latency(summarize(ordered)),
        "cdf_ms": cdf,
    }


def _timeline(
    times: Sequence[float], latencies: Sequence[float], clock_s: float
) -> dict[str, Any]:
    width = max(clock_s, 1e-9) / _TIMELINE_BINS
    bins: list[list[float]] = [[] for _ in range(_TIMELINE_BINS)]
    for t, latency in zip(times, latencies, strict=True):
        bins[min(int(t / width), _TIMELINE_BINS - 1)].append(latency)
    t_s, p50, p99, count = [], [], [], []
    for i, samples in enumerate(bins):
        if not samples:
            continue
        samples.sort()
        t_s.append((i + 0.5) * width)
        p50.append(percentile(samples, 0.5) * 1e3)
        p99.append(percentile(samples, 0.99) * 1e3)
        count.append(len(samples))
    return {"bin_s": width, "t_s": t_s, "p50_ms": p50, "p99_ms": p99, "count": count}


def _convergence(recorder: Recorder) -> dict[str, Any]:
    after: float | None = None
    if recorder.fault_windows:
        last_end = max(end for _start, end, _what in recorder.fault_windows)
        relinks = [
            t for e in recorder.edges.values() for t in e.linked_at if t >= last_end
        ]
        broken = any(e.dropped_at for e in recorder.edges.values())
        whole = all(e.up for e in recorder.edges.values())
        if not broken:
            after = 0.0
        elif whole:
            after = max(relinks, default=last_end) - last_end
    return {
        "initial_s": _rounded(recorder.converged_s),
        "after_faults_s": _rounded(after),
        "reconnections": recorder.reconnections,
        "connect_failures": recorder.connect_failures,
    }


def _rounded(seconds: float | None) -> float | None:
    # To the microsecond: finer digits are float noise from subtracting
    # clock readings, and only make the file harder to read.
    return None if seconds is None else round(seconds, 6)


def _links(graph: nx.Graph[str], recorder: Recorder) -> list[dict[str, Any]]:
    rows = _edge_links(graph, recorder)
    # Pairs that discovery linked across the graph, in the order first seen.
    for (source, target), record in recorder.links_seen.items():
        if graph.has_edge(source, target):
            continue
        rows.append(
            {
                "source": source,
                "target": target,
                "edge": False,
                "sent": record.sent,
                "delivered": record.delivered,
                "lost": max(0, record.sent - record.delivered),
                "reconnections": 0,
                "configured_latency_ms": None,
                "latency_ms": _latency(summarize(record.latencies)),
            }
        )
    return rows


def _edge_links(graph: nx.Graph[str], recorder: Recorder) -> list[dict[str, Any]]:
    rows = []
    for u, v, attrs in graph.edges(data=True):
        configured = attrs.get("latency")
        configured_ms = (
            float(configured) * 1e3 if isinstance(configured, (int, float)) else None
        )
        reconnections = recorder.edge(u, v).reconnections
        for source, target in ((u, v), (v, u)):
            record = recorder.links_seen.get((source, target))
            sent = record.sent if record else 0
            delivered = record.delivered if record else 0
            rows.append(
                {
                    "source": source,
                    "target": target,
                    "edge": True,
                    "sent": sent,
                    "delivered": delivered,
                    "lost": max(0, sent - delivered),
                    "reconnections": reconnections,
                    "configured_latency_ms": configured_ms,
                    "latency_ms": _latency(
                        summarize(record.latencies) if record else None
                    ),
                }
            )
    return rows


def _positions(graph: nx.Graph[str]) -> dict[str, list[float]]:
    found = {host: position(graph, host) for host in graph.nodes}
    return {h: list(p) for h, p in found.items() if p is not None}


# -- the schema --------------------------------------------------------------

_NUMBER = (int, float)
_LATENCY = {
    "count": int,
    "mean_ms": _NUMBER,
    "p50_ms": _NUMBER,
    "p90_ms": _NUMBER,
    "p99_ms": _NUMBER,
    "max_ms": _NUMBER,
}
# The shape of a report, as data: a dict is an object with exactly these
# keys, a one-item list a list of that shape, ("?", x) means x or null,
# ("map", x) an object whose values have shape x.
_SHAPE: dict[str, Any] = {
    "schema": str,
    "scenario": {
        "name": str,
        "description": str,
        "duration_s": _NUMBER,
        "drain_s": _NUMBER,
    },
    "backend": str,
    "seed": int,
    "hosts": int,
    "edges": int,
    "run": {"clock_s": _NUMBER, "wall_s": _NUMBER},
    "convergence": {
        "initial_s": ("?", _NUMBER),
        "after_faults_s": ("?", _NUMBER),
        "reconnections": int,
        "connect_failures": int,
    },
    "topics": (
        "map",
        {
            "sent": int,
            "delivered": int,
            "lost": int,
            "latency_ms": ("?", _LATENCY),
            "cdf_ms": [_NUMBER],
        },
    ),
    "links": [
        {
            "source": str,
            "target": str,
            "edge": bool,
            "sent": int,
            "delivered": int,
            "lost": int,
            "reconnections": int,
            "configured_latency_ms": ("?", _NUMBER),
            "latency_ms": ("?", _LATENCY),
        }
    ],
    "faults": [{"start_s": _NUMBER, "end_s": _NUMBER, "what": str}],
    "timeline": (
        "map",
        {
            "bin_s": _NUMBER,
            "t_s": [_NUMBER],
            "p50_ms": [_NUMBER],
            "p99_ms": [_NUMBER],
            "count": [int],
        },
    ),
    "positions": ("map", [_NUMBER]),
    "backend_stats": ("map", (str, int, float, bool)),
}


def check_report(report: object) -> None:
    """Raise :class:`ReportError` naming the first place ``report`` is off."""
    _check(report, _SHAPE, "report")
    assert isinstance(report, dict)
    if report["schema"] != SCHEMA:
        raise ReportError(f"report.schema is {report['schema']!r}, expected {SCHEMA}")
    if report["backend"] not in ("sim", "real"):
        raise ReportError(f"report.backend is {report['backend']!r}")
    for name, topic in report["topics"].items():
        if len(topic["cdf_ms"]) not in (0, 101):
            raise ReportError(f"report.topics.{name}.cdf_ms: expected 101 values")


def _check(value: object, shape: Any, where: str) -> None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise ReportError(f"{where}: expected an object")
        missing = sorted(set(shape) - set(value))
        extra = sorted(set(value) - set(shape))
        if missing or extra:
            raise ReportError(f"{where}: missing {missing}, unexpected {extra}")
        for key, inner in shape.items():
            _check(value[key], inner, f"{where}.{key}")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise ReportError(f"{where}: expected a list")
        for i, item in enumerate(value):
            _check(item, shape[0], f"{where}[{i}]")
    elif isinstance(shape, tuple) and shape and shape[0] == "?":
        if value is not None:
            _check(value, shape[1], where)
    elif isinstance(shape, tuple) and shape and shape[0] == "map":
        if not isinstance(value, dict):
            raise ReportError(f"{where}: expected an object")
        for key, item in value.items():
            _check(item, shape[1], f"{where}.{key}")
    else:
        types = shape if isinstance(shape, tuple) else (shape,)
        if isinstance(value, bool) and bool not in types:
            raise ReportError(f"{where}: expected {_names(types)}, got {value!r}")
        if not isinstance(value, types):
            raise ReportError(f"{where}: expected {_names(types)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ReportError(f"{where}: {value} is not a finite number")


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


# -- files -------------------------------------------------------------------


def write_report(report: Mapping[str, Any], directory: str | Path) -> Path:
    """Write ``report.json`` into ``directory`` (created if need be)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report from a file or from a directory holding ``report.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such report") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON: {exc}") from exc
    try:
        check_report(data)
    except ReportError as exc:
        raise ReportError(f"{path}: {exc}") from None
    assert isinstance(data, dict)
    return data


# -- the summary -------------------------------------------------------------


def format_summary(report: Mapping[str, Any], *, slowest_links: int = 5) -> str:
    """A few lines to read on a terminal: topics, convergence, worst links."""
    lines = []
    conv = report["convergence"]
    lines.append(f"{'topic':<16}{'sent':>8}{'delivered':>11}{'lost':>7}" + _HEAD)
    lines.append("-" * len(lines[-1]))
    for name, topic in report["topics"].items():
        lines.append(
            f"{name:<16}{topic['sent']:>8}{topic['delivered']:>11}"
            f"{topic['lost']:>7}{_figures(topic['latency_ms'])}"
        )
    lines.append("")
    lines.append(
        f"converged after {_seconds(conv['initial_s'])}; "
        f"{conv['reconnections']} reconnections, "
        f"{conv['connect_failures']} failed connects"
    )
    if report["faults"]:
        lines.append(
            f"{len(report['faults'])} fault windows; whole again "
            f"{_seconds(conv['after_faults_s'])} after the last one ended"
        )
    links = [row for row in report["links"] if row["latency_ms"] is not None]
    links.sort(key=lambda row: -row["latency_ms"]["p99_ms"])
    if links:
        lines.append("")
        lines.append(f"slowest links by p99{'':<12}{'lost':>7}" + _HEAD)
        for row in links[:slowest_links]:
            name = f"{row['source']} -> {row['target']}"
            lines.append(f"{name:<32}{row['lost']:>7}{_figures(row['latency_ms'])}")
    return "\n".join(lines)


_HEAD = f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"


def _figures(latency: Mapping[str, float] | None) -> str:
    if latency is None:
        return f"{'-':>9}" * 4
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    return "".join(f"{latency[k]:>9.2f}" for k in keys)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"

"""What ``chaski-actors simulate``, ``run`` and ``compare`` do.

``cli.py`` only parses arguments and registers these functions; the backends
are imported when a command needs them, so that starting one command does
not pay for the others (matplotlib, above all, is only imported to draw).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError
from .report import format_summary, load_report, write_report
from .scenario import Scenario, load_scenario

__all__ = [
    "ProgressBar",
    "cmd_compare",
    "cmd_run",
    "cmd_simulate",
    "compare_table",
    "parse_seeds",
]


class ProgressBar:
    """A one-line bar of run-clock seconds against the end, on a terminal only.

    When the stream is not a terminal (a pipe, a CI log) it draws nothing:
    a bar redrawn two hundred times would bury the summary.
    """

    _WIDTH = 30

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._shown = stream.isatty()
        self._last = -1

    def __call__(self, now: float, end: float) -> None:
        if not self._shown:
            return
        filled = int(self._WIDTH * min(now / end, 1.0)) if end > 0 else self._WIDTH
        if filled == self._last and now < end:
            return
        self._last = filled
        bar = "#" * filled + "." * (self._WIDTH - filled)
        self._stream.write(f"\r{self._label} [{bar}] {now:7.1f} / {end:.1f} s")
        self._stream.flush()

    def close(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def parse_seeds(text: str) -> list[int]:
    """``"1..8"`` is seeds 1 to 8, both included; ``"3"`` is seed 3."""
    low, sep, high = text.partition("..")
    try:
        seeds = list(range(int(low), int(high) + 1)) if sep else [int(low)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected A..B, e.g. 1..8") from None
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: the range is empty")
    return seeds


def _load(args: argparse.Namespace) -> Scenario:
    scenario = load_scenario(args.scenario)
    if args.duration is not None:
        if args.duration <= 0:
            raise ConfigError(f"--duration {args.duration}: expected seconds > 0")
        scenario = dataclasses.replace(scenario, duration_s=args.duration)
    return scenario


def _finish(report: Mapping[str, Any], out: str | None, stdout: TextIO) -> None:
    paths = []
    if out is not None:
        from .plots import plot_all

        paths = [write_report(report, out), *plot_all(report, out)]
    print(file=stdout)
    print(format_summary(report), file=stdout)
    if paths:
        print(file=stdout)
        print(f"wrote {', '.join(str(p) for p in paths)}", file=stdout)


# -- simulate ----------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    scenario = _load(args)
    if args.seeds is not None:
        from .sim.sweep import print_sweep, sweep

        if args.seed is not None:
            raise ConfigError("give --seed or --seeds, not both")
        results = sweep(scenario, parse_seeds(args.seeds), workers=args.workers)
        print_sweep(scenario, results, sys.stdout, out_dir=args.out)
        return 0

    from .sim.scenario import sim_report, simulate

    bar = ProgressBar(sys.stderr, f"simulating {scenario.name}")
    try:
        result = simulate(scenario, seed=args.seed, progress=bar)
    finally:
        bar.close()
    report = sim_report(scenario, result)
    out = sys.stdout
    speed = result.simulated_s / result.wall_s if result.wall_s > 0 else float("inf")
    print(
        f"scenario {result.scenario}: seed {result.seed}, {result.hosts} hosts, "
        f"{result.edges} edges, {result.recorder.links} links",
        file=out,
    )
    print(
        f"simulated {result.simulated_s:.1f} s in {result.wall_s:.2f} s of wall "
        f"time ({speed:,.0f}x real time)",
        file=out,
    )
    _finish(report, args.out, out)
    net = result.network
    print(file=out)
    print(
        f"network: {net.segments} segments, {net.segment_bytes:,} bytes, "
        f"{net.retransmissions} retransmissions, {net.datagrams_lost} datagrams lost",
        file=out,
    )
    print(f"trace-events: {result.trace_events}", file=out)
    print(f"trace-digest: {result.trace_digest}", file=out)
    return 0


# -- run ---------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .real.scenario import run_scenario

    scenario = _load(args)
    bar = ProgressBar(sys.stderr, f"running {scenario.name}")
    try:
        report = run_scenario(
            scenario, seed=args.seed, progress=bar, delays=not args.no_delays
        )
    finally:
        bar.close()
    out = sys.stdout
    stats = report["backend_stats"]
    print(
        f"scenario {scenario.name} on loopback: seed {report['seed']}, "
        f"{report['hosts']} hosts, {report['edges']} edges",
        file=out,
    )
    print(
        f"ran {report['run']['clock_s']:.1f} s; link delays "
        f"{'injected' if stats['injected_delays'] else 'not injected'}",
        file=out,
    )
    _finish(report, args.out, out)
    return 0


# -- compare -----------------------------------------------------------------


def compare_table(
    a: Mapping[str, Any], b: Mapping[str, Any], labels: tuple[str, str]
) -> str:
    """Per topic: each run's figures side by side, and B's relative to A's."""
    la, lb = (label[:10] for label in labels)
    lines = [
        f"{'topic':<14}{'figure':<11}{la:>11}{lb:>11}{'b/a':>8}",
    ]
    lines.append("-" * len(lines[0]))
    figures = ("delivered", "lost", "p50_ms", "p90_ms", "p99_ms", "max_ms")
    for topic in sorted(set(a["topics"]) | set(b["topics"])):
        ta, tb = a["topics"].get(topic), b["topics"].get(topic)
        for i, figure in enumerate(figures):
            va, vb = _figure_of(ta, figure), _figure_of(tb, figure)
            ratio = f"{vb / va:8.2f}" if va and vb is not None else f"{'-':>8}"
            name = topic if i == 0 else ""
            lines.append(f"{name:<14}{figure:<11}{_cell(va)}{_cell(vb)}{ratio}")
    for key in ("initial_s", "reconnections"):
        va, vb = a["convergence"][key], b["convergence"][key]
        lines.append(f"{'convergence':<14}{key:<11}{_cell(va)}{_cell(vb)}")
    return "\n".join(lines)


def _figure_of(topic: Mapping[str, Any] | None, figure: str) -> float | None:
    if topic is None:
        return None
    if figure in ("delivered", "lost"):
        return float(topic[figure])
    latency = topic["latency_ms"]
    return None if latency is None else float(latency[figure])


def _cell(value: float | None) -> str:
    if value is None:
        return f"{'-':>11}"
    return f"{value:>11.2f}" if value != int(value) else f"{int(value):>11}"


def cmd_compare(args: argparse.Namespace) -> int:
    from .plots import compare_cdf

    a, b = load_report(args.a), load_report(args.b)
    labels = (
        f"{a['backend']}:{Path(args.a).name}",
        f"{b['backend']}:{Path(args.b).name}",
    )
    print(f"A = {args.a} ({a['backend']}), B = {args.b} ({b['backend']})")
    print(compare_table(a, b, labels))
    png = compare_cdf([(labels[0], a), (labels[1], b)], Path(args.png))
    print()
    print(f"wrote {png}")
    return 0

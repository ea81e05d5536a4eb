"""The ``chaski-actors`` command.

Each subcommand is a function ``_cmd_<name>(args) -> int`` registered in
:func:`_parser`; the exit status is 0 on success, 1 when the run found a
problem (a chaos failure, say), 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from .errors import ChaskiError
from .log import configure_logging

if TYPE_CHECKING:
    from .sim.scenario import SimReport

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    command: Command = args.command
    try:
        return command(args)
    except ChaskiError as exc:
        print(f"chaski-actors: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``); what it did not read is not lost
        # work, and a traceback would only hide the output it did read.
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaski-actors",
        description="Distributed actors on real sockets or a simulated network.",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much chaski's loggers print to stderr (default WARNING)",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    simulate = sub.add_parser(
        "simulate", help="run a scenario file on the simulated network"
    )
    simulate.add_argument("scenario", help="path to a scenario .toml file")
    simulate.add_argument(
        "--seed", type=int, default=None, help="override the scenario's seed"
    )
    simulate.set_defaults(command=_cmd_simulate)

    # ca, enrol, node: the security and deployment commands (real backend).
    from .real.commands import register

    register(sub)
    return parser


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .scenario import load_scenario
    from .sim.scenario import simulate

    scenario = load_scenario(args.scenario)
    report = simulate(scenario, seed=args.seed)
    _print_report(report, sys.stdout)
    return 0


def _print_report(report: SimReport, out: TextIO) -> None:
    wall_s = report.wall_s
    speed = report.simulated_s / wall_s if wall_s > 0 else float("inf")
    print(
        f"scenario {report.scenario}: seed {report.seed}, {report.hosts} hosts, "
        f"{report.edges} edges, {report.recorder.links} links",
        file=out,
    )
    print(
        f"simulated {report.simulated_s:.1f} s in {wall_s:.2f} s of wall time "
        f"({speed:,.0f}x real time)",
        file=out,
    )
    print(file=out)
    header = (
        f"{'topic':<16}{'sent':>8}{'delivered':>11}{'lost':>7}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    summaries = report.summaries()
    for topic, record in sorted(report.recorder.topics.items()):
        s = summaries[topic]
        figures = (
            f"{s.p50 * 1e3:>9.2f}{s.p90 * 1e3:>9.2f}{s.p99 * 1e3:>9.2f}"
            f"{s.max * 1e3:>9.2f}"
            if s is not None
            else f"{'-':>9}" * 4
        )
        lost = record.sent - record.delivered
        print(
            f"{topic:<16}{record.sent:>8}{record.delivered:>11}{lost:>7}{figures}",
            file=out,
        )
    net = report.network
    print(file=out)
    print(
        f"network: {net.segments} segments, {net.segment_bytes:,} bytes, "
        f"{net.retransmissions} retransmissions, {net.datagrams_lost} datagrams lost",
        file=out,
    )
    print(f"trace-events: {report.trace_events}", file=out)
    print(f"trace-digest: {report.trace_digest}", file=out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

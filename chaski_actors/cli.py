"""The ``chaski-actors`` command.

Each subcommand is a function ``(args) -> int`` registered in
:func:`_parser` (the scenario commands live in ``commands.py``); the exit
status is 0 on success, 1 when the run found a problem (a chaos failure,
say), 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import commands
from .errors import ChaskiError
from .log import configure_logging

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level or args.quiet_below)
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
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much chaski's loggers print to stderr (default WARNING; "
        "INFO for node, ERROR for chaos)",
    )
    parser.set_defaults(quiet_below="WARNING")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    simulate = sub.add_parser(
        "simulate", help="run a scenario file on the simulated network"
    )
    simulate.add_argument("scenario", help="path to a scenario .toml file")
    simulate.add_argument(
        "--seed", type=int, default=None, help="override the scenario's seed"
    )
    _scenario_options(simulate)
    simulate.add_argument(
        "--seeds",
        metavar="A..B",
        help="run every seed from A to B in parallel processes; print the spread",
    )
    simulate.add_argument(
        "--workers", type=int, default=None, help="processes for --seeds"
    )
    simulate.set_defaults(command=commands.cmd_simulate)

    run = sub.add_parser(
        "run", help="run a scenario's nodes on this machine over real sockets"
    )
    run.add_argument("scenario", help="path to a scenario .toml file")
    run.add_argument("--seed", type=int, default=None, help="override the seed")
    _scenario_options(run)
    run.add_argument(
        "--no-delays",
        action="store_true",
        help="do not inject the topology's latencies into loopback links",
    )
    run.set_defaults(command=commands.cmd_run)

    compare = sub.add_parser("compare", help="put two run reports side by side")
    compare.add_argument("a", metavar="DIR_A", help="a report directory or file")
    compare.add_argument("b", metavar="DIR_B", help="another one")
    compare.add_argument(
        "--png",
        default="compare_cdf.png",
        help="where to draw the overlaid CDFs (default compare_cdf.png)",
    )
    compare.set_defaults(command=commands.cmd_compare)

    chaos = sub.add_parser(
        "chaos",
        help="run a scenario under random fault schedules and check delivery",
    )
    chaos.add_argument("scenario", help="path to a scenario .toml with [chaos]")
    chaos.add_argument(
        "--seeds", default="1..50", help="seeds to run, A..B inclusive (default 1..50)"
    )
    chaos.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes to share the seeds (default: one per CPU)",
    )
    # Under injected faults, failed handshakes and lost links are what the
    # run is made of, and thousands of seeds would print thousands of such
    # warnings with no seed to tell them apart; the checker's verdict says
    # what went wrong, and --log-level WARNING brings them back.
    chaos.set_defaults(command=_cmd_chaos, quiet_below="ERROR")

    # ca, enrol, node: the security and deployment commands (real backend).
    from .real.commands import register

    register(sub)
    return parser


def _cmd_chaos(args: argparse.Namespace) -> int:
    from .chaos import parse_seeds, run_chaos

    seeds = parse_seeds(args.seeds)
    return run_chaos(args.scenario, seeds, sys.stdout, workers=args.workers)


def _scenario_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", metavar="DIR", help="write report.json and PNG plots into DIR"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="override the scenario's duration_s (a shorter trial run)",
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

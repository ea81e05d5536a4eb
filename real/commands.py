"""Console commands that act on the real world: the CA, enrolment, a node.

``chaski-actors ca init|issue|renew|revoke|token|serve``, ``chaski-actors
enrol`` and ``chaski-actors node`` live here rather than in the neutral
``cli`` module because they read the real clock, run an asyncio loop and
wait for signals. :func:`register` adds them to the parser.

The CA's passphrase comes from ``--passphrase-file``, else the environment
variable ``CHASKI_CA_PASSPHRASE`` (for scripts), else a prompt on the
terminal. It is never a command-line argument, which other users of the
machine could read in the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from chaski_actors.ca import CertificateAuthority
from chaski_actors.enrolment import (
    TOKEN_BYTES,
    enrol,
    fetch_revocations,
    serve_enrolment,
)
from chaski_actors.errors import ConfigError, ConnectError, ProtocolError
from chaski_actors.log import node_logger
from chaski_actors.node import Node
from chaski_actors.runtime import TlsConfig

from .runtime import RealRuntime

__all__ = ["register"]

PASSPHRASE_VARIABLE = "CHASKI_CA_PASSPHRASE"


def register(sub: Any) -> None:
    """Add ``ca``, ``enrol`` and ``node`` to the subcommands ``sub``."""
    _register_ca(sub)

    enrol_parser = sub.add_parser(
        "enrol", help="get this node's certificate from a CA's enrolment service"
    )
    enrol_parser.add_argument("--ca", required=True, metavar="HOST:PORT")
    enrol_parser.add_argument("--token", required=True, help="printed by the CA")
    enrol_parser.add_argument(
        "--fingerprint", required=True, help="the CA root's SHA-256 fingerprint"
    )
    enrol_parser.add_argument("--name", required=True)
    enrol_parser.add_argument("--dir", required=True, help="where to write the files")
    enrol_parser.add_argument("--ip", action="append", default=[], metavar="A")
    enrol_parser.set_defaults(command=_cmd_enrol)

    node = sub.add_parser("node", help="run a node until interrupted")
    node.add_argument("--listen", required=True, metavar="HOST:PORT")
    node.add_argument("--name", required=True)
    node.add_argument(
        "--tls-dir", metavar="D", help="NAME.pem, NAME.key, ca.pem (and crl.pem)"
    )
    node.add_argument("--subscribe", action="append", default=[], metavar="TOPIC")
    node.add_argument(
        "--connect", action="append", default=[], metavar="HOST:PORT", help="a peer"
    )
    node.add_argument(
        "--crl-from",
        metavar="HOST:PORT",
        help="a CA's enrolment service to fetch the revocation list from",
    )
    node.add_argument(
        "--crl-every",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds between fetches (default 300)",
    )
    node.set_defaults(
        # Logging what it does is the point of this command, so it says more
        # than the others unless told otherwise.
        command=_cmd_node,
        quiet_below="INFO",
    )


def _register_ca(sub: Any) -> None:
    ca = sub.add_parser("ca", help="the certificate authority")
    commands = ca.add_subparsers(required=True, metavar="ACTION")

    def action(name: str, text: str, run: Callable[[argparse.Namespace], int]) -> Any:
        parser = commands.add_parser(name, help=text)
        parser.add_argument("--dir", required=True, help="the CA's directory")
        parser.add_argument(
            "--passphrase-file", help=f"else ${PASSPHRASE_VARIABLE}, else a prompt"
        )
        parser.set_defaults(command=run)
        return parser

    action("init", "create a root in --dir", _cmd_ca_init)
    issue = action("issue", "write D/NAME.pem and D/NAME.key", _cmd_ca_issue)
    issue.add_argument("--name", required=True)
    issue.add_argument("--ip", action="append", default=[], metavar="A")
    issue.add_argument("--days", type=int, default=90)
    renew = action("renew", "a fresh D/NAME.pem for the same key", _cmd_ca_renew)
    renew.add_argument("--name", required=True)
    revoke = action("revoke", "revoke NAME and rewrite D/crl.pem", _cmd_ca_revoke)
    revoke.add_argument("--name", required=True)
    action("token", "print a new one-time enrolment token", _cmd_ca_token)
    serve = action("serve", "answer enrolment requests", _cmd_ca_serve)
    serve.add_argument("--listen", required=True, metavar="HOST:PORT")


# -- the CA ------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes:
    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the passphrase file: {exc}") from exc
    from_environment = os.environ.get(PASSPHRASE_VARIABLE)
    if from_environment:
        return from_environment.encode()
    if not sys.stdin.isatty():
        raise ConfigError(
            f"no passphrase: use --passphrase-file or set {PASSPHRASE_VARIABLE}"
        )
    passphrase = getpass.getpass("CA passphrase: ")
    if confirm and getpass.getpass("again: ") != passphrase:
        raise ConfigError("the two passphrases differ")
    return passphrase.encode()


def _open(args: argparse.Namespace) -> CertificateAuthority:
    return CertificateAuthority.open(args.dir, _passphrase(args))


def _cmd_ca_init(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.create(
        args.dir, _passphrase(args, confirm=True), now=_now()
    )
    print(f"created a CA in {ca.directory}")
    print(f"fingerprint: {ca.fingerprint}")
    return 0


def _cmd_ca_issue(args: argparse.Namespace) -> int:
    cert, key = _open(args).issue_files(
        args.name, now=_now(), ips=args.ip, days=args.days
    )
    print(f"wrote {cert} and {key}")
    return 0


def _cmd_ca_renew(args: argparse.Namespace) -> int:
    print(f"wrote {_open(args).renew(args.name, now=_now())}")
    return 0


def _cmd_ca_revoke(args: argparse.Namespace) -> int:
    ca = _open(args)
    serials = ca.revoke(args.name, now=_now())
    print(f"revoked {args.name} (serials {', '.join(map(str, serials)) or 'none'})")
    print(f"copy {ca.directory / 'crl.pem'} to the nodes")
    return 0


def _cmd_ca_token(args: argparse.Namespace) -> int:
    print(_open(args).create_token(os.urandom(TOKEN_BYTES), now=_now()))
    return 0


def _cmd_ca_serve(args: argparse.Namespace) -> int:
    ca = _open(args)
    host, port = _address(args.listen)

    async def serve(runtime: RealRuntime, stopped: asyncio.Event) -> None:
        token = ca.create_token(runtime.secret_bytes(TOKEN_BYTES), now=_now())
        listener = await serve_enrolment(runtime, ca, host, port)
        print(f"fingerprint: {ca.fingerprint}")
        print(f"token: {token}")
        print("listening on {}:{}".format(*listener.address), flush=True)
        await stopped.wait()
        await listener.aclose()

    return _run_until_interrupted(serve)


# -- a node ------------------------------------------------------------------


def _cmd_enrol(args: argparse.Namespace) -> int:
    async def run() -> TlsConfig:
        return await enrol(
            RealRuntime(),
            _address(args.ca),
            name=args.name,
            token=args.token,
            ca_fingerprint=args.fingerprint,
            directory=args.dir,
            ips=args.ip,
        )

    tls = asyncio.run(run())
    print(f"enrolled {args.name}: wrote {tls.certificate} and {tls.private_key}")
    return 0


def _cmd_node(args: argparse.Namespace) -> int:
    host, port = _address(args.listen)
    tls = TlsConfig.from_directory(args.tls_dir, args.name) if args.tls_dir else None
    peers = [_address(text) for text in args.connect]

    async def run(runtime: RealRuntime, stopped: asyncio.Event) -> None:
        async with Node(runtime, args.name, host=host, port=port, tls=tls) as node:
            await node.subscribe(*args.subscribe)
            for peer in peers:
                try:
                    await node.connect(*peer)
                except ConnectError as exc:
                    node.log.warning("cannot link to %s:%s: %s", *peer, exc)
            reader = runtime.spawn(_print_messages(node), name="print")
            fetcher = None
            if args.crl_from and tls is not None:
                source = _address(args.crl_from)
                fetcher = runtime.spawn(
                    _refresh_revocations(node, source, tls, args.crl_every),
                    name="revocations",
                )
            await stopped.wait()
            reader.cancel()
            if fetcher is not None:
                fetcher.cancel()
            node.log.info("interrupted, stopping")

    return _run_until_interrupted(run)


async def _refresh_revocations(
    node: Node, source: tuple[str, int], tls: TlsConfig, every_s: float
) -> None:
    log = node_logger("security", node.runtime, node.name)
    while True:
        try:
            if await fetch_revocations(node.runtime, source, tls):
                log.info("new revocation list from %s:%s", *source)
        except (ConnectError, ProtocolError) as exc:
            # The list in place stays in force; the next round tries again.
            log.warning("cannot fetch the revocation list: %s", exc)
        await node.runtime.sleep(every_s)


async def _print_messages(node: Node) -> None:
    while True:
        message = await node.receive()
        print(f"{message.topic} {message.source} {message.data!r}", flush=True)


def _run_until_interrupted(
    body: Callable[[RealRuntime, asyncio.Event], Coroutine[Any, Any, None]],
) -> int:
    """Run ``body`` until SIGINT or SIGTERM sets its event; exit status 0."""

    async def main() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        await body(RealRuntime(), stopped)

    asyncio.run(main())
    return 0


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)

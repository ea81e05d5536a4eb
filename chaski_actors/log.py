"""Logging under a few fixed names, with records stamped in runtime time.

Logger names are topical, not one per module, so that a person running a
node can turn a subject up or down:

``chaski.node``       lifecycle of nodes: started, stopped, peers paired
``chaski.link``       connections: opened, closed, broken, protocol errors
``chaski.discovery``  finding peers by topic
``chaski.remote``     remote calls
``chaski.security``   certificates, enrolment, refused peers
``chaski.runtime``    the backends: crashed tasks, socket errors
``chaski.sim``        the simulator: faults and scenario progress

Every record that actors log carries ``runtime_time`` (seconds on the
runtime's clock, so simulated seconds under ``sim``) and ``node`` (the node's
name). :class:`RuntimeFormatter` prints them; records from elsewhere print
``-`` in their place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from .runtime import Runtime

__all__ = [
    "LOGGER_NAMES",
    "NodeLogger",
    "RuntimeFormatter",
    "configure_logging",
    "node_logger",
]

LOGGER_NAMES = (
    "chaski.node",
    "chaski.link",
    "chaski.discovery",
    "chaski.remote",
    "chaski.security",
    "chaski.runtime",
    "chaski.sim",
)


class NodeLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the runtime's clock and the node's name to every record."""

    def __init__(self, logger: logging.Logger, runtime: Runtime, node: str) -> None:
        super().__init__(logger, {"node": node})
        self.runtime = runtime
        self.node = node

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra: Mapping[str, object] = kwargs.get("extra") or {}
        kwargs["extra"] = {
            **extra,
            "runtime_time": self.runtime.now(),
            "node": self.node,
        }
        return msg, kwargs


def node_logger(topic: str, runtime: Runtime, node: str) -> NodeLogger:
    """The logger for ``chaski.<topic>``, stamped for ``node``."""
    name = f"chaski.{topic}"
    if name not in LOGGER_NAMES:
        raise ValueError(f"unknown logger {name!r}; use one of {LOGGER_NAMES}")
    return NodeLogger(logging.getLogger(name), runtime, node)


class RuntimeFormatter(logging.Formatter):
    """``  12.345678 node-a chaski.link INFO message``."""

    def __init__(self) -> None:
        super().__init__("%(runtime)s %(node)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        when = getattr(record, "runtime_time", None)
        record.runtime = "         -" if when is None else f"{when:10.6f}"
        if not hasattr(record, "node"):
            record.node = "-"
        return super().format(record)


def configure_logging(level: int | str = "INFO") -> None:
    """Send chaski's loggers to stderr with :class:`RuntimeFormatter`."""
    handler = logging.StreamHandler()
    handler.setFormatter(RuntimeFormatter())
    root = logging.getLogger("chaski")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

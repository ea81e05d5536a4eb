"""Helpers for tests of actors, usable on either backend."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

from .runtime import Runtime

if TYPE_CHECKING:
    from .node import Node

__all__ = ["assert_delivered", "assert_paired_within", "eventually"]


async def eventually(
    runtime: Runtime,
    condition: Callable[[], bool],
    *,
    timeout: float = 5.0,
    interval: float = 0.001,
) -> float:
    """Wait until ``condition()`` is true; return how long it took.

    Raises TimeoutError after ``timeout`` seconds of the runtime's clock.
    Polling, rather than an event, because the condition may be any state
    of any object; under ``sim`` the poll costs no wall time.
    """
    start = runtime.now()
    while not condition():
        if runtime.now() - start >= timeout:
            raise TimeoutError(f"condition still false after {timeout} s")
        await runtime.sleep(interval)
    return runtime.now() - start


def assert_delivered(
    sent: Sequence[Hashable], received: Sequence[Hashable], *, ordered: bool = True
) -> None:
    """Assert that ``received`` holds every item of ``sent`` once (in order).

    The message says what went wrong first, in this order: items lost,
    items delivered twice, items nobody sent, items out of order, each with
    at most a few examples, so that a failing reconnection test reads as a
    diagnosis rather than as two long lists.
    """
    counts: dict[Hashable, int] = {}
    for item in received:
        counts[item] = counts.get(item, 0) + 1
    expected = set(sent)
    lost = [item for item in sent if item not in counts]
    twice = [item for item, n in counts.items() if n > 1]
    foreign = [item for item in counts if item not in expected]
    problems = []
    if lost:
        problems.append(f"{len(lost)} lost, e.g. {lost[:5]}")
    if twice:
        problems.append(f"{len(twice)} delivered more than once, e.g. {twice[:5]}")
    if foreign:
        problems.append(f"{len(foreign)} never sent, e.g. {foreign[:5]}")
    if not problems and ordered and list(received) != list(sent):
        first = next(
            i for i, (a, b) in enumerate(zip(sent, received, strict=True)) if a != b
        )
        shown = slice(first, first + 3)
        problems.append(
            f"out of order from position {first}: sent {list(sent[shown])}, "
            f"received {list(received[shown])}"
        )
    if problems:
        raise AssertionError(
            f"delivery of {len(sent)} messages: " + "; ".join(problems)
        )


async def assert_paired_within(node: Node, peer: str, seconds: float) -> float:
    """Wait until ``node`` has a live connection to ``peer``; return how long
    that took. AssertionError if it is not there within ``seconds`` of the
    node's clock (simulated seconds under ``sim``)."""

    def paired() -> bool:
        link = node.links.get(peer)
        return link is not None and link.connected

    try:
        return await eventually(node.runtime, paired, timeout=seconds)
    except TimeoutError:
        link = node.links.get(peer)
        state = "no link" if link is None else f"link {link.state}"
        raise AssertionError(
            f"{node.name} not paired with {peer} within {seconds} s ({state})"
        ) from None

"""Remote objects: call methods and read attributes of objects on other nodes.

A node registers objects under names and says which of their attributes it
exposes. A peer asks for a :class:`Proxy` to one of them and uses it much like
the object itself::

    remote = Remote(node)
    remote.register("counter", counter, expose=["add", "total", "limits"])
    ...
    proxy = await remote.proxy("b", "counter")
    await proxy.add(2)                 # a method call
    await proxy.total                  # an attribute read
    await proxy.limits.upper           # a nested attribute read

How a call travels
------------------
Four frame kinds, multiplexed on the ordinary link between two nodes:

``CALL``     ``[call id, op, object, path, args, kwargs]`` in one field
``RESULT``   call id, value
``FAILURE``  call id (or nil), code, remote type name, message
``CANCEL``   call id

``op`` is ``"call"``, ``"get"`` (an attribute read) or ``"describe"`` (the
exposed names, asked once when a proxy is made). The caller numbers its calls
and matches answers by number, so any number of calls share one link and
finish in any order. The whole request sits in one field on purpose: a frame
with the wrong number of fields breaks the wire rules and costs the sender its
link, but a request with bad contents is answered with a
:class:`~chaski_actors.errors.MalformedCallError`, and the link, and every
other call on it, carries on.

What the callee allows
----------------------
A path is reachable when one of the owner's exposed dotted names is a prefix
of it: exposing ``limits`` exposes ``limits.upper`` and anything else reached
through public names from ``limits``, so expose the narrowest names that
serve. A name that starts with an underscore is refused at every step, exposed
or not, so ``__class__`` and its kin are never reachable.

Exactly once
------------
Calls, answers and cancellations travel as the link's reliable frames, so
they survive reconnections: the session resends what was unacknowledged and
drops what it already delivered. The callee does not rely on that alone, as a
caller may also repeat a call it never heard back from. The callee keeps a
:class:`CallBook` keyed by the caller's node id and the call id: a call that
is running is not started again, and one that has finished is answered from
the book without running. The book
remembers ``remote_result_cache`` answers; an answer evicted from it cannot be
replayed, and a resend that old would run the call a second time (the
eviction is counted).

Limits
------
The book also admits at most ``remote_max_calls`` running calls in all and
``remote_max_calls_per_peer`` from any one peer. A well-behaved caller never
meets the second limit: it keeps its own calls in flight to a peer within the
same figure and queues the rest, so only a peer with other settings, or a
hostile one, is refused. A call over either limit is
answered at once with :class:`~chaski_actors.errors.RemoteBusyError`: the link
reader never waits for a slot, so a peer flooding calls gets errors while the
node keeps serving the others.

Where a call runs
-----------------
Attribute reads, ``describe`` and plain (non-async) methods run in the link's
reader and finish before the next frame is read: a task of their own would
cost a trip through the event loop, and a plain method blocks the loop while
it runs wherever it runs. A method that returns an awaitable (a coroutine
method, usually) has it awaited in a task of its own, which ``CANCEL``
cancels; a plain method cannot be interrupted, and a ``CANCEL`` that arrives
after it finished finds nothing to do. Answers are sent from the reader too,
but the reader never waits to write: an answer that must wait for room in
the link's send buffer is handed to a task, because the acknowledgements
that make room arrive through this very reader.

Cancellation and loss
---------------------
A caller whose task is cancelled, or whose deadline passes, sends ``CANCEL``;
the callee cancels the task running the call. Deadlines are kept by one
timer per :class:`Remote`, armed for the earliest of them, which fails the
futures of calls past due; only a call that must wait for a slot, or whose
send the link makes wait, runs (that part) under a timeout scope.

When a link closes for good, the caller fails the calls in flight on it with
:class:`~chaski_actors.errors.LinkLostError` and the callee cancels the calls
it was running for that peer, whose answers could no longer be delivered.

Values travel as the codec carries them (msgpack plus the extension types of
:mod:`chaski_actors.codec`); nothing is pickled, and nothing received is
evaluated: names are only looked up with ``getattr``.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import itertools
from collections import OrderedDict, deque
from collections.abc import Awaitable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from ._eager import finish_later, step
from .codec import encode_payload
from .errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConfigError,
    LinkLostError,
    MalformedCallError,
    ProtocolError,
    RefusedNameError,
    RemoteBusyError,
    RemoteError,
    RemoteTimeoutError,
    UnknownNameError,
)
from .log import node_logger
from .node import Link, Node
from .protocol import ANY, INT, STR, Frame, register_kind
from .runtime import Future, Runtime, Task, Timer

__all__ = [
    "CALL",
    "CANCEL",
    "FAILURE",
    "RESULT",
    "Admission",
    "CallBook",
    "CallBookStatistics",
    "CallRequest",
    "Proxy",
    "Remote",
    "RemoteStatistics",
    "call_id_of",
    "error_for",
    "parse_call",
]

CALL: Final = 50  # [call id, op, object, path, args, kwargs]
RESULT: Final = 51  # call id, value
FAILURE: Final = 52  # call id or nil, code, remote type name, message
CANCEL: Final = 53  # call id

register_kind(CALL, "call", ANY)
register_kind(RESULT, "result", INT, ANY)
register_kind(FAILURE, "failure", ANY, STR, STR, STR)
register_kind(CANCEL, "cancel", INT)

OPS: Final = ("call", "get", "describe")

# Bounds on what a request may contain; generous for real programs, and they
# keep a hostile request from making the callee walk long attribute chains.
MAX_PATH: Final = 16
MAX_NAME: Final = 128
_LARGEST_ID: Final = (1 << 63) - 1
# A due time that never comes.
_NEVER: Final = float("inf")
# A timer may run a hair before its due time (asyncio's clock resolution, or
# float rounding of a re-armed delay); a deadline that close counts as passed.
_SLACK: Final = 1e-6

_ERRORS: Final[dict[str, type[RemoteError]]] = {
    cls.code: cls
    for cls in (
        UnknownNameError,
        RefusedNameError,
        MalformedCallError,
        RemoteBusyError,
        RemoteTimeoutError,
        LinkLostError,
    )
}


# -- the request, checked ----------------------------------------------------


class CallRequest(NamedTuple):
    """One well-formed request, as :func:`parse_call` found it.

    A named tuple, as one is built for every call received, and a tuple is
    built several times faster than a frozen dataclass.
    """

    call_id: int
    op: str
    target: str
    path: tuple[str, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def call_id_of(payload: object) -> int | None:
    """The call id of a request, if it has a usable one, to address a refusal."""
    if isinstance(payload, list) and payload:
        call_id = payload[0]
        if type(call_id) is int and 0 <= call_id <= _LARGEST_ID:
            return call_id
    return None


def parse_call(payload: object) -> CallRequest:
    """Check a ``CALL`` frame's payload; raise MalformedCallError saying what is off."""
    if not isinstance(payload, list) or len(payload) != 6:
        raise MalformedCallError("a call is an array of 6 fields")
    call_id, op, target, path, args, kwargs = payload

    if type(call_id) is not int or not 0 <= call_id <= _LARGEST_ID:
        raise MalformedCallError(f"call id must be an int from 0 to {_LARGEST_ID}")
    if op not in OPS:
        raise MalformedCallError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    # A plain identifier, the usual object name, is accepted without the call.
    if not (
        type(target) is str and 0 < len(target) <= MAX_NAME and target.isidentifier()
    ) and not _is_name(target, dotted=True):
        raise MalformedCallError(f"object name must be a short string, got {target!r}")
    if not isinstance(path, list) or len(path) > MAX_PATH:
        raise MalformedCallError(f"path must be an array of at most {MAX_PATH} names")
    for name in path:
        # _is_name, written out: every call has a path.
        if not (
            type(name) is str and 0 < len(name) <= MAX_NAME and name.isidentifier()
        ):
            raise MalformedCallError("every name in a path must be a Python identifier")
    if not isinstance(args, list):
        raise MalformedCallError("positional arguments must be an array")
    if not isinstance(kwargs, dict):
        raise MalformedCallError("keyword arguments must map identifiers to values")
    for name in kwargs:
        if not _is_name(name):
            raise MalformedCallError("keyword arguments must map identifiers to values")
    if not path and op != "describe":
        raise MalformedCallError(f"a {op} needs a path of at least one name")

    return _new_request(
        CallRequest, (call_id, op, target, tuple(path), tuple(args), kwargs)
    )


# Building the tuple directly skips the named tuple's __new__ in Python.
_new_request = tuple.__new__


def _is_name(value: object, *, dotted: bool = False) -> bool:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME:
        # A str subclass from the codec is impossible; from a caller, refused.
        return False
    if dotted and "." in value:
        return all(part.isidentifier() for part in value.split("."))
    return value.isidentifier()


def error_for(code: str, remote_type: str, message: str) -> RemoteError:
    """The local exception for a ``FAILURE`` frame's code, type and message."""
    cls = _ERRORS.get(code, RemoteError)
    if cls is RemoteError:
        return RemoteError(message, remote_type=remote_type, code=code)
    return cls(message, remote_type=remote_type)


# -- the callee's book of calls ------------------------------------------------


class Admission(enum.Enum):
    """What :meth:`CallBook.admit` decided about an arriving call."""

    RUN = "run"
    RUNNING = "running"  # a duplicate of a call still running: ignore it
    ANSWERED = "answered"  # a duplicate of a finished call: replay its answer
    BUSY = "busy"  # over a concurrency limit: refuse it


# Looked up once: an enum member read through its class costs a lookup of
# its own, and every call received is admitted.
_RUN: Final = Admission.RUN

Key = tuple[str, int]  # (caller's node id, call id)


@dataclass(frozen=True, slots=True)
class CallBookStatistics:
    """What a :class:`CallBook` holds and has done.

    ``running`` counts coroutine methods that have started and not ended; a
    plain method is answered before the read that brought its call is over,
    so it never counts there.
    """

    running: int
    remembered: int
    admitted: int
    duplicates: int
    refused_busy: int
    cancelled: int
    evicted: int


class CallBook:
    """Which calls run, which finished and what they answered; sans-IO.

    See the module essay. The book neither runs nor sends anything: the
    :class:`Remote` asks it before starting a call and tells it when one ends.
    Finished answers are kept in arrival order and the oldest is evicted once
    ``cache_size`` are kept; evictions are counted.
    """

    def __init__(self, max_running: int, max_per_peer: int, cache_size: int) -> None:
        self.max_running = max_running
        self.max_per_peer = max_per_peer
        self.cache_size = cache_size
        self._running: dict[Key, None] = {}
        self._per_peer: dict[str, int] = {}
        self._answers: OrderedDict[Key, bytes] = OrderedDict()
        self._admitted = self._duplicates = self._busy = 0
        self._cancelled = self._evicted = 0

    def __repr__(self) -> str:
        return (
            f"<CallBook running={len(self._running)}/{self.max_running} "
            f"remembered={len(self._answers)}/{self.cache_size}>"
        )

    def admit(self, key: Key) -> Admission:
        admission = self.check(key)
        if admission is _RUN:
            self.start(key)
        return admission

    def check(self, key: Key) -> Admission:
        """:meth:`admit`, but a call let through is not yet running.

        For a call that may end before anything else happens (a plain
        method, run in the reader): it is answered with :meth:`remember`,
        and never enters the book of running calls, which would cost more
        than the rest of its bookkeeping. One that goes on running (a
        coroutine method, awaited in a task) is marked with :meth:`start`,
        before anything else can be admitted.
        """
        if key in self._running:
            self._duplicates += 1
            return Admission.RUNNING
        if key in self._answers:
            self._duplicates += 1
            return Admission.ANSWERED
        if (
            len(self._running) >= self.max_running
            or self._per_peer.get(key[0], 0) >= self.max_per_peer
        ):
            self._busy += 1
            return Admission.BUSY
        self._admitted += 1
        return _RUN

    def start(self, key: Key) -> None:
        """Mark a call let through by :meth:`check` as running."""
        self._running[key] = None
        peer = key[0]
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1

    def answer(self, key: Key) -> bytes:
        """The remembered answer of a finished call (after ``ANSWERED``)."""
        return self._answers[key]

    def finish(self, key: Key, answer: bytes) -> None:
        """A running call ended with ``answer``; remember it for duplicates."""
        if self._release(key):
            self.remember(key, answer)

    def remember(self, key: Key, answer: bytes) -> None:
        """A call that :meth:`check` let through ended without running on."""
        answers = self._answers
        answers[key] = answer
        while len(answers) > self.cache_size:
            answers.popitem(last=False)
            self._evicted += 1

    def cancel(self, key: Key) -> None:
        """A running call was cancelled: it has no answer to remember."""
        if self._release(key):
            self._cancelled += 1

    def is_running(self, key: Key) -> bool:
        return key in self._running

    def running_for(self, peer: str) -> list[Key]:
        return [key for key in self._running if key[0] == peer]

    def _release(self, key: Key) -> bool:
        if key not in self._running:
            return False
        del self._running[key]
        peer = key[0]
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]
        return True

    def statistics(self) -> CallBookStatistics:
        return CallBookStatistics(
            running=len(self._running),
            remembered=len(self._answers),
            admitted=self._admitted,
            duplicates=self._duplicates,
            refused_busy=self._busy,
            cancelled=self._cancelled,
            evicted=self._evicted,
        )


# -- the actor ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteStatistics:
    objects: int
    calls_out: int
    pending_out: int
    answers_in: int
    failures_in: int
    timeouts: int
    links_lost: int
    calls_in: int
    refused_malformed: int
    refused_names: int
    book: CallBookStatistics


class _Exposed:
    """A registered object and the dotted names its owner exposed."""

    __slots__ = ("_lengths", "_names", "names", "obj", "tops")

    def __init__(self, obj: object, names: tuple[tuple[str, ...], ...]) -> None:
        self.obj = obj
        self.names = names
        # The exposed names one attribute long, which most are: a path that
        # starts with one of them is allowed, as allows() would say.
        self.tops = frozenset(name[0] for name in names if len(name) == 1)
        self._names = frozenset(names)
        self._lengths = sorted({len(name) for name in names})

    def allows(self, path: tuple[str, ...]) -> bool:
        return any(path[:length] in self._names for length in self._lengths)


@dataclass(slots=True)
class _Running:
    """A call whose awaitable runs in a task of its own."""

    task: Task[None]
    work: Awaitable[Any]
    started: bool = False


class Remote:
    """Registered objects of one node, and proxies to other nodes' objects.

    ``Remote(node)`` adds the call frame kinds to ``node``; make one per node.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.runtime = node.runtime
        settings = node.settings
        self.book = CallBook(
            settings.remote_max_calls,
            settings.remote_max_calls_per_peer,
            settings.remote_result_cache,
        )
        self._objects: dict[str, _Exposed] = {}
        # Calls in flight: call id -> (peer asked, future of the answer, due
        # time, or _NEVER when a timeout scope keeps the deadline).
        self._pending: dict[int, tuple[str, Future[Any], float]] = {}
        self._sweep: Timer | None = None
        self._sweep_due = _NEVER
        self._gates: dict[str, _Gate] = {}
        self._ids = itertools.count(1)
        self._tasks: dict[Key, _Running] = {}
        self._calls_out = self._answers_in = self._failures_in = 0
        self._timeouts = self._links_lost = 0
        self._calls_in = self._malformed = self._refused_names = 0
        self.log = node_logger("remote", node.runtime, node.name)

        node.add_frame_handler(CALL, self._on_call)
        node.add_frame_handler(RESULT, self._on_result)
        node.add_frame_handler(FAILURE, self._on_failure)
        node.add_frame_handler(CANCEL, self._on_cancel)
        node.watch_links(self._on_link_closed)

    def __repr__(self) -> str:
        return (
            f"<Remote {self.node.name} objects={sorted(self._objects)} "
            f"pending={len(self._pending)} running={len(self._tasks)}>"
        )

    # -- owning objects ------------------------------------------------------

    def register(self, name: str, obj: object, *, expose: Iterable[str]) -> None:
        """Make ``obj`` reachable as ``name``, but only through ``expose``.

        ``expose`` lists attribute names, dotted for nested ones
        (``"limits.upper"``). Names with a leading underscore are refused.
        """
        if not _is_name(name, dotted=True):
            raise ConfigError(f"an object name is a dotted identifier, got {name!r}")
        if name in self._objects:
            raise ConfigError(f"an object is already registered as {name!r}")
        names = []
        for entry in expose:
            parts = tuple(entry.split(".")) if isinstance(entry, str) else ()
            if not parts or not all(_is_name(p) for p in parts):
                raise ConfigError(f"cannot expose {entry!r}: not a dotted identifier")
            if any(p.startswith("_") for p in parts):
                raise ConfigError(
                    f"cannot expose {entry!r}: private names stay private"
                )
            if not hasattr(obj, parts[0]):
                raise ConfigError(f"cannot expose {entry!r}: {name} has no {parts[0]}")
            names.append(parts)
        self._objects[name] = _Exposed(obj, tuple(names))

    def unregister(self, name: str) -> None:
        self._objects.pop(name, None)

    # -- calling -------------------------------------------------------------

    async def proxy(
        self, peer: str, name: str, *, timeout: float | None = None
    ) -> Proxy:
        """A proxy to the object ``name`` on ``peer``, after checking it exists.

        Raises :class:`UnknownNameError` if ``peer`` has no such object.
        """
        exposed = await self.request(peer, "describe", name, (), timeout=timeout)
        return Proxy(self, peer, name, (), timeout=timeout, exposed=tuple(exposed))

    async def request(
        self,
        peer: str,
        op: str,
        target: str,
        path: tuple[str, ...],
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and wait for its answer; what proxies use."""
        link = self.node.links.get(peer)
        if link is None:
            raise LinkLostError(f"{self.node.name} has no link to {peer!r}")
        call_id = next(self._ids)
        waiter: Future[Any] = self.runtime.create_future()
        # msgpack writes a tuple as the array a list makes: no copies.
        payload = [call_id, op, target, path, args, kwargs or {}]
        deadline = self.node.settings.call_timeout_s if timeout is None else timeout
        gate = self._gates.get(peer)
        if gate is None:
            gate = self._gates[peer] = _Gate(
                self.node.settings.remote_max_calls_per_peer
            )

        try:
            if not gate.try_enter():
                return await self._queued_call(link, gate, payload, waiter, deadline)
            try:
                # The usual case: the send is stepped by hand and finishes at
                # once, and the sweep (not a timer of its own) keeps the
                # deadline of the answer.
                due = self.runtime.now() + deadline
                if due < self._sweep_due:
                    self._watch(due, deadline)
                item = self._start_call(link, call_id, payload, waiter, due)
                if item is not None:
                    blocked = step(self._send_item(link, item))
                    if blocked is not None:
                        async with self.runtime.timeout(deadline):
                            await blocked
                return await waiter
            finally:
                gate.leave()
        except TimeoutError as exc:
            if isinstance(exc, RemoteError):
                raise
            self._timeouts += 1
            self._cancel_remotely(link, call_id)
            raise RemoteTimeoutError(
                f"{'.'.join((target, *path))} on {peer} did not answer within "
                f"{deadline} s; it was asked to cancel"
            ) from exc
        except self.runtime.cancelled_error:
            # asyncio cancels the awaited future along with the task.
            if waiter.cancelled() or not waiter.done():
                self._cancel_remotely(link, call_id)
            raise
        finally:
            self._pending.pop(call_id, None)

    async def _queued_call(
        self,
        link: Link,
        gate: _Gate,
        payload: list[Any],
        waiter: Future[Any],
        deadline: float,
    ) -> Any:
        """The rest of :meth:`request` for a call that must wait for a slot."""
        # The deadline covers the wait for a slot and the send too.
        async with self.runtime.timeout(deadline):
            await gate.enter(self.runtime)
            try:
                item = self._start_call(link, payload[0], payload, waiter, _NEVER)
                if item is not None:
                    await self._send_item(link, item)
                return await waiter
            finally:
                gate.leave()

    def _start_call(
        self,
        link: Link,
        call_id: int,
        payload: list[Any],
        waiter: Future[Any],
        due: float,
    ) -> bytes | None:
        """Encode a call and send it if the link takes it without waiting.

        Returns None if it did, else the encoded call, for :meth:`_send_item`.
        """
        if link.closed:
            raise LinkLostError(f"link to {link.peer.name} closed before the call")
        # Registered first: the quick send below is the whole send.
        self._pending[call_id] = (link.peer.name, waiter, due)
        if link.send_one_now(CALL, payload) is not None:
            self._calls_out += 1
            return None
        try:
            item = link.protocol.encode_item(CALL, payload)
        except ProtocolError as exc:
            raise ConfigError(f"cannot send call to {link.peer.name}: {exc}") from exc
        self._calls_out += 1
        if link.offer(item) or link.send_now(item):
            return None  # sent, or joined the batch that leaves when the turn ends
        return item

    async def _send_item(self, link: Link, item: bytes) -> None:
        try:
            await link.send_item(item)
        except ProtocolError as exc:
            raise ConfigError(f"cannot send call to {link.peer.name}: {exc}") from exc
        except (BrokenResourceError, ClosedResourceError) as exc:
            raise LinkLostError(f"link to {link.peer.name} broke: {exc}") from exc

    # -- deadlines -----------------------------------------------------------

    def _watch(self, due: float, delay: float) -> None:
        """Make sure the sweep runs by ``due`` (``delay`` from now)."""
        if due < self._sweep_due:
            if self._sweep is not None:
                self._sweep.cancel()
            self._sweep_due = due
            self._sweep = self.runtime.call_later(delay, self._sweep_fired)

    def _sweep_fired(self) -> None:
        """Fail the calls whose deadline passed; wait for the next one.

        One timer serves every call: a call that ends cancels nothing, and
        the sweep, when it runs, looks at the calls still in flight, of
        which the per-peer limits keep few. With a steady stream of calls
        it runs about once per deadline period, where a timer made and
        cancelled per call cost a sixth of a call with many in flight. The
        timer stays armed until the deadline of a call that has long ended,
        at most one deadline period after the last call; it then finds
        nothing to do and is not armed again.
        """
        self._sweep = None
        self._sweep_due = _NEVER
        now = self.runtime.now()
        nearest = _NEVER
        for _peer, waiter, due in list(self._pending.values()):
            if waiter.done():
                continue
            if due <= now + _SLACK:
                waiter.set_exception(TimeoutError())
            elif due < nearest:
                nearest = due
        if nearest < _NEVER:
            self._watch(nearest, nearest - now)

    def _cancel_remotely(self, link: Link, call_id: int) -> None:
        # Spawned, because the caller may be unwinding from its own cancellation
        # and a send can wait for the transport's window.
        async def send() -> None:
            with contextlib.suppress(BrokenResourceError, ClosedResourceError):
                await link.send_reliable(CANCEL, call_id)

        if not link.closed:
            self.runtime.spawn(send(), name=f"cancel-{call_id}")

    def _on_result(self, link: Link, frame: Frame) -> None:
        call_id, value = frame.fields
        pending = self._pending.get(call_id)
        # Only the peer that was asked may answer.
        if pending is None or pending[0] != link.peer.name:
            return
        self._answers_in += 1
        waiter = pending[1]
        if not waiter.done():
            waiter.set_result(value)

    def _on_failure(self, link: Link, frame: Frame) -> None:
        call_id, code, remote_type, message = frame.fields
        pending = self._pending.get(call_id) if type(call_id) is int else None
        if pending is None or pending[0] != link.peer.name:
            self.log.debug("%s refused a call: %s: %s", link.peer.name, code, message)
            return
        self._failures_in += 1
        waiter = pending[1]
        if not waiter.done():
            waiter.set_exception(error_for(code, remote_type, message))

    def _on_link_closed(self, link: Link, reason: str) -> None:
        peer = link.peer.name
        for asked, waiter, _due in list(self._pending.values()):
            if asked == peer and not waiter.done():
                self._links_lost += 1
                waiter.set_exception(
                    LinkLostError(f"link to {peer} closed during the call: {reason}")
                )
        for key in self.book.running_for(link.peer.node_id):
            self._stop(key)

    # -- answering -------------------------------------------------------------

    def _on_call(self, link: Link, frame: Frame) -> None:
        payload = frame.fields[0]
        self._calls_in += 1
        try:
            request = parse_call(payload)
        except MalformedCallError as exc:
            self._malformed += 1
            call_id = call_id_of(payload)
            self._reply(link, call_id, self._failure(call_id, exc))
            return

        key = (link.peer.node_id, request.call_id)
        # Not marked running yet: most calls end here, in the reader (see
        # CallBook.check); _call marks one that goes on in a task.
        admission = self.book.check(key)
        if admission is not _RUN:
            self._not_run(link, key, request, admission)
            return

        if request.op == "call":
            answer = self._call(link, key, request)
        else:
            answer = self._answer_inline(request)
        if answer is not None:
            self.book.remember(key, answer)
            self._reply(link, request.call_id, answer)

    def _not_run(
        self, link: Link, key: Key, request: CallRequest, admission: Admission
    ) -> None:
        """Answer, or ignore, a call that the book did not let run."""
        if admission is Admission.RUNNING:
            return
        if admission is Admission.ANSWERED:
            self._reply(link, request.call_id, self.book.answer(key))
            return
        busy = RemoteBusyError(
            f"{self.node.name} is running its limit of calls "
            f"({self.book.max_running} in all, {self.book.max_per_peer} per "
            "peer); retry later"
        )
        self._reply(link, request.call_id, self._failure(request.call_id, busy))

    def _call(self, link: Link, key: Key, request: CallRequest) -> bytes | None:
        """Call the method; its answer, or None if it was sent or a task awaits it.

        A plain method runs here, in the reader, like an attribute read: a
        task of its own would cost a wake-up of the event loop and would
        still block the loop while it ran. A coroutine method only makes its
        coroutine here; its body runs in a task, which ``CANCEL`` cancels.
        """
        try:
            method = self._resolve(request)
            if not callable(method):
                raise RemoteError(
                    f"{'.'.join(request.path)} is not callable; read it instead",
                    remote_type="TypeError",
                )
            kwargs = request.kwargs
            value = method(*request.args, **kwargs) if kwargs else method(*request.args)
        except RemoteError as exc:
            return self._failure(request.call_id, exc)
        except Exception as exc:
            return self._failed(request, exc)
        except self.runtime.cancelled_error as exc:
            # Raised by the method itself (a cancelled future's result, say):
            # the reader is not being cancelled, so it must not end here.
            return self._failed(request, exc)
        if type(value) in _PLAIN or not inspect.isawaitable(value):
            # The usual answer goes out encoded and numbered in one go.
            item = link.send_one_now(RESULT, request.call_id, value)
            if item is None:
                return self._result(request.call_id, value)
            self.book.remember(key, item)
            return None

        self.book.start(key)
        task = self.runtime.spawn(
            self._await(link.peer.name, key, request),
            name=f"call-{link.peer.name}-{request.call_id}",
        )
        self._tasks[key] = _Running(task, value)
        return None

    async def _await(self, peer: str, key: Key, request: CallRequest) -> None:
        running = self._tasks[key]
        running.started = True
        try:
            value = await running.work
        except RemoteError as exc:
            answer = self._failure(request.call_id, exc)
        except self.runtime.cancelled_error as exc:
            if running.task.cancelling():
                self.book.cancel(key)
                raise
            # Raised by the method of its own accord: the call failed, and
            # its caller should hear so rather than wait for its deadline.
            answer = self._failed(request, exc)
        except Exception as exc:
            answer = self._failed(request, exc)
        else:
            answer = self._result(request.call_id, value)
        finally:
            self._tasks.pop(key, None)
        self.book.finish(key, answer)

        link = self.node.links.get(peer)
        if link is not None and link.peer.node_id == key[0]:
            await self._send(link, request.call_id, answer)

    def _stop(self, key: Key) -> None:
        """Cancel a call running in a task, also one whose task has not started."""
        running = self._tasks.get(key)
        if running is None:
            return
        running.task.cancel()
        if not running.started:
            # A task cancelled before its first step never enters its body,
            # so the bookkeeping that the body would do is done here.
            del self._tasks[key]
            self.book.cancel(key)
            close = getattr(running.work, "close", None)
            if close is not None:
                close()  # a coroutine that never ran; nothing to warn about

    def _failed(self, request: CallRequest, exc: BaseException) -> bytes:
        self.log.debug(
            "call %s.%s raised %s: %s",
            request.target,
            ".".join(request.path),
            type(exc).__name__,
            exc,
        )
        return self._failure(request.call_id, _as_remote(exc))

    def _answer_inline(self, request: CallRequest) -> bytes:
        try:
            if request.op == "describe":
                value: Any = self._describe(request.target)
            else:
                value = self._resolve(request)
        except RemoteError as exc:
            return self._failure(request.call_id, exc)
        except Exception as exc:  # a property getter of the owner's raised
            return self._failure(request.call_id, _as_remote(exc))
        return self._result(request.call_id, value)

    def _describe(self, target: str) -> list[str]:
        exposed = self._objects.get(target)
        if exposed is None:
            raise UnknownNameError(f"{self.node.name} has no object named {target!r}")
        return [".".join(name) for name in exposed.names]

    def _resolve(self, request: CallRequest) -> Any:
        path = request.path
        exposed = self._objects.get(request.target)
        if exposed is None:
            self._refused_names += 1
            raise UnknownNameError(
                f"{self.node.name} has no object named {request.target!r}"
            )
        for name in path:
            if name[0] == "_":
                self._refused_names += 1
                raise RefusedNameError(
                    f"{_dotted(request)}: names starting with '_' are private"
                )
        if path[0] not in exposed.tops and not exposed.allows(path):
            self._refused_names += 1
            raise RefusedNameError(
                f"{_dotted(request)} is not exposed by {self.node.name}"
            )

        value = exposed.obj
        for name in path:
            try:
                value = getattr(value, name)
            except AttributeError:
                self._refused_names += 1
                raise UnknownNameError(
                    f"{_dotted(request)}: no attribute {name!r}"
                ) from None
        return value

    def _result(self, call_id: int, value: Any) -> bytes:
        try:
            return self._encode(RESULT, call_id, value)
        except ProtocolError as exc:
            error = RemoteError(str(exc), remote_type="TypeError", code="unencodable")
            return self._failure(call_id, error)

    def _failure(self, call_id: int | None, error: RemoteError) -> bytes:
        remote_type = error.remote_type or type(error).__name__
        return self._encode(
            FAILURE, call_id, error.code, remote_type, error.remote_message[:1000]
        )

    def _encode(self, kind: int, *fields: Any) -> bytes:
        # An item, as numbered frames carry them (no frame header of its own).
        return encode_payload(
            [kind, *fields], max_frame_size=self.node.settings.max_frame_size
        )

    def _reply(self, link: Link, call_id: int | None, answer: bytes) -> None:
        """Send an answer from the reader, which must never wait to write.

        The send usually finishes at once. If the link makes it wait (its
        send buffer is full, or the connection's window), a task finishes
        it, and the reader goes on reading, which is what frees the room:
        a reader waiting on its own acknowledgements would wait for ever.
        """
        if link.offer(answer) or link.send_now(answer):
            return  # sent, or joined the batch that leaves when the turn ends
        blocked = step(self._send(link, call_id, answer))
        if blocked is not None:
            self.runtime.spawn(finish_later(blocked), name=f"answer-{link.peer.name}")

    async def _send(self, link: Link, call_id: int | None, answer: bytes) -> None:
        try:
            await link.send_item(answer)
        except (BrokenResourceError, ClosedResourceError):
            self.log.debug("answer to %s lost with its link", link.peer.name)
        except ProtocolError as exc:
            # Encodable, but too large for a numbered frame on this link.
            self.log.debug("answer to %s refused by its link: %s", link.peer.name, exc)
            refusal = self._failure(
                call_id,
                RemoteError(str(exc), remote_type="ValueError", code="unencodable"),
            )
            with contextlib.suppress(BrokenResourceError, ClosedResourceError):
                await link.send_item(refusal)

    def _on_cancel(self, link: Link, frame: Frame) -> None:
        self._stop((link.peer.node_id, frame.fields[0]))

    # -- statistics ------------------------------------------------------------

    def statistics(self) -> RemoteStatistics:
        return RemoteStatistics(
            objects=len(self._objects),
            calls_out=self._calls_out,
            pending_out=len(self._pending),
            answers_in=self._answers_in,
            failures_in=self._failures_in,
            timeouts=self._timeouts,
            links_lost=self._links_lost,
            calls_in=self._calls_in,
            refused_malformed=self._malformed,
            refused_names=self._refused_names,
            book=self.book.statistics(),
        )


def _dotted(request: CallRequest) -> str:
    return ".".join((request.target, *request.path))


# The types of plain data, which a method's value is first tested against:
# most methods return one, and only other values are worth asking whether
# they are awaitable.
_PLAIN: Final = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})


def _as_remote(exc: BaseException) -> RemoteError:
    return RemoteError(str(exc), remote_type=type(exc).__name__)


class _Gate:
    """Lets ``size`` calls through at a time; the rest wait in arrival order.

    A slot that is given back goes straight to the longest waiter, so a
    caller arriving later cannot take it first.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[Future[None]] = deque()

    def try_enter(self) -> bool:
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def enter(self, runtime: Runtime) -> None:
        if self.try_enter():
            return
        waiter: Future[None] = runtime.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a slot it will not use: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def leave(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


# Child proxies a proxy keeps (see Proxy.__getattr__); arbitrary, far above
# the names a program's code spells out.
_MAX_KEPT_CHILDREN: Final = 64


class Proxy:
    """A stand-in for an object on another node; see the module essay.

    Reading an attribute gives another proxy, one step further down the
    path. Calling a proxy calls the remote method at its path; awaiting one
    reads the remote attribute at its path. Both return coroutines, so each
    access is an explicit ``await``.
    """

    def __init__(
        self,
        remote: Remote,
        peer: str,
        target: str,
        path: tuple[str, ...],
        *,
        timeout: float | None,
        exposed: tuple[str, ...],
    ) -> None:
        self._remote = remote
        self._peer = peer
        self._target = target
        self._path = path
        self._timeout = timeout
        self._exposed = exposed

    def __repr__(self) -> str:
        where = ".".join((self._target, *self._path))
        return f"<Proxy {where} on {self._peer} exposes={list(self._exposed)}>"

    def __getattr__(self, name: str) -> Proxy:
        # Python looks up dunders and private names on the class, and code
        # probing for them (copy, pickle, inspect) must not get a proxy.
        if name.startswith("_"):
            raise AttributeError(name)
        child = Proxy(
            self._remote,
            self._peer,
            self._target,
            (*self._path, name),
            timeout=self._timeout,
            exposed=self._exposed,
        )
        # Kept on the instance, so the next ``proxy.name`` is a plain lookup
        # (Python calls __getattr__ only when that fails). Bounded, for code
        # that makes up names as it goes.
        if len(self.__dict__) < _MAX_KEPT_CHILDREN:
            self.__dict__[name] = child
        return child

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return self._remote.request(
            self._peer,
            "call",
            self._target,
            self._path,
            args=args,
            kwargs=kwargs,
            timeout=self._timeout,
        )

    def __await__(self) -> Generator[Any, None, Any]:
        if not self._path:
            raise ConfigError(
                f"await an attribute of {self._target}, not the proxy itself"
            )
        read = self._remote.request(
            self._peer, "get", self._target, self._path, timeout=self._timeout
        )
        return read.__await__()

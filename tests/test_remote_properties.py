"""Properties of the remote-call machinery, without a network."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chaski_actors.errors import MalformedCallError
from chaski_actors.remote import (
    Admission,
    CallBook,
    CallRequest,
    call_id_of,
    error_for,
    parse_call,
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@given(values)
def test_any_payload_is_parsed_or_refused_as_malformed(payload: Any) -> None:
    try:
        request = parse_call(payload)
    except MalformedCallError as exc:
        assert str(exc)
        return
    assert isinstance(request, CallRequest)


requests = st.tuples(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.sampled_from(["call", "get"]),
    names,
    st.lists(names, min_size=1, max_size=16),
    st.lists(values, max_size=4),
    st.dictionaries(names, values, max_size=4),
)


@given(requests)
def test_well_formed_requests_are_read_back(
    fields: tuple[int, str, str, list[str], list[Any], dict[str, Any]],
) -> None:
    call_id, op, target, path, args, kwargs = fields
    request = parse_call(list(fields))
    assert request == CallRequest(call_id, op, target, tuple(path), tuple(args), kwargs)
    assert call_id_of(list(fields)) == call_id


@given(values)
def test_mutating_one_field_of_a_good_request_never_crashes(garbage: Any) -> None:
    good = [1, "call", "obj", ["method"], [], {}]
    for index in range(len(good)):
        payload = list(good)
        payload[index] = garbage
        with contextlib.suppress(MalformedCallError):
            parse_call(payload)


@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=50))
def test_failure_frames_always_become_remote_errors(
    code: str, remote_type: str, message: str
) -> None:
    error = error_for(code, remote_type, message)
    assert error.remote_message == message
    assert error.code == code


class CallBookMachine(RuleBasedStateMachine):
    """Calls arrive, repeat, finish and are cancelled in any order.

    Whatever the order, a call starts at most once while the book remembers
    it, and the limits hold.
    """

    def __init__(self) -> None:
        super().__init__()
        self.book = CallBook(max_running=4, max_per_peer=2, cache_size=3)
        self.started: dict[tuple[str, int], int] = {}
        self.running: set[tuple[str, int]] = set()
        self.answered: dict[tuple[str, int], bytes] = {}

    keys = st.tuples(st.sampled_from(["p", "q", "r"]), st.integers(0, 5))

    @rule(key=keys)
    def arrive(self, key: tuple[str, int]) -> None:
        remembered = key in self.running or self.book_remembers(key)
        admission = self.book.admit(key)
        if admission is Admission.RUN:
            assert not remembered
            self.started[key] = self.started.get(key, 0) + 1
            self.running.add(key)
        elif admission is Admission.RUNNING:
            assert key in self.running
        elif admission is Admission.ANSWERED:
            assert self.book.answer(key) == self.answered[key]

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        if not self.running:
            return
        key = data.draw(st.sampled_from(sorted(self.running)))
        answer = repr(key).encode()
        self.book.finish(key, answer)
        self.running.discard(key)
        self.answered[key] = answer

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.running:
            return
        key = data.draw(st.sampled_from(sorted(self.running)))
        self.book.cancel(key)
        self.running.discard(key)

    def book_remembers(self, key: tuple[str, int]) -> bool:
        try:
            self.book.answer(key)
        except KeyError:
            return False
        return True

    @invariant()
    def limits_hold(self) -> None:
        stats = self.book.statistics()
        assert stats.running == len(self.running) <= 4
        assert stats.remembered <= 3
        for peer in ("p", "q", "r"):
            assert len([k for k in self.running if k[0] == peer]) <= 2


TestCallBook = CallBookMachine.TestCase

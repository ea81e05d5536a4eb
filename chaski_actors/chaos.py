"""The chaos checker: run a scenario under many fault schedules, check delivery.

``chaski-actors chaos SCENARIO --seeds A..B`` simulates the scenario once per
seed. Each seed draws its own fault schedule from the scenario's ``[chaos]``
table (``chaski_actors.faults``), exactly as ``chaski-actors simulate
SCENARIO --seed N`` does, so any failing seed replays on its own.

After each run the checker reads what the scenario's actors recorded (every
publisher puts its name, its life and a sequence number in each payload, see
:mod:`chaski_actors.scenario`) and counts:

``messages``     deliveries expected: each message times each peer it was
                 published to (the peers linked and subscribed at the time);
``lost``         expected deliveries that never happened, except those whose
                 sender crashed after publishing the message, or whose
                 receiver was down then or crashed later: a crash loses the
                 host's state, buffers included, and a restarted host is a
                 new receiver that never asked for the old one's messages;
``duplicated``   a message delivered twice to one life of a receiver;
``reordered``    a message delivered after a later one from the same sender
                 life on the same topic (per-link order);
``unconverged``  neighbours of the topology that are not linked to each other
                 when the run ends, after every fault has healed.

A clean run has zero in each of the last four; the command exits 1 if any of
them is non-zero over all seeds.

Known limits of the checks. The crash excuse is generous: sessions resend
unacknowledged frames to a restarted peer, so a stricter checker could
expect messages to a receiver that crashed later to reach its next life; it
does not yet. Messages meant for peers reached only through propagation
(multi-hop forwarding when ``max_connections`` forbids a direct link) are not
expected anywhere, and pairs linked only that way are not checked for
convergence: the checker looks at direct links only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from .errors import ConfigError
from .scenario import Recorder, load_scenario

__all__ = ["Verdict", "check_delivery", "parse_seeds", "run_chaos"]

# Problems listed per failing seed; the counters carry the rest.
_SHOW = 5


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one run did against the delivery invariants."""

    messages: int
    lost: int
    duplicated: int
    reordered: int
    unconverged: int
    # Undelivered, but sender or receiver crashed after publishing it.
    excused: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.reordered or self.unconverged)

    def counters(self) -> str:
        return (
            f"lost={self.lost} duplicated={self.duplicated} "
            f"reordered={self.reordered} unconverged={self.unconverged}"
        )


# (receiver, source, source life, topic, seq): one message at one host.
_Key = tuple[str, str, int, str, int]
# (receiver, receiver life, source, source life, topic): one ordered flow.
_Flow = tuple[str, int, str, int, str]


def check_delivery(recorder: Recorder) -> Verdict:
    """Check one run's records; see the module essay for the counters."""
    problems: list[str] = []
    delivered: dict[_Key, None] = {}
    seen: dict[_Flow, dict[int, None]] = {}
    highest: dict[_Flow, int] = {}
    duplicated = reordered = 0

    for r in recorder.receipts:
        delivered[r.receiver, r.source, r.source_life, r.topic, r.seq] = None
        flow = (r.receiver, r.life, r.source, r.source_life, r.topic)
        what = f"{r.topic} #{r.seq} from {r.source}/{r.source_life}"
        where = f"{r.receiver}/{r.life} at {r.at:.3f} s"
        earlier = seen.setdefault(flow, {})
        if r.seq in earlier:
            duplicated += 1
            problems.append(f"duplicated: {what} again at {where}")
        elif r.seq < highest.get(flow, -1):
            reordered += 1
            problems.append(f"reordered: {what} after #{highest[flow]} at {where}")
        earlier[r.seq] = None
        highest[flow] = max(r.seq, highest.get(flow, -1))

    messages = lost = excused = 0
    for p in recorder.publications:
        for receiver in p.to:
            messages += 1
            if (receiver, p.source, p.life, p.topic, p.seq) in delivered:
                continue
            if _crashed_since(recorder, p.source, p.at) or _down_since(
                recorder, receiver, p.at
            ):
                excused += 1
                continue
            lost += 1
            problems.append(
                f"lost: {p.topic} #{p.seq} from {p.source}/{p.life} "
                f"(published at {p.at:.3f} s) never reached {receiver}"
            )

    for u, v in recorder.unpaired:
        problems.append(f"unconverged: {u} and {v} are not linked at the end")
    return Verdict(
        messages=messages,
        lost=lost,
        duplicated=duplicated,
        reordered=reordered,
        unconverged=len(recorder.unpaired),
        excused=excused,
        problems=tuple(problems),
    )


def _crashed_since(recorder: Recorder, host: str, since: float) -> bool:
    return any(at >= since for at in recorder.crashes.get(host, ()))


def _down_since(recorder: Recorder, host: str, since: float) -> bool:
    """Whether ``host`` was down at ``since`` or went down after it."""
    restarts = sorted(recorder.restarts.get(host, ()))
    for crash in recorder.crashes.get(host, ()):
        back = next((r for r in restarts if r >= crash), float("inf"))
        if back > since:
            return True
    return False


def parse_seeds(text: str) -> range:
    """``"A..B"`` (both included) or a single ``"N"``."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?", text)
    if match is None:
        raise ConfigError(f"--seeds {text!r}: expected A..B or N, e.g. 1..50")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise ConfigError(f"--seeds {text!r}: the range is empty ({last} < {first})")
    return range(first, last + 1)


@dataclass
class _Totals:
    seeds: int = 0
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    unconverged: int = 0

    def add(self, verdict: Verdict) -> None:
        self.seeds += 1
        self.messages += verdict.messages
        self.lost += verdict.lost
        self.duplicated += verdict.duplicated
        self.reordered += verdict.reordered
        self.unconverged += verdict.unconverged

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.reordered or self.unconverged)

    def __str__(self) -> str:
        return (
            f"seeds={self.seeds} messages={self.messages} lost={self.lost} "
            f"duplicated={self.duplicated} reordered={self.reordered} "
            f"unconverged={self.unconverged}"
        )


def run_chaos(
    path: str, seeds: Sequence[int], out: TextIO, *, workers: int | None = 1
) -> int:
    """Run the checker over ``seeds``; print failures and totals; exit status.

    ``workers`` processes share the seeds (None: one per CPU); the output
    is the same whatever their number.
    """
    from .sim.chaos import check_seeds

    scenario = load_scenario(path)
    if scenario.chaos is None:
        raise ConfigError(
            f"{path}: no [chaos] table, so every seed would run the same faults; "
            "add one (see chaski_actors.faults)"
        )
    totals = _Totals()
    for seed, verdict, faults in check_seeds(scenario, seeds, workers=workers):
        totals.add(verdict)
        if verdict.ok:
            continue
        print(f"seed {seed}: FAILED {verdict.counters()}", file=out)
        print(f"  replay: chaski-actors simulate {path} --seed {seed}", file=out)
        for fault in faults:
            print(f"  fault {fault}", file=out)
        for problem in verdict.problems[:_SHOW]:
            print(f"  {problem}", file=out)
        if len(verdict.problems) > _SHOW:
            print(f"  ... and {len(verdict.problems) - _SHOW} more", file=out)
        out.flush()
    print(totals, file=out)
    return 0 if totals.ok else 1

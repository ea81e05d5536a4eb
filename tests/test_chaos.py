"""Fault files, random fault schedules and the chaos checker."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from random import Random
from typing import Any

import pytest

from chaski_actors import ConfigError
from chaski_actors.chaos import check_delivery, parse_seeds, run_chaos
from chaski_actors.cli import main as cli_main
from chaski_actors.faults import (
    ChaosSpec,
    Fault,
    generate_schedule,
    parse_chaos,
    parse_faults,
)
from chaski_actors.scenario import (
    Publication,
    Receipt,
    Recorder,
    load_scenario,
    parse_scenario,
)
from chaski_actors.sim.scenario import scenario_faults, simulate

ROOT = Path(__file__).resolve().parent.parent
MESH = ROOT / "scenarios" / "chaos_mesh.toml"

# -- the [[faults]] array ------------------------------------------------------


def test_a_fault_list_is_read_in_time_order() -> None:
    raw = [
        {"at_s": 9, "kind": "crash", "host": 2, "duration_s": 1.5},
        {"at_s": 5.0, "kind": "partition", "hosts": ["0"], "one_way": True},
        {"at_s": 5.0, "kind": "link_down", "link": ["0", "1"]},
        {"at_s": 7, "kind": "degrade", "loss": 0.1, "latency_ms": 40},
        {"at_s": 8, "kind": "heal"},
    ]
    assert parse_faults(raw, "f.toml") == (
        Fault(5.0, "partition", ("0",), one_way=True),
        Fault(5.0, "link_down", link=("0", "1")),
        Fault(7.0, "degrade", loss=0.1, latency_s=0.04),
        Fault(8.0, "heal"),
        Fault(9.0, "crash", ("2",), duration_s=1.5),
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"at_s": 1, "kind": "flood"}, "faults[0].kind = 'flood': expected one of"),
        ({"kind": "heal"}, "faults[0].at_s is missing"),
        ({"at_s": -1, "kind": "heal"}, "faults[0].at_s = -1: expected >= 0"),
        ({"at_s": 1, "kind": "crash"}, "faults[0].host = '<missing>': expected a"),
        (
            {"at_s": 1, "kind": "link_down", "link": ["0"]},
            "faults[0].link = ['0']: expected a list of 2 host names",
        ),
        ({"at_s": 1, "kind": "partition"}, "faults[0].hosts = '<missing>'"),
        ({"at_s": 1, "kind": "degrade"}, "faults[0] changes nothing"),
        (
            {"at_s": 1, "kind": "degrade", "loss": 1.0},
            "faults[0].loss = 1.0: expected a number in [0, 1)",
        ),
        (
            {"at_s": 1, "kind": "restart", "host": "1", "duration_s": 2},
            "unknown key(s) faults[0].duration_s",
        ),
        (
            {"at_s": 1, "kind": "crash", "host": "1", "duration_s": 0},
            "faults[0].duration_s = 0: expected a positive number",
        ),
        (
            {"at_s": 1, "kind": "heal", "one_way": "yes"},
            "faults[0].one_way = 'yes': expected true or false",
        ),
    ],
)
def test_bad_faults_name_file_key_and_expectation(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_faults([entry], "f.toml")
    assert str(info.value).startswith("f.toml: ")
    assert message in str(info.value)


def test_faults_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match="faults must be an array"):
        parse_faults({"at_s": 1}, "f.toml")
    with pytest.raises(ConfigError, match=r"faults\[0\] must be a table"):
        parse_faults([1], "f.toml")


def test_faults_print_as_a_readable_line() -> None:
    assert str(Fault(2.5, "partition", ("0", "1"), one_way=True, duration_s=3)) == (
        "at 2.500 s: partition 0,1 -> rest for 3.000 s"
    )
    assert str(Fault(1, "degrade", link=("a", "b"), loss=0.1, latency_s=0.04)) == (
        "at 1.000 s: degrade a-b loss=0.1 latency=40 ms"
    )
    assert str(Fault(4, "crash", ("c",))) == "at 4.000 s: crash c"


# -- the [chaos] table and random schedules -----------------------------------


def test_a_chaos_table_is_read_with_defaults_from_the_duration() -> None:
    spec = parse_chaos({"kinds": ["crash"], "count": 2}, "f.toml", 20.0)
    assert spec == ChaosSpec(kinds=("crash",), count=2, end_s=10.0, heal_by_s=15.0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kinds": ["meteor"]}, "chaos.kinds = ['meteor']: expected a non-empty"),
        ({"count": -1}, "chaos.count = -1: expected an integer >= 0"),
        ({"end_s": 16.0}, "start_s <= end_s < heal_by_s <= scenario.duration_s"),
        ({"heal_by_s": 30.0}, "start_s <= end_s < heal_by_s"),
        ({"min_duration_s": 9, "max_duration_s": 2}, "chaos.min_duration_s"),
        ({"speed": 1}, "unknown key(s) chaos.speed"),
    ],
)
def test_bad_chaos_tables_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_chaos(table, "f.toml", 20.0)
    assert message in str(info.value)


HOSTS = ["0", "1", "2", "3", "4", "5"]
LINKS = [("0", "1"), ("1", "2"), ("2", "3"), ("3", "4"), ("4", "5"), ("5", "0")]


def test_a_schedule_is_a_function_of_the_seed() -> None:
    spec = ChaosSpec(count=5)
    one = generate_schedule(spec, HOSTS, LINKS, Random(7))
    assert one == generate_schedule(spec, HOSTS, LINKS, Random(7))
    assert one != generate_schedule(spec, HOSTS, LINKS, Random(8))


def test_every_random_fault_heals_in_time_and_is_of_an_asked_kind() -> None:
    spec = ChaosSpec(kinds=("partition", "crash"), count=4, start_s=2, end_s=8)
    for seed in range(200):
        for fault in generate_schedule(spec, HOSTS, LINKS, Random(seed)):
            assert fault.kind in ("partition", "crash")
            assert spec.start_s <= fault.at_s <= spec.end_s
            assert fault.heals_at is not None
            assert fault.heals_at <= spec.heal_by_s
            if fault.kind == "partition":
                assert 1 <= len(fault.hosts) <= len(HOSTS) // 2
                assert fault.others is None


def test_one_way_partitions_and_degraded_links_are_drawn_too() -> None:
    spec = ChaosSpec(kinds=("one_way_partition", "degrade", "link_down"), count=30)
    faults = generate_schedule(spec, HOSTS, LINKS, Random(1))
    kinds = {f.kind for f in faults}
    assert kinds == {"partition", "degrade", "link_down"}
    assert all(f.one_way for f in faults if f.kind == "partition")
    for fault in faults:
        if fault.kind == "degrade":
            assert fault.loss is not None and 0 <= fault.loss <= spec.max_loss
            assert fault.link in LINKS


def test_simulate_and_chaos_draw_the_same_schedule_for_a_seed() -> None:
    scenario = load_scenario(MESH)
    assert scenario.chaos is not None
    first = simulate(scenario, seed=11)
    again = simulate(scenario, seed=11)
    assert first.faults == scenario_faults(scenario, 11) == again.faults
    assert len(first.faults) == scenario.chaos.count
    assert first.trace_digest == again.trace_digest
    assert scenario_faults(scenario, 12) != first.faults


def test_a_chaos_seed_replays_in_another_process_whatever_the_hash_seed() -> None:
    def digest(hashseed: str) -> str:
        command = ["chaski_actors.cli", "simulate", str(MESH), "--seed", "3"]
        result = subprocess.run(
            [sys.executable, "-m", *command],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": hashseed},
            timeout=300,
            check=True,
        )
        match = re.search(r"^trace-digest: ([0-9a-f]{64})$", result.stdout, re.M)
        assert match, result.stdout
        return match.group(1)

    assert (
        digest("0")
        == digest("4242")
        == simulate(load_scenario(MESH), seed=3).trace_digest
    )


def test_a_scenario_file_carries_its_faults() -> None:
    data = {
        "scenario": {"duration_s": 10.0},
        "topology": {"generator": "path_graph", "params": {"n": 3}},
        "faults": [{"at_s": 2, "kind": "crash", "host": "1", "duration_s": 1}],
        "chaos": {"count": 1},
    }
    scenario = parse_scenario(data)
    assert scenario.faults == (Fault(2.0, "crash", ("1",), duration_s=1.0),)
    assert scenario.chaos == ChaosSpec(count=1, end_s=5.0, heal_by_s=7.5)


# -- the checker ---------------------------------------------------------------


def _published(source: str, seq: int, at: float, *to: str) -> Publication:
    return Publication(source, 0, "t", seq, at, to)


def _received(receiver: str, source: str, seq: int, *, life: int = 0) -> Receipt:
    return Receipt(receiver, life, source, 0, "t", seq, 0.0)


def test_a_clean_record_passes() -> None:
    recorder = Recorder()
    for seq in range(3):
        recorder.publications.append(_published("a", seq, seq, "b", "c"))
        recorder.receipts += [_received("b", "a", seq), _received("c", "a", seq)]
    verdict = check_delivery(recorder)
    assert verdict.ok
    assert (verdict.messages, verdict.counters()) == (
        6,
        "lost=0 duplicated=0 reordered=0 unconverged=0",
    )


def test_the_checker_finds_loss_duplicates_reordering_and_missing_links() -> None:
    recorder = Recorder()
    for seq in range(4):
        recorder.publications.append(_published("a", seq, seq, "b"))
    recorder.receipts += [
        _received("b", "a", 0),
        _received("b", "a", 2),
        _received("b", "a", 1),  # overtaken by 2
        _received("b", "a", 2),  # twice
    ]
    recorder.unpaired = [("a", "c")]
    verdict = check_delivery(recorder)
    assert not verdict.ok
    assert verdict.counters() == "lost=1 duplicated=1 reordered=1 unconverged=1"
    assert verdict.problems == (
        "reordered: t #1 from a/0 after #2 at b/0 at 0.000 s",
        "duplicated: t #2 from a/0 again at b/0 at 0.000 s",
        "lost: t #3 from a/0 (published at 3.000 s) never reached b",
        "unconverged: a and c are not linked at the end",
    )


def test_a_crash_excuses_what_died_with_the_host() -> None:
    recorder = Recorder()
    recorder.publications += [
        _published("a", 0, 1.0, "b"),  # b crashes later: excused
        _published("a", 1, 5.0, "b"),  # b is down: excused
        _published("a", 2, 8.0, "b"),  # b is back: must arrive
        _published("c", 0, 1.0, "d"),  # its sender crashes later: excused
    ]
    recorder.crashes = {"b": [4.0], "c": [2.0]}
    recorder.restarts = {"b": [6.0]}
    verdict = check_delivery(recorder)
    assert (verdict.messages, verdict.lost, verdict.excused) == (4, 1, 3)


def test_a_restarted_receiver_may_see_a_message_again() -> None:
    # Each life of a host is a new receiver: a resend to it is no duplicate.
    recorder = Recorder()
    recorder.publications.append(_published("a", 0, 0.0, "b"))
    recorder.receipts += [_received("b", "a", 0), _received("b", "a", 0, life=1)]
    assert check_delivery(recorder).ok


@pytest.mark.parametrize(
    ("text", "seeds"), [("1..50", range(1, 51)), ("7", range(7, 8)), ("3..3", [3])]
)
def test_seed_ranges(text: str, seeds: Any) -> None:
    assert list(parse_seeds(text)) == list(seeds)


@pytest.mark.parametrize("text", ["5..1", "a..b", "1-5", ""])
def test_bad_seed_ranges_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds(text)


def test_the_command_refuses_a_scenario_without_chaos(
    capsys: pytest.CaptureFixture[str],
) -> None:
    star = str(ROOT / "scenarios" / "star.toml")
    assert cli_main(["chaos", star, "--seeds", "1..2"]) == 2
    assert "no [chaos] table" in capsys.readouterr().err


def test_a_failing_seed_is_reported_with_how_to_replay_it(tmp_path: Path) -> None:
    # Host 2 crashes for good: what it would have received is excused, but
    # its neighbour stays unlinked, and that is a failure to report.
    scenario = tmp_path / "cut.toml"
    scenario.write_text(
        """
[scenario]
duration_s = 4.0
drain_s = 1.0
[topology]
generator = "path_graph"
params = { n = 3 }
[[roles]]
hosts = "all"
subscribe = ["t"]
publish = [{ topic = "t", rate_hz = 5.0, size_bytes = 8 }]
[[faults]]
at_s = 1.0
kind = "crash"
host = "2"
[chaos]
kinds = ["degrade"]
count = 1
start_s = 1.0
end_s = 2.0
heal_by_s = 3.0
"""
    )
    out = io.StringIO()
    assert run_chaos(str(scenario), range(1, 3), out) == 1
    text = out.getvalue()
    assert f"replay: chaski-actors simulate {scenario} --seed 1" in text
    assert "fault at 1.000 s: crash 2" in text
    assert "unconverged: 1 and 2 are not linked at the end" in text
    last = text.splitlines()[-1]
    assert re.fullmatch(
        r"seeds=2 messages=\d+ lost=0 duplicated=0 reordered=0 unconverged=[1-9]\d*",
        last,
    )


def test_a_restarted_host_plays_its_role_again(tmp_path: Path) -> None:
    scenario = tmp_path / "restart.toml"
    scenario.write_text(
        """
[scenario]
duration_s = 5.0
drain_s = 1.0
[topology]
generator = "path_graph"
params = { n = 3 }
[[roles]]
hosts = "all"
subscribe = ["t"]
publish = [{ topic = "t", rate_hz = 5.0, size_bytes = 8 }]
[[faults]]
at_s = 1.0
kind = "crash"
host = "1"
duration_s = 1.0
"""
    )
    report = simulate(load_scenario(scenario))
    recorder = report.recorder
    assert (recorder.crashes, recorder.restarts) == ({"1": [1.0]}, {"1": [2.0]})
    lives = {p.life for p in recorder.publications if p.source == "1"}
    assert lives == {0, 1}
    assert any(r.receiver == "1" and r.life == 1 for r in recorder.receipts)
    verdict = check_delivery(recorder)
    assert (verdict.duplicated, verdict.reordered, verdict.unconverged) == (0, 0, 0)


# -- the CI-sized chaos run ------------------------------------------------------


def test_fifty_seeds_of_chaos_lose_nothing_and_keep_order() -> None:
    # Partitions both ways and one way, links down, crashes and restarts,
    # loss and latency bursts: every seed must deliver each message once, in
    # order, and have every link back once the faults heal.
    out = io.StringIO()
    status = run_chaos(str(MESH), range(1, 51), out, workers=1)
    last = out.getvalue().splitlines()[-1]
    assert status == 0, out.getvalue()
    match = re.fullmatch(
        r"seeds=50 messages=(\d+) lost=0 duplicated=0 reordered=0 unconverged=0",
        last,
    )
    assert match, out.getvalue()
    assert int(match.group(1)) > 40_000
    crashes = sum(
        any(f.kind == "crash" for f in scenario_faults(load_scenario(MESH), seed))
        for seed in range(1, 51)
    )
    assert crashes >= 20  # the run did restart hosts


@pytest.mark.parametrize("seed", [109, 225, 279])
def test_seeds_that_found_bugs_in_1000_seed_runs_stay_clean(seed: int) -> None:
    # 109: a peer cut off while 2 restarted never heard of 2's new life;
    # 225: news of a peer that came while a dial to it was failing was
    # dropped; 279: crossed dials left no connection. Each bug has its own
    # test in test_links.py. Later changes reshuffle the random draws, so
    # these seeds may stop meeting those bugs; a failure here is a new one.
    out = io.StringIO()
    status = run_chaos(str(MESH), [seed], out, workers=1)
    assert status == 0, out.getvalue()


def test_a_clean_run_prints_only_the_totals_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "calm.toml"
    scenario.write_text(
        """
[scenario]
duration_s = 8.0
drain_s = 3.0
[topology]
generator = "cycle_graph"
params = { n = 4 }
[[roles]]
hosts = "all"
subscribe = ["t"]
publish = [{ topic = "t", rate_hz = 4.0, size_bytes = 8 }]
[chaos]
kinds = ["partition", "one_way_partition", "degrade"]
count = 2
start_s = 1.0
end_s = 3.0
heal_by_s = 4.0
[settings]
keepalive_interval_s = 0.5
dead_after_s = 2.0
"""
    )
    assert cli_main(["chaos", str(scenario), "--seeds", "1..3", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        r"seeds=3 messages=[1-9]\d* lost=0 duplicated=0 reordered=0 unconverged=0",
        lines[0],
    )


def test_the_output_does_not_depend_on_the_number_of_processes() -> None:
    alone, shared = io.StringIO(), io.StringIO()
    status = run_chaos(str(MESH), range(1, 5), alone, workers=1)
    assert run_chaos(str(MESH), range(1, 5), shared, workers=2) == status
    assert alone.getvalue() == shared.getvalue()
    assert alone.getvalue().splitlines()[-1].startswith("seeds=4 messages=")


def test_chaos_keeps_the_faults_own_warnings_quiet_unless_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In seed 2 of chaos_mesh a dial is reset during its handshake, which
    # the dialler logs as a warning: expected under chaos, noise in its output.
    argv = ["chaos", str(MESH), "--seeds", "2..2", "--workers", "1"]
    assert cli_main(argv) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    assert quiet.out.startswith("seeds=1 ")

    assert cli_main(["--log-level", "WARNING", *argv]) == 0
    loud = capsys.readouterr()
    assert "WARNING handshake with" in loud.err
    assert loud.out == quiet.out

"""Every scenario file runs; reports keep their schema; plots are drawn."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import pytest

from chaski_actors.cli import main
from chaski_actors.commands import ProgressBar
from chaski_actors.errors import ConfigError
from chaski_actors.report import (
    ReportError,
    check_report,
    format_summary,
    load_report,
)
from chaski_actors.scenario import (
    Scenario,
    build_graph,
    load_scenario,
    parse_scenario,
)
from chaski_actors.sim.scenario import sim_report, simulate

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _short(path: Path, duration_s: float = 3.0) -> Scenario:
    scenario = load_scenario(path)
    return dataclasses.replace(scenario, duration_s=duration_s, drain_s=1.0)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_scenario_runs_and_reports(path: Path) -> None:
    scenario = load_scenario(path)
    short = dataclasses.replace(
        scenario, duration_s=min(scenario.duration_s, 3.0), drain_s=1.0
    )
    report = sim_report(short, simulate(short))

    check_report(json.loads(json.dumps(report)))
    assert report["convergence"]["initial_s"] is not None
    for name, topic in report["topics"].items():
        assert topic["delivered"] > 0, name
        assert topic["latency_ms"]["p50_ms"] > 0
    edges = [row for row in report["links"] if row["edge"]]
    assert report["edges"] == len(edges) // 2


def test_at_least_five_scenarios_ship() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"star", "ring", "wide_area", "datacentre", "flaky_edge"} <= names


def test_distance_gives_latency_on_the_wide_area_map() -> None:
    graph = build_graph(load_scenario(ROOT / "scenarios" / "wide_area.toml"))

    for u, v, attrs in graph.edges(data=True):
        distance = math.dist(graph.nodes[u]["pos"], graph.nodes[v]["pos"])
        assert attrs["latency"] == pytest.approx(0.002 + 0.1 * distance)


def test_graph_file_edges_in_people_units() -> None:
    graph = build_graph(load_scenario(ROOT / "scenarios" / "datacentre.toml"))
    attrs = graph.edges["core", "tor1"]
    assert attrs["latency"] == pytest.approx(0.00025)
    assert attrs["bandwidth"] == pytest.approx(40e9)
    assert "latency_ms" not in attrs


def _scenario(**tables: object) -> dict[str, object]:
    return {"topology": {"generator": "path_graph", "params": {"n": 2}}, **tables}


def test_calls_need_a_serving_host() -> None:
    data = _scenario(
        roles=[{"hosts": ["0"], "call": [{"hosts": ["1"], "rate_hz": 2.0}]}]
    )
    scenario = parse_scenario(data, source="s.toml")
    with pytest.raises(ConfigError, match="'1' serves nothing"):
        simulate(scenario)
    data["roles"].append({"hosts": ["1"], "serve": "yes"})  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"roles\[1\]\.serve = 'yes'"):
        parse_scenario(data, source="s.toml")


def test_remote_calls_measure_the_round_trip() -> None:
    data = _scenario(
        roles=[
            {"hosts": ["1"], "serve": True},
            {"hosts": ["0"], "call": [{"name": "q", "hosts": ["1"], "rate_hz": 4.0}]},
        ],
        scenario={"duration_s": 2.0, "drain_s": 1.0},
    )
    data["topology"]["links"] = {"latency_ms": 10.0}  # type: ignore[index]
    scenario = parse_scenario(data, source="s.toml")
    report = sim_report(scenario, simulate(scenario))

    calls = report["topics"]["call:q"]
    assert calls["sent"] == calls["delivered"] == 8
    # Two crossings of a 10 ms link, and nothing else takes virtual time.
    assert calls["latency_ms"]["p50_ms"] == pytest.approx(20.0, abs=0.5)


def test_distance_latency_needs_positions() -> None:
    data = _scenario()
    data["topology"]["links"] = {"latency_per_distance_ms": 10.0}  # type: ignore[index]
    with pytest.raises(ConfigError, match="needs node positions"):
        build_graph(parse_scenario(data, source="s.toml"))


def test_the_schema_names_what_is_wrong() -> None:
    short = _short(ROOT / "scenarios" / "star.toml", 1.0)
    report = sim_report(short, simulate(short))
    broken = json.loads(json.dumps(report))
    broken["topics"]["telemetry"]["latency_ms"]["p99_ms"] = "slow"
    with pytest.raises(ReportError, match=r"report\.topics\.telemetry\.latency_ms"):
        check_report(broken)
    del broken["links"]
    with pytest.raises(ReportError, match=r"missing \['links'\]"):
        check_report(broken)
    assert "telemetry" in format_summary(report)


def test_simulate_out_writes_report_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    star = ROOT / "scenarios" / "flaky_edge.toml"
    code = main(["simulate", str(star), "--duration", "2", "--out", str(tmp_path)])

    assert code == 0
    out = capsys.readouterr()
    assert out.out.strip().splitlines()[-1].startswith("trace-digest: ")
    # Not a terminal: no progress bar.
    assert out.err == ""
    report = load_report(tmp_path)
    assert report["backend"] == "sim"
    for name in ("latency_cdf.png", "latency_timeline.png", "topology.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_a_sweep_summarises_the_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = ROOT / "scenarios" / "ring.toml"
    args = ["simulate", str(ring), "--duration", "1", "--seeds", "1..3"]
    code = main([*args, "--workers", "2", "--out", str(tmp_path)])

    assert code == 0
    out = capsys.readouterr().out
    assert "3 seeds, 1..3" in out
    assert "state p99_ms" in out
    assert "3 distinct traces over 3 seeds" in out
    seeds = json.loads((tmp_path / "sweep.json").read_text())
    assert [s["seed"] for s in seeds] == [1, 2, 3]


def test_bad_seed_ranges_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    ring = str(ROOT / "scenarios" / "ring.toml")
    assert main(["simulate", ring, "--seeds", "3..x"]) == 2
    assert "--seeds '3..x'" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = ProgressBar(stream, "simulating star")
        for now in (0.0, 16.0, 32.0):
            bar(now, 32.0)
        bar.close()

    assert pipe.getvalue() == ""
    frames = terminal.getvalue().split("\r")[1:]
    assert frames[1] == f"simulating star [{'#' * 15}{'.' * 15}]    16.0 / 32.0 s"
    assert frames[-1] == f"simulating star [{'#' * 30}]    32.0 / 32.0 s\n"

"""The benchmark harness runs end to end in a tiny configuration.

Nothing here is timed or compared: the point is that ``bench/run.py`` keeps
working as the code it measures changes, so that the figures in the README
can always be produced again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import pubsub, rpc
from bench.run import TINY, run, write


def test_tiny_run_measures_every_group(tmp_path: Path) -> None:
    lines: list[str] = []
    results = run(TINY, log=lines.append)
    write(results, tmp_path)

    failed = [line for line in lines if "FAILED" in line]
    assert not failed, failed
    measured = {(f.group, f.subject) for f in results.figures}
    assert {("pubsub", "chaski"), ("pubsub", "asyncio")} <= measured
    assert ("rpc", "asyncio") in measured
    assert {("sim", "chaski"), ("sim", "simpy"), ("memory", "chaski")} <= measured
    for figure in results.figures:
        assert len(figure.samples) == TINY.rounds or figure.group in ("memory", "sim")
        assert all(value > 0 for value in figure.samples), figure

    # A peer that is not installed is reported as not measured, never dropped.
    for subject in ("pyzmq",):
        why = pubsub.available(subject)
        assert (why is None) == (("pubsub", subject) in measured)
        assert why is None or why in results.missing
    why = rpc.available("pyro5")
    assert (why is None) == (("rpc", "pyro5") in measured)
    # The original Chaski likewise; the suite's own install has it not.
    for group, module in (("pubsub", pubsub), ("rpc", rpc)):
        why = module.available(module.ORIGINAL)
        assert (why is None) == ((group, module.ORIGINAL) in measured)
        assert why is None or why in results.missing
    # Its chaski.remote patches asyncio when imported: only its workers may.
    assert "nest_asyncio" not in sys.modules


def test_results_are_written_as_json_and_markdown(tmp_path: Path) -> None:
    results = run(TINY, groups=("sim",), log=lambda _line: None)
    write(results, tmp_path)

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["profile"] == "tiny"
    figure = data["figures"][0]
    assert figure["min"] <= figure["median"] <= figure["max"]
    ratios = [r for r in data["ratios"] if r["peer"] == "simpy"]
    assert ratios and all(r["value"] > 0 for r in ratios)
    table = (tmp_path / "RESULTS.md").read_text()
    assert "| sim | N=10 | chaski | delivered msg/s |" in table
    assert "| sim | N=10 | delivered msg/s | simpy |" in table

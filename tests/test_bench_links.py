"""The link figures' tables are made from the results file the docs show."""

from __future__ import annotations

import json

from bench.bench_links import RESULTS, TABLES, render_markdown


def test_committed_tables_match_the_committed_results() -> None:
    # RESULTS_links.md is what the README links to; it must say what the
    # JSON beside it says, not what an older run said.
    assert TABLES.read_text() == render_markdown(json.loads(RESULTS.read_text()))


def test_tables_show_every_size_and_setting() -> None:
    results = json.loads(RESULTS.read_text())
    table = render_markdown(results)
    for row in results["convergence"]:
        assert f"| {row['n']:,} | {row['pairs']:,} |" in table
    settings = {
        (r["keepalive_interval_s"], round(r["dead_after_s"], 6), r["partition"])
        for r in results["detection"]
    }
    for keepalive, dead_after, partition in settings:
        assert f"| {keepalive:g} | {dead_after:g} | {partition} |" in table
